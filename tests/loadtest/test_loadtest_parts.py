"""The load test's parts that can be checked without a stack: the traffic profile, the percentile
and wrk parsing, the lag verdict, the probe events and the peers' shared ATP logic."""

from __future__ import annotations

import pytest

from core.config import load_settings
from loadtest.bench.peer_logic import AtpLogic
from loadtest.load.api import parse_wrk
from loadtest.load.config import Phase
from loadtest.load.report import bounded
from loadtest.workload.generator import LagPoint, Offered
from loadtest.workload.probes import ProbeSource, percentiles, probe_keys
from loadtest.workload.profile import PeakProfile
from projection.codec import hash_fields
from schemas import Encoder, default_store
from state.events import kafka_key, warehouse_event
from tests.builders import wms


def test_the_peak_profile_ramps_holds_and_decays_and_its_integral_paces_the_generator():
    p = PeakProfile(base_rate=1000, peak_factor=10, warmup_s=10, ramp_s=20, hold_s=30, decay_s=20, cooldown_s=10)
    assert p.duration_s == 90 and p.peak_rate == 10_000
    assert [p.rate_at(t) for t in (0, 9.9, 10, 20, 30, 59, 60, 70, 85)] == pytest.approx(
        [1000, 1000, 1000, 5500, 10_000, 10_000, 10_000, 5500, 1000])
    assert p.rate_at(-1) == p.rate_at(90) == 0
    # The integral is the area under the shape: 10k + 110k + 300k + 110k + 10k.
    assert p.total_events == 540_000
    assert p.due_by(10) == pytest.approx(10_000) and p.due_by(30) == pytest.approx(120_000)
    step = [p.due_by(t / 10) for t in range(0, 901)]
    assert all(b >= a for a, b in zip(step, step[1:]))  # never asks to take events back
    assert [p.phase_at(t) for t in (5, 15, 45, 65, 85, 95)] == ["warmup", "ramp", "hold", "decay", "cooldown", "after"]
    with pytest.raises(ValueError):
        PeakProfile(base_rate=0)
    with pytest.raises(ValueError):
        PeakProfile(hold_s=-1)


def test_percentiles_are_nearest_rank_and_empty_gives_none():
    assert percentiles(list(range(1, 101))) == {"p50": 50, "p95": 95, "p99": 99}
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}


WRK = """Running 8s test @ http://127.0.0.1:58355
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    15.19ms    5.12ms  60.00ms   90.00%
    Req/Sec     1.95k   200.00     2.10k    80.00%
  Latency Distribution
     50%  812.00us
     75%   17.11ms
     90%   20.59ms
     99%    1.20s
  15560 requests in 8.00s, 10.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   1945.00
Transfer/sec:      1.25MB
"""


def test_wrk_output_is_parsed_with_units_and_errors():
    r = parse_wrk("single", WRK, 5000.0, 32, 8)
    assert r.requests == 15560 and r.rps == 1945.0
    assert r.latency_ms == {"p50": 0.812, "p75": 17.11, "p90": 20.59, "p99": 1200.0}
    assert r.errors == 8  # 3 socket errors + 5 non-2xx
    with pytest.raises(ValueError):
        parse_wrk("broken", "wrk: connection refused", None, 1, 1)


def test_a_paced_run_waits_less_by_the_latency_its_calibration_run_measured():
    from loadtest.load.api import paced_delay_ms

    # 32 connections at 6.4 ms each offer 5,000/s only without latency; 3,473/s achieved means a
    # cycle of 9.21 ms, so 2.81 ms of latency comes off the delay.
    assert round(paced_delay_ms(32, 5000, 6.4, 3473), 2) == 3.59
    assert paced_delay_ms(32, 5000, 6.4, 1000) == 0.0  # latency above the whole budget: as fast as it goes
    assert paced_delay_ms(32, 5000, 6.4, 5000) == 6.4 and paced_delay_ms(32, 5000, 6.4, 0) == 6.4


def _step(rate: float, lags: list[int], offered_rate: float | None = None) -> Phase:
    off = Offered(sent=int((offered_rate or rate) * len(lags)), seconds=float(len(lags)))
    return Phase(f"step-{rate:.0f}", rate, 0.0, 1.0, off, [LagPoint(float(t), lag, 0) for t, lag in enumerate(lags)])


