"""`atp generation switch` only to a generation its dataflow runs live and caught up (unless --force,
and never to a point-in-time one), and a switch's retirement that survives a Redis loss: through the
real broker, Redis, `atp run` children and the `atp` command (docs/replay-and-generations.md)."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

import pytest

from dataflows.kafka.producer import EventProducer
from dataflows.runtime.continuity import ReadProgress
from projection.generations import RETIRE_FILE, WAS_CURRENT_FILE, for_generation, live_problem, read_meta
from projection.keys import READY, generations_of, keyspace_of
from sandbox.simulator import Simulator
from sandbox.stack import free_port
from tests.conftest import processed, run_atp, send_events, wait_until

EVENTS = 1500


def _live_default_and_replayed_g2(settings, start, seed: int):
    """``default`` run live over some events, and ``g2`` replayed from the same log (ready, not running)."""
    sim = Simulator(seed=seed, skus=40, locations=3)
    send_events(EventProducer(settings), [sim.next() for _ in range(EVENTS)])
    live = start("run")
    wait_until(lambda: processed(settings) >= EVENTS, 90, "the live dataflow to read the events", live)
    replay = start("replay", "g2", "--metrics-port", "0")
    assert replay.p.wait(120) == 0, replay.tail()
    return live


def _follower(start, settings):
    """``g2``'s own live dataflow (`ATP_GENERATION=g2 atp run`)."""
    return start("run", s=for_generation(settings, "g2").model_copy(update={"metrics_port": free_port()}))


def _pointer(rclient, settings) -> bytes | None:
    return rclient.get(generations_of(settings).pointer)


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) >= 1 and lines[-1].startswith("error: "), result.stderr
    return lines[-1]


@pytest.mark.integration
def test_switch_refuses_a_generation_no_dataflow_runs_and_accepts_it_once_one_runs_caught_up(settings, rclient, start):
    _live_default_and_replayed_g2(settings, start, seed=41)
    refused = run_atp(settings, "generation", "switch", "g2", "--settle", "1")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = _one_error_line(refused)
    assert "generation 'g2' is not running live and caught up (its dataflow is stopped)" in line
    assert "ATP_GENERATION=g2 atp run" in line and "--force" in line
    assert _pointer(rclient, settings) is None  # the API still serves default

    follower = _follower(start, settings)
    accepted = run_atp(settings, "generation", "switch", "g2", "--settle", "60", "--grace", "3600")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr + follower.tail()
    assert "'g2' runs live: its dataflow has read every input record logged up to" in accepted.stdout
    assert "the API now serves 'g2'" in accepted.stdout
    assert _pointer(rclient, settings) == b"g2"
    meta = read_meta(rclient, generations_of(settings).keyspace("g2"))
    assert meta["flow"] == "running" and int(meta["lag"]) == 0  # nothing new since it caught up
    assert int(meta["caught_up_at"]) > 0


@pytest.mark.integration
def test_force_switches_to_a_generation_whose_dataflow_died(settings, rclient, start):
    _live_default_and_replayed_g2(settings, start, seed=42)
    follower = _follower(start, settings)
    ks = generations_of(settings).keyspace("g2")
    wait_until(lambda: (read_meta(rclient, ks) or {}).get("flow") == "running", 90, "g2's dataflow to run", follower)
    follower.stop(signal.SIGKILL)  # it leaves flow=running behind, and a heartbeat that only ages
    s = settings.model_copy(update={"ready_heartbeat_s": 1.0})
    wait_until(lambda: time.time() * 1000 - int(read_meta(rclient, ks)["heartbeat"]) > 2000, 30,
               "the dead dataflow's heartbeat to age")

    refused = run_atp(s, "generation", "switch", "g2", "--settle", "0")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = _one_error_line(refused)
    assert "not running live and caught up (its dataflow's last heartbeat is" in line
    assert "ATP_READY_HEARTBEAT_S=1" in line
    assert _pointer(rclient, settings) is None

    forced = run_atp(s, "generation", "switch", "g2", "--settle", "5", "--force", "--grace", "3600")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "warning: switching to 'g2' although its dataflow's last heartbeat is" in forced.stderr
    assert "the API now serves 'g2'" in forced.stdout
    assert _pointer(rclient, settings) == b"g2"


@pytest.mark.integration
def test_a_point_in_time_generation_is_refused_even_with_force(settings, rclient, start):
    sim = Simulator(seed=43, skus=20, locations=2)
    send_events(EventProducer(settings), [sim.next() for _ in range(300)])
    cut = datetime.now(UTC).isoformat()
    pit = start("replay", "at-cut", "--until", cut, "--metrics-port", "0")
    assert pit.p.wait(90) == 0, pit.tail()
    for extra in ([], ["--force"]):
        refused = run_atp(settings, "generation", "switch", "at-cut", "--settle", "0", *extra)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        line = _one_error_line(refused)
        assert "point-in-time rebuild, frozen by design" in line and "--force does not apply" in line, line
        assert "?generation=at-cut" in line
        assert "keys:" not in refused.stdout  # refused before any comparison
    assert _pointer(rclient, settings) is None


