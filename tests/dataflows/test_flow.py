"""The dataflow on TestingSource/TestingSink: positions, dead letters, duplicates, several workers."""

from __future__ import annotations

from datetime import UTC

from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from core.config import load_settings
from dataflows.flow import FlowIO, build_flow, deps_from_settings
from dataflows.kafka.producer import RECORD_OF_ALIAS
from sandbox.simulator import Simulator
from schemas import Encoder, default_store
from state.events import kafka_key
from state.position import Position
from tests.builders import order, wms
from tests.reference import fold_all, quantities

SETTINGS = load_settings({})
ENC = Encoder(default_store())
RECORD = RECORD_OF_ALIAS


def message(item, offset, key=None, value=None):
    alias, rec = item
    topic = SETTINGS.topic_alias(alias)
    return KafkaSourceMessage(
        key=key if key is not None else kafka_key(rec.get("sku"), rec["location"]).encode(),
        value=value if value is not None else ENC.encode(RECORD[alias], rec),
        topic=topic, partition=0, offset=offset, headers=[("trace", b"abc")],
    )


def run_flow(msgs, workers=1):
    redis, out = [], []
    flow = build_flow(FlowIO(TestingSource(msgs), TestingSink(redis), TestingSink(out)), deps_from_settings(SETTINGS))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return [p for p in redis if type(p) is Position], out


def latest(positions):
    best = {}
    for p in positions:
        if p.key not in best or p.version > best[p.key].version:
            best[p.key] = p
    return {k: quantities(p) for k, p in best.items()}


def test_positions_match_the_fold_and_feed_the_availability_topic():
    sim = Simulator(seed=11, skus=25, locations=3)
    items = [sim.next() for _ in range(3000)]
    positions, out = run_flow([message(it, i) for i, it in enumerate(items)])
    assert latest(positions) == {k: quantities(p) for k, p in fold_all(items).items()}
    feed = [m for m in out if m.topic == SETTINGS.topic_availability]
    assert len(feed) == len(positions)
    assert {m.key.decode() for m in feed} == {p.key for p in positions}


def test_two_workers_give_the_same_positions():
    sim = Simulator(seed=12, skus=25, locations=3)
    items = [sim.next() for _ in range(3000)]
    positions, _ = run_flow([message(it, i) for i, it in enumerate(items)], workers=2)
    assert latest(positions) == {k: quantities(p) for k, p in fold_all(items).items()}


def test_versions_increase_per_key_and_duplicates_publish_nothing():
    r = wms("RECEIPT", qty=5, event_id="same")
    positions, out = run_flow([message(r, 0), message(r, 1), message(order("RESERVE", "L1", 2), 2), message(r, 3)])
    assert [(p.version, p.atp) for p in positions] == [(1, 5), (2, 3)]
    assert not [m for m in out if m.topic == SETTINGS.topic_dead_letter]


def test_bad_input_goes_to_the_dead_letter_topic_and_the_flow_goes_on():
    good = wms("RECEIPT", qty=5)
    valid_avro_bad_semantics = wms("RECEIPT", qty=-5)
    payload = ENC.encode("WarehouseEvent", good[1])
    msgs = [
        message(good, 0, value=b"\x07garbage"),  # wrong magic byte
        message(good, 1, value=payload[:2] + b"\x11" * 8 + payload[10:]),  # unknown fingerprint
        message(good, 2, value=payload[:-3]),  # truncated
        message(valid_avro_bad_semantics, 3),  # valid Avro, invalid semantics
        message(good, 4, key=b"SKU-1@DC-99"),  # key does not match sku@location
        message(good, 5, value=ENC.encode("OrderLineEvent", order("RESERVE", "L1", 1)[1])),  # wrong topic
        message(good, 6),
    ]
    positions, out = run_flow(msgs)
    assert [p.available_qty for p in positions] == [5]
    dead = [m for m in out if m.topic == SETTINGS.topic_dead_letter]
    reasons = [dict(m.headers)["atp.error.reason"].decode() for m in dead]
    assert reasons == ["bad_magic", "unknown_schema", "truncated", "invalid_quantity", "key_mismatch", "wrong_topic"]
    first = dict(dead[0].headers)
    assert dead[0].value == b"\x07garbage" and dead[0].key == b"SKU-1@DC-01"
    assert first["trace"] == b"abc"  # original headers kept
    assert first["atp.source.topic"] == SETTINGS.topic_wms.encode()
    assert (first["atp.source.partition"], first["atp.source.offset"]) == (b"0", b"0")
    assert first["atp.error.class"] == b"DecodeError" and b"c301" in first["atp.error.message"]


def test_the_zero_argument_entry_builds_the_production_flow(monkeypatch):
    # `python -m bytewax.run "dataflows.flow:main_flow()"` only passes literals: settings come from the environment.
    from dataflows.flow import main_flow

    monkeypatch.setenv("ATP_TOPIC_WMS", "wms.custom")
    flow = main_flow()
    # Step ids are part of recovery state: changing one is a migration, so they are pinned here.
    # The stateful ones (kafka_in, atp_fold) have kept their ids since the first release.
    assert [step.step_id for step in flow.substeps] == [
        "atp.kafka_in", "atp.decode", "atp.split_dead_letters", "atp.split_location_controls",
        "atp.skus_by_location", "atp.directory_input", "atp.location_directory", "atp.location_controls",
        "atp.fold_input", "atp.atp_fold", "atp.positions", "atp.split_positions", "atp.split_alerts",
        "atp.split_refused", "atp.group_members", "atp.group_fold", "atp.group_positions", "atp.redis_items", "atp.redis_out",
        "atp.availability_message", "atp.alert_message", "atp.band_message", "atp.dead_letters",
        "atp.dead_letter_message", "atp.kafka_messages", "atp.kafka_out",
        "atp.demand_per_minute", "atp.location_demand", "atp.location_demand_late", "atp.demand_out",
    ]
    assert "wms.custom" in flow.substeps[0].source._topics


