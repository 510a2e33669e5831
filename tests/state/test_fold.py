"""The ATP rules of the contract, one by one, on the pure fold."""

from __future__ import annotations

import random

import pytest

from sandbox.simulator import Simulator
from state.fold import KeyState, apply, prune
from state.safety import SafetyStock
from tests.builders import order, parse, snapshot, wms
from tests.reference import WINDOW_MS, fold_all, quantities


def one(items, **kw):
    positions = fold_all(items, **kw)
    return positions["SKU-1@DC-01"]


def test_receipt_to_status_and_buckets():
    p = one([wms("RECEIPT", qty=10), wms("RECEIPT", qty=3, to_status="QUARANTINE")])
    assert (p.available_qty, p.non_sellable, p.on_hand, p.atp) == (10, 3, 13, 10)


def test_reserve_is_absolute_and_release_ends_it():
    p = one([wms("RECEIPT", qty=10), order("RESERVE", "L1", 4), order("RESERVE", "L1", 4), order("RESERVE", "L2", 1)])
    assert (p.reserved, p.atp) == (5, 5)
    p = one([wms("RECEIPT", qty=10), order("RESERVE", "L1", 4), order("RELEASE", "L1")])
    assert (p.reserved, p.atp) == (0, 10)


def test_ship_consumes_reservation_in_either_order():
    ship_first = one([wms("RECEIPT", qty=10), wms("SHIP", qty=3, order_line_id="L1"), order("RESERVE", "L1", 5)])
    reserve_first = one([wms("RECEIPT", qty=10), order("RESERVE", "L1", 5), wms("SHIP", qty=3, order_line_id="L1")])
    assert quantities(ship_first) | {"version": 0} == quantities(reserve_first) | {"version": 0}
    assert (reserve_first.available_qty, reserve_first.reserved, reserve_first.atp) == (7, 2, 5)


def test_over_ship_never_makes_reservation_negative():
    p = one([wms("RECEIPT", qty=10), order("RESERVE", "L1", 2), wms("SHIP", qty=5, order_line_id="L1")])
    assert (p.reserved, p.available_qty) == (0, 5)


def test_short_pick_adjust_count_return_status_move():
    p = one([
        wms("RECEIPT", qty=20),
        wms("SHORT_PICK", qty=2, order_line_id="L9"),
        wms("ADJUST", qty=-3, reason="damage"),
        wms("STATUS_MOVE", qty=4, from_status="AVAILABLE", to_status="HOLD"),
        wms("RETURN", qty=1, to_status="DAMAGED"),
    ])
    assert (p.available_qty, p.non_sellable, p.on_hand) == (11, 5, 16)
    p = one([wms("RECEIPT", qty=20), wms("COUNT", counted_qty=7), wms("ADJUST", qty=1, reason="found")])
    assert p.available_qty == 8


def test_transfer_fans_out_and_inbound_is_order_independent():
    out = wms("TRANSFER_OUT", qty=5, to_location="DC-02", transfer_id="T1")
    tin = wms("TRANSFER_IN", location="DC-02", qty=5, from_location="DC-01", transfer_id="T1")
    partial = wms("TRANSFER_IN", location="DC-02", qty=2, from_location="DC-01", transfer_id="T1", event_id="p")
    for items in ([out, tin], [tin, out]):
        ps = fold_all([wms("RECEIPT", qty=10), *items])
        assert ps["SKU-1@DC-01"].available_qty == 5
        assert (ps["SKU-1@DC-02"].available_qty, ps["SKU-1@DC-02"].inbound) == (5, 0)
    ps = fold_all([out, partial])
    assert ps["SKU-1@DC-02"].inbound == 3
    ps = fold_all([partial])
    assert ps["SKU-1@DC-02"].inbound == 0  # received before sent: remembered, not negative


def test_negative_buckets_keep_their_true_value():
    p = one([wms("SHIP", qty=4, order_line_id="L1")])
    assert (p.available_qty, p.atp, p.oversold) == (-4, 0, True)


def test_safety_stock_atp_and_shortfall():
    safety = SafetyStock(locations={"DC-01": 5}, items={"SKU-1@DC-01": 8})
    p = one([wms("RECEIPT", qty=10), order("RESERVE", "L1", 4)], safety=safety)
    assert (p.safety_stock, p.atp, p.shortfall) == (8, 0, 2)
    p = fold_all([wms("RECEIPT", qty=10, sku="SKU-2")], safety=safety)["SKU-2@DC-01"]
    assert (p.safety_stock, p.atp) == (5, 5)


def test_duplicates_are_ignored_and_do_not_bump_version():
    r = wms("RECEIPT", qty=10, event_id="dup")
    p = one([r, r, wms("RECEIPT", qty=1), r])
    assert (p.available_qty, p.version) == (11, 2)


def test_snapshot_is_kept_but_does_not_change_quantities():
    st = KeyState("SKU-1", "DC-01")
    assert apply(st, parse(snapshot(42)), WINDOW_MS)
    assert st.last_snapshot is not None and st.last_snapshot.on_hand == 42
    assert st.buckets == [0, 0, 0, 0]


def test_dedup_memory_is_bounded_by_the_event_time_window():
    st = KeyState("SKU-1", "DC-01")
    hour = 3_600_000
    for i in range(2000):
        apply(st, parse(wms("ADJUST", qty=1, reason="x", t=i * 60_000)), WINDOW_MS)  # one a minute
    prune(st, WINDOW_MS)
    assert len(st.seen) <= 24 * 60 + 1
    assert min(st.seen.values()) >= st.max_event_ms - 24 * hour


def test_closed_lines_are_pruned_after_the_window_open_ones_kept():
    st = KeyState("SKU-1", "DC-01")
    for item in [order("RESERVE", "closed", 1, t=0), order("RELEASE", "closed", t=1), order("RESERVE", "open", 2, t=2)]:
        apply(st, parse(item), WINDOW_MS)
    apply(st, parse(wms("ADJUST", qty=1, reason="x", t=WINDOW_MS + 10)), WINDOW_MS)
    prune(st, WINDOW_MS)
    assert set(st.lines) == {"open"} and st.reserved == 2


def interleave(items, rng):
    """A random arrival order that keeps each (topic, key) sequence in order, as Kafka does."""
    queues: dict = {}
    for item in items:
        alias, rec = item
        queues.setdefault((alias, rec["sku"], rec["location"]), []).append(item)
    lanes = [list(reversed(q)) for q in queues.values()]
    out = []
    while lanes:
        lane = rng.choice(lanes)
        out.append(lane.pop())
        if not lane:
            lanes.remove(lane)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_final_positions_do_not_depend_on_cross_topic_order(seed):
    sim = Simulator(seed=seed, skus=30, locations=3)
    items = [sim.next() for _ in range(4000)]
    expected = {k: quantities(p) for k, p in fold_all(items).items()}
    rng = random.Random(seed)
    for _ in range(3):
        shuffled = interleave(items, rng)
        assert shuffled != items
        assert {k: quantities(p) for k, p in fold_all(shuffled).items()} == expected


def test_replaying_the_same_events_twice_is_identical_and_duplicates_absorbed():
    sim = Simulator(seed=7, skus=20, locations=2)
    items = [sim.next() for _ in range(2000)]
    once = {k: quantities(p) for k, p in fold_all(items).items()}
    assert {k: quantities(p) for k, p in fold_all(items).items()} == once
    assert {k: quantities(p) for k, p in fold_all(items + items[:500]).items()} == once