@pytest.mark.integration
def test_the_old_generation_still_retires_after_redis_lost_its_schedule(settings, rclient, start):
    live = _live_default_and_replayed_g2(settings, start, seed=44)
    follower = _follower(start, settings)
    switched = run_atp(settings, "generation", "switch", "g2", "--settle", "60", "--grace", "12")
    assert switched.returncode == 0, switched.stdout + switched.stderr + follower.tail()
    g2_dir = for_generation(settings, "g2").generation_dir
    # Each dataflow notes what it needs after a loss within a watch interval of the switch.
    wait_until(lambda: (settings.generation_dir / RETIRE_FILE).exists(), 30, "default's dataflow to keep its "
               "retirement on disk", live)
    wait_until(lambda: (g2_dir / WAS_CURRENT_FILE).exists(), 30, "g2's dataflow to note it is current", follower)
    g2_keys = len(list(rclient.scan_iter(match=f"{keyspace_of(for_generation(settings, 'g2')).prefix}:pos:*")))

    rclient.flushall()  # the schedule (default's retire_at), the pointer and both keyspaces are gone

    ks2 = generations_of(settings).keyspace("g2")
    wait_until(lambda: (read_meta(rclient, ks2) or {}).get("state") == READY and _pointer(rclient, settings) == b"g2",
               90, "g2's dataflow to re-publish and restore the pointer", follower)
    code = live.p.wait(180)  # a hang guard: the grace is 12 s
    log = live.tail(500_000)
    assert code == 0, log[-3000:]
    assert "re-publishing every position" in log  # it did see the loss, and came back before retiring
    assert "restored the retirement of generation 'default'" in log  # from its disk, into the re-published meta
    assert "generation 'default' retired" in log
    assert read_meta(rclient, keyspace_of(settings)) is None
    assert not list(rclient.scan_iter(match=f"{keyspace_of(settings).prefix}:pos:*"))
    assert not settings.recovery_dir.exists() and not (settings.generation_dir / RETIRE_FILE).exists()
    assert follower.alive() and _pointer(rclient, settings) == b"g2"
    assert len(list(rclient.scan_iter(match=f"{ks2.prefix}:pos:*"))) == g2_keys


def test_read_progress_is_the_newest_measurement_whose_ends_were_all_read():
    clock = iter([1_000, 2_000, 3_000, 4_000]).__next__
    ends = iter([{"0-wms": 10, "0-orders": 5}, {"0-wms": 12, "0-orders": 5}, {"0-wms": 12, "0-orders": 9},
                 {"0-wms": 20, "0-orders": 9}]).__next__
    read = iter([{"0-wms": 4}, {"0-wms": 11, "0-orders": 5}, {"0-wms": 12, "0-orders": 9},
                 {"0-wms": 12, "0-orders": 9}]).__next__
    p = ReadProgress(ends, read, clock=clock)
    p.measure()
    assert (p.caught_up_at, p.lag) == (None, 11)  # nothing caught up since it started
    p.measure()
    assert (p.caught_up_at, p.lag) == (1_000, 1)  # everything logged by the first measurement was read
    p.measure()
    assert (p.caught_up_at, p.lag) == (3_000, 0)
    p.measure()
    assert (p.caught_up_at, p.lag) == (3_000, 8)  # behind the newest ends: the time stays


def test_live_problem_needs_a_running_flow_a_fresh_heartbeat_and_recent_progress():
    now = 100_000
    fine = {"flow": "running", "heartbeat": str(now - 500), "caught_up_at": str(now - 4_000), "lag": "0"}
    assert live_problem(fine, now, 15_000, 15_000) is None
    assert live_problem({}, now, 15_000, 15_000) == "no dataflow has run it"
    assert live_problem({**fine, "flow": "crash_loop"}, now, 15_000, 15_000) == "its dataflow is crash_loop"
    assert "heartbeat is 20.0 s old" in live_problem({**fine, "heartbeat": str(now - 20_000)}, now, 15_000, 15_000)
    assert "unreadable" in live_problem({**fine, "heartbeat": "x"}, now, 15_000, 15_000)
    assert live_problem({**fine, "caught_up_at": "", "lag": "1200"}, now, 15_000, 15_000) == (
        "its dataflow has not caught up with its input since it started, 1,200 input records behind at its last "
        "measurement")
    behind = live_problem({**fine, "caught_up_at": str(now - 60_000), "lag": "7"}, now, 15_000, 15_000)
    assert behind == ("its dataflow has read its input only up to 60 s ago (the bound is 15 s), 7 input records "
                      "behind at its last measurement")
    assert live_problem({**fine, "caught_up_at": str(now - 60_000)}, now, 15_000, 90_000) is None