def test_the_lag_verdict_needs_the_rate_offered_a_small_backlog_and_no_growth():
    assert bounded(_step(1000, [0, 300, 100, 250, 80, 200, 120, 90]))
    assert not bounded(_step(1000, [0, 500, 1000, 1500, 2000, 2500, 3000, 3500]))  # grows ~500/s
    assert not bounded(_step(1000, [5000, 4900, 5100, 5000, 4950, 5050, 5000, 5000]))  # 5 s behind
    assert not bounded(_step(1000, [0, 10, 0, 10, 0, 10, 0, 10], offered_rate=800))  # the generator fell short
    assert not bounded(_step(1000, [0, 0]))  # too short to tell


def test_probe_events_are_valid_adjustments_on_their_own_keys_round_robin():
    keys = probe_keys("abc", 3, ["DC-01", "DC-02"])
    assert keys == [("PROBE-abc-00", "DC-01"), ("PROBE-abc-01", "DC-02"), ("PROBE-abc-02", "DC-01")]
    src = ProbeSource(keys, "abc")
    sent = [src.next(1_767_225_600_000 + i) for i in range(4)]
    assert [(r["sku"], r["location"]) for _, r in sent] == keys + keys[:1]
    assert len({r["event_id"] for _, r in sent}) == 4
    for alias, rec in sent:
        ev = warehouse_event(rec)
        assert alias == "wms" and ev.event_type == "ADJUST" and ev.qty == 1 and ev.occurred_ms == rec["occurred_at"]


def test_the_peers_logic_validates_routes_transfers_and_folds_like_the_dataflow():
    s = load_settings({})
    logic = AtpLogic(s)
    enc = Encoder(default_store())

    def msg(rec, key=None):
        return (kafka_key(rec["sku"], rec["location"]) if key is None else key).encode(), \
            enc.encode("WarehouseEvent", rec, s.topic_wms)

    _, receipt = wms("RECEIPT", qty=10, t=0)
    _, transfer = wms("TRANSFER_OUT", qty=4, t=1, to_location="DC-02", transfer_id="T1")
    rec, event = logic.check(s.topic_wms, *msg(receipt))
    assert rec is not None and logic.route(event)[0][0] == "SKU-1@DC-01"
    assert logic.parse(s.topic_wms, rec) == event  # what a repartitioned record becomes again
    routed = logic.route(logic.check(s.topic_wms, *msg(transfer))[1])
    assert [k for k, _ in routed] == ["SKU-1@DC-01", "SKU-1@DC-02"]  # the destination learns it is inbound
    assert logic.check(s.topic_wms, *msg(receipt, key="SKU-9@DC-01")) is None  # wrong key
    assert logic.check(s.topic_orders, *msg(receipt)) is None  # wrong topic
    assert logic.check(s.topic_wms, b"SKU-1@DC-01", b"junk") is None
    assert logic.invalid == 3
    st = None
    for _, e in [logic.route(event)[0], routed[0]]:
        st = logic.fold(st, e)
    p = logic.position(st)
    assert (p.available_qty, p.version) == (6, 2)
    dst = logic.position(logic.fold(None, routed[1][1]))
    assert dst.inbound == 4 and dst.location == "DC-02"
    assert hash_fields(p)["available_qty"] == "6" and hash_fields(p)["stockout_eta_minutes"] == ""


def test_the_report_quotes_phases_freshness_targets_and_cpu():
    from loadtest.load.config import LoadConfig
    from loadtest.load.report import build_report, markdown
    from loadtest.workload.probes import Sample

    peak = _step(10_000, [0, 100, 50, 0])
    peak.name, peak.wall_start, peak.wall_end = "peak", 100.0, 200.0
    peak.cores = {"broker": 0.5, "dataflow": 0.9}
    step = _step(5_000, [0, 10_000, 20_000, 30_000, 40_000])  # not bounded
    samples = {"redis": [Sample(150.0, v) for v in (40.0, 60.0, 300.0)], "http": [Sample(150.0, 70.0)]}
    api = [{"name": "single-key_max", "target_rps": None, "connections": 32, "duration_s": 5, "requests": 10,
            "rps": 2000.0, "latency_ms": {"p50": 1.0, "p75": 2.0, "p90": 3.0, "p99": 9.0}, "errors": 0}]
    api.insert(0, {**api[0], "name": "alone_single-key_max", "rps": 12_000.0})
    api.append({**api[0], "name": "alone_100-key_batch_at_200_rps", "target_rps": 200, "rps": 199.0,
                "latency_ms": {"p50": 5.0, "p75": 9.0, "p90": 20.0, "p99": 31.0}})
    r = build_report(LoadConfig(find_max=True, snapshot_s=30), [peak, step], api, samples,
                     [LagPoint(0.0, 0, 0), LagPoint(1.0, 1000, 900)], 0.0, 0.0)
    assert r["phases"][0]["freshness_redis_ms"] == {"samples": 3, "p50": 60.0, "p95": 300.0, "p99": 300.0}
    assert r["phases"][1]["bounded"] is False and r["max_sustainable_rate"] is None
    assert r["timeline"] == [{"t_s": 1.0, "lag": 100, "produced_per_s": 1000, "consumed_per_s": 900}]
    met = {t["target"]: t["met"] for t in r["targets"]}
    assert met == {"freshness p99 <= 250 ms at 10,000 ev/s (peak profile, Redis)": False,
                   "API >= 10,000 single-key reads/s (the API alone)": True,
                   "API 100-key batch p99 <= 25 ms (the API alone; achieved 199/s)": False,
                   "API >= 10,000 single-key reads/s (beside the pipeline)": False}
    text = markdown(r)
    assert "none of the steps was bounded" in text and "| peak | 0.50 | 0.90 |" in text
    assert f"Reproduce: `{r['reproduce']}`" in text and "--snapshot-s 30 " in r["reproduce"]
    assert "recovery on, a snapshot every 30 s)" in text