def test_location_demand_is_summed_in_one_minute_event_time_windows():
    from datetime import datetime

    from dataflows.location_demand import ALIGN, MINUTE

    items = [order("RESERVE", "L1", 3, t=1_000), order("RESERVE", "L2", 2, location="DC-02", t=2_000),
             wms("SHIP", qty=4, order_line_id="L1", t=59_000), wms("SHIP", qty=1, order_line_id="L1", t=61_000),
             wms("RECEIPT", qty=9, t=62_000)]
    windows = []
    flow = build_flow(FlowIO(TestingSource([message(it, i) for i, it in enumerate(items)]), TestingSink([]),
                             TestingSink([]), TestingSink(windows)), deps_from_settings(SETTINGS))
    run_main(flow)
    got = {(loc, (ALIGN + MINUTE * wid).astimezone(UTC)): tuple(sums) for loc, (wid, sums) in windows}
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert got == {("DC-01", start): (3, 4), ("DC-02", start): (2, 0), ("DC-01", start + MINUTE): (0, 1)}


def test_location_groups_sum_their_members_on_one_or_two_workers():
    from state.groups import GroupPosition

    settings = load_settings({}, location_groups={"EAST": ["DC-01", "DC-02"], "ALL": ["DC-01", "DC-02", "DC-03"]})
    sim = Simulator(seed=13, skus=20, locations=3)
    items = [sim.next() for _ in range(3000)]
    want = fold_all(items)
    for workers in (1, 2):
        redis: list = []
        flow = build_flow(FlowIO(TestingSource([message(it, i) for i, it in enumerate(items)]), TestingSink(redis),
                                 TestingSink([])), deps_from_settings(settings))
        run_main(flow) if workers == 1 else cluster_main(flow, [], 0, worker_count_per_proc=workers)
        groups = {}
        for g in redis:
            if type(g) is GroupPosition and (g.key not in groups or g.position.version > groups[g.key].position.version):
                groups[g.key] = g
        assert len(groups) == 2 * len({p.sku for p in want.values()})
        for key, g in groups.items():
            sku, name = key.split("@")
            members = [p for p in want.values() if p.sku == sku and p.location in settings.location_groups[name]]
            assert g.members == tuple(sorted((p.location, p.version) for p in members))
            assert g.position.version == sum(p.version for p in members)
            for f in ("atp", "available_qty", "on_hand", "reserved", "non_sellable", "inbound", "shortfall"):
                assert getattr(g.position, f) == sum(getattr(p, f) for p in members), (key, f)


def test_safety_stock_controls_apply_to_items_and_whole_locations_whatever_the_order():
    from tests.builders import control
    from tests.reference import oracle_of

    items = [
        wms("RECEIPT", qty=20, sku="SKU-1", t=0), wms("RECEIPT", qty=20, sku="SKU-2", t=0),
        control(3, t=5_000, event_id="loc-new"),  # the newer location default arrives first ...
        control(9, t=1_000, event_id="loc-old"),  # ... and an older one after it: 3 stays
        control(7, sku="SKU-1", t=2_000, event_id="item"),  # SKU-1's own beats the location's
        wms("RECEIPT", qty=20, sku="SKU-3", t=10),  # a key that appears after the controls gets them too
        control(4, location="DC-02", t=1_000), wms("RECEIPT", qty=20, sku="SKU-1", location="DC-02", t=0),
        control(None, sku="SKU-2", t=3_000),  # clearing a control that was never set changes nothing
        control(3, t=5_000, event_id="loc-new"),  # a re-delivered control is a duplicate
    ]
    positions, _ = run_flow([message(it, i) for i, it in enumerate(items)])
    final = {}
    for p in positions:
        if p.key not in final or p.version > final[p.key].version:
            final[p.key] = p
    got = {k: (p.safety_stock, p.atp) for k, p in final.items()}
    assert got == {"SKU-1@DC-01": (7, 13), "SKU-2@DC-01": (3, 17), "SKU-3@DC-01": (3, 17), "SKU-1@DC-02": (4, 16)}
    # The independent oracle agrees, versions included: every key counts every control it received.
    expected = oracle_of(items).positions()
    assert {k: (e.safety_stock, e.atp, e.version) for k, e in expected.items()} == {
        k: (p.safety_stock, p.atp, p.version) for k, p in final.items()}


def test_the_feed_carries_the_watermark_it_is_given():
    """Each AvailabilityChanged carries the pipeline watermark of the moment it was made (null before one
    is known), read from the newest schema revision."""
    from schemas import Decoder

    marks = iter([None, 1_767_225_600_000])
    out = []
    flow = build_flow(FlowIO(TestingSource([message(wms("RECEIPT", qty=5, event_id="a"), 0),
                                            message(wms("RECEIPT", qty=1, event_id="b"), 1)]), TestingSink([]),
                             TestingSink(out)), deps_from_settings(SETTINGS, watermark=lambda: next(marks)))
    run_main(flow)
    decoder = Decoder(default_store())
    feed = [decoder.decode(m.value)[1] for m in out if m.topic == SETTINGS.topic_availability]
    assert [(r["on_hand"], r["watermark"]) for r in feed] == [(5, None), (6, 1_767_225_600_000)]