def test_the_reproduce_line_spells_out_every_option_of_the_run():
    from loadtest.load.config import LoadConfig
    from loadtest.load.report import reproduce
    from loadtest.workload.profile import PeakProfile

    cfg = LoadConfig(profile=PeakProfile(500, 4, 5, 5, 10, 5, 5), find_max=True, step_rates=(2500, 5000),
                     step_s=30, api_s=0)
    assert reproduce(cfg) == ("atp loadtest --base-rate 500 --peak-factor 4 --phases 5,5,10,5,5 --skus 20000 "
                              "--locations 20 --seed 1 --workers 1 --snapshot-s 5 --api-workers 2 --api-s 0 --api-rate 5000 "
                              "--broker tansu --find-max --steps 2500,5000 --step-s 30")
    assert "--find-max" not in reproduce(LoadConfig())


def test_the_memory_verdict_says_met_or_by_how_much_it_missed():
    from loadtest.bench.memory import _verdict

    assert _verdict(1024, 1024) == "met" and _verdict(900, 1024) == "met"
    assert _verdict(1311, 1024) == "missed by 1.28×"


def test_profile_samples_go_to_the_first_step_they_pass_through():
    from collections import Counter

    from loadtest.bench import hotspots as h

    entry = "<module> (loadtest/bench/ladder_stage.py:180);main (loadtest/bench/ladder_stage.py:168);run (loadtest/bench/ladder_stage.py:130)"
    fold = f"{entry};PositionLogic.on_batch (dataflows/logic.py:93);apply (state/fold.py:170)"
    packing = f"{entry};PositionLogic.on_batch (dataflows/logic.py:93);PositionLogic._unpack (dataflows/logic.py:89)"
    stacks = Counter({fold: 6, packing: 2, entry: 1, f"{entry};<lambda> (dataflows/flow.py:70)": 1,
                      "_bootstrap (threading.py:1002);serve (atp/metrics.py:10)": 2,
                      "_bootstrap (threading.py:1002);Trimmer._loop (core/memtrim.py:52);Event.wait (threading.py:622);"
                      "Condition.wait (threading.py:324);PyThread_acquire_lock_timed (libpython3.11.so)": 30})
    assert h.step_of(packing) == "state packing (snapshots, unpacking)"  # inside the fold's call, packing wins
    assert h.step_of(fold) == "the ATP fold" and h.step_of(entry) == h.RUNTIME
    r = h.attribute(stacks, records=100, cpu_s=0.012)  # 120 us per record
    assert r["wait_samples_left_out"] == 30 and r["samples"] == 12  # the trimmer's wait is no CPU
    got = {x["name"]: (x["samples"], x["us_per_record"]) for x in r["steps"]}
    assert got == {"the ATP fold": (6, 60.0), "state packing (snapshots, unpacking)": (2, 20.0), h.RUNTIME: (1, 10.0),
                   h.OTHER: (1, 10.0), h.OUTSIDE: (2, 20.0)}
    assert r["functions"][0] == {"name": "apply (state/fold.py)", "samples": 6, "share": 0.5, "us_per_record": 60.0}


def test_an_empty_profile_is_an_error_not_a_report():
    from collections import Counter

    from loadtest.bench import hotspots as h

    with pytest.raises(ValueError, match="empty"):
        h.attribute(Counter(), records=10, cpu_s=1.0)
