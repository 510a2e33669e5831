"""Event-time correctness of the fold: late counts rebase, deltas commute, the window bounds state."""

from __future__ import annotations

import random

from state.fold import APPLIED, LATE, KeyState, apply, on_hand_at
from tests.builders import T0, order, parse, snapshot, wms
from tests.reference import oracle_of

DEDUP = 24 * 3_600_000
WINDOW = 15 * 60_000
MIN = 60_000


def fold(items, lateness=WINDOW):
    st = KeyState("SKU-1", "DC-01")
    outcomes = [apply(st, parse(it), DEDUP, lateness) for it in items]
    return st, outcomes


def test_a_late_count_rebases_as_of_its_time_and_keeps_the_newer_receipt():
    # 10:00 receipt 50; 10:02 receipt 7; the 10:01 count (AVAILABLE was 42 then) arrives last.
    items = [wms("RECEIPT", qty=50, t=0), wms("RECEIPT", qty=7, t=2 * MIN), wms("COUNT", counted_qty=42, t=1 * MIN)]
    st, outcomes = fold(items)
    assert st.buckets[0] == 49  # 42 counted, then the 10:02 receipt: not erased
    assert outcomes == [APPLIED, APPLIED, APPLIED]
    assert oracle_of(items).positions()["SKU-1@DC-01"].available_qty == 49


def test_a_count_in_arrival_order_still_erases_older_deltas():
    st, _ = fold([wms("RECEIPT", qty=50, t=0), wms("COUNT", counted_qty=42, t=MIN), wms("ADJUST", qty=-2, reason="x", t=2 * MIN)])
    assert st.buckets[0] == 40


def test_a_late_delta_before_a_count_is_absorbed_by_the_count():
    # The 10:01 count saw the 10:00:30 shipment physically; applying it again would double it.
    items = [wms("RECEIPT", qty=50, t=0), wms("COUNT", counted_qty=45, t=MIN),
             wms("SHIP", qty=5, order_line_id="L1", t=MIN // 2)]
    st, _ = fold(items)
    assert st.buckets[0] == 45
    assert oracle_of(items).positions()["SKU-1@DC-01"].available_qty == 45


def test_deltas_commute_in_any_order_inside_the_window():
    rng = random.Random(3)
    items = [wms("ADJUST", qty=rng.choice([-3, -1, 2, 5]), reason="x", t=rng.randrange(10 * MIN)) for _ in range(40)]
    totals = set()
    for _ in range(5):
        rng.shuffle(items)
        st, _ = fold(items)
        totals.add(st.buckets[0])
    assert totals == {sum(it[1]["qty"] for it in items)}


def test_counts_inside_the_window_give_the_event_time_answer_in_any_arrival_order():
    rng = random.Random(5)
    items = [wms("RECEIPT", qty=100, t=0)]
    for i in range(1, 30):
        if i % 7 == 0:
            items.append(wms("COUNT", counted_qty=rng.randrange(50, 90), t=i * 1000))
        else:
            items.append(wms("ADJUST", qty=rng.choice([-2, -1, 1, 3]), reason="x", t=i * 1000))
    in_time_order, _ = fold(items)
    for _ in range(5):
        shuffled = items[:]
        rng.shuffle(shuffled)
        st, _ = fold(shuffled)
        assert st.buckets == in_time_order.buckets
        assert st.buckets[0] == oracle_of(shuffled).positions()["SKU-1@DC-01"].available_qty


def test_an_event_older_than_the_window_is_applied_at_the_edge_and_counted_late():
    # Window 15 min. Newest event at 10:30; a 10:00 count arrives: it takes effect at 10:15 (the
    # edge), so the 10:20 adjust after it still counts. It is reported LATE.
    items = [wms("RECEIPT", qty=10, t=0), wms("ADJUST", qty=4, reason="x", t=20 * MIN),
             wms("RECEIPT", qty=1, t=30 * MIN), wms("COUNT", counted_qty=3, t=0)]
    st, outcomes = fold(items)
    assert outcomes[-1] == LATE
    assert st.buckets[0] == 3 + 4 + 1  # the late count erased only what was older than the edge
    assert oracle_of(items).positions()["SKU-1@DC-01"].available_qty == 8


def test_a_late_delta_across_the_window_edge_is_applied_on_arrival():
    items = [wms("RECEIPT", qty=10, t=0), wms("RECEIPT", qty=5, t=40 * MIN), wms("ADJUST", qty=-2, reason="x", t=MIN)]
    st, outcomes = fold(items)
    assert outcomes == [APPLIED, APPLIED, LATE]
    assert st.buckets[0] == 13


def test_history_is_pruned_by_the_window_so_state_stays_bounded():
    st = KeyState("SKU-1", "DC-01")
    for i in range(2000):  # one a minute for 33 hours
        apply(st, parse(wms("ADJUST", qty=1, reason="x", t=i * MIN)), DEDUP, WINDOW)
    assert len(st.history) <= 16
    assert st.buckets[0] == 2000
    assert st.base[0] + sum(e[3] for e in st.history) == 2000


def test_on_hand_as_of_a_time_counts_every_status_and_is_unknown_before_the_window():
    st, _ = fold([
        wms("RECEIPT", qty=10, t=0), wms("RECEIPT", qty=3, to_status="QUARANTINE", t=MIN),
        wms("STATUS_MOVE", qty=2, from_status="AVAILABLE", to_status="HOLD", t=2 * MIN),
        wms("SHIP", qty=4, order_line_id="L1", t=3 * MIN), wms("RECEIPT", qty=1, t=16 * MIN),
        order("RESERVE", "L2", 1, t=60 * MIN),  # orders do not move the window: only stock changes do
    ])
    assert on_hand_at(st, T0 + MIN, WINDOW) == 13
    assert on_hand_at(st, T0 + 2 * MIN, WINDOW) == 13  # a status move keeps on-hand
    assert on_hand_at(st, T0 + 3 * MIN, WINDOW) == 9
    assert on_hand_at(st, T0 + 20 * MIN, WINDOW) == 10
    assert on_hand_at(st, T0 + MIN - 1, WINDOW) is None  # older than 10:16 - 15 min


def test_older_snapshots_of_state_resume_with_their_history_in_the_base():
    st, _ = fold([wms("RECEIPT", qty=10, t=0), wms("RECEIPT", qty=2, to_status="HOLD", t=MIN)])
    old = KeyState.__new__(KeyState)
    old.__setstate__(st.__getstate__()[:12])  # the layout before event time existed
    assert old.base == (10, 2) and old.history == [] and old.pending == ()
    apply(old, parse(wms("ADJUST", qty=1, reason="x", t=2 * MIN)), DEDUP, WINDOW)
    assert old.buckets[0] == 11


def test_a_snapshot_or_order_read_ahead_of_the_wms_topic_makes_no_stock_change_late():
    # Topics are read at their own paces: a replay can meet a snapshot hours ahead of the wms events.
    items = [snapshot(0, t=120 * MIN), order("RESERVE", "L1", 1, t=120 * MIN),
             wms("RECEIPT", qty=10, t=0), wms("COUNT", counted_qty=7, t=2 * MIN), wms("ADJUST", qty=1, reason="x", t=MIN)]
    st, outcomes = fold(items)
    assert LATE not in outcomes
    assert st.buckets[0] == 7


def test_demand_is_units_newly_reserved_per_event_time_minute_and_gives_a_stockout_eta():
    from state.position import position

    items = [wms("RECEIPT", qty=100, t=0)]
    for i in range(10):  # two lines of one unit each per minute, for ten minutes
        items += [order("RESERVE", f"A{i}", 1, t=i * MIN), order("RESERVE", f"B{i}", 1, t=i * MIN + 1)]
    items += [order("RESERVE", "A9", 1, t=9 * MIN + 2),  # the same hold re-sent: no new demand
              order("RESERVE", "A8", 3, t=9 * MIN + 3)]  # raised by 2
    st, _ = fold(items)
    p = position(st, 0, 0)
    assert (p.demand_per_min_5m, p.demand_per_min_60m) == (round((5 * 2 + 2) / 5, 3), round((10 * 2 + 2) / 60, 3))
    assert p.atp == 100 - 22 and p.stockout_eta_minutes == round(78 / 2.4, 1)
    expected = oracle_of(items).positions()["SKU-1@DC-01"]
    assert (expected.demand_per_min_5m, expected.demand_per_min_60m, expected.stockout_eta_minutes) == (
        p.demand_per_min_5m, p.demand_per_min_60m, p.stockout_eta_minutes)
    quiet, _ = fold([wms("RECEIPT", qty=5, t=0), order("RESERVE", "L", 1, t=0), wms("ADJUST", qty=1, reason="x", t=70 * MIN)])
    assert position(quiet, 0, 0).stockout_eta_minutes is None  # the only demand is over an hour old


def test_a_snapshot_with_empty_containers_resumes_lean_and_equal():
    # Snapshots written before the containers were made on first use hold empty dicts and lists.
    st, _ = fold([wms("RECEIPT", qty=10, t=0), order("RESERVE", "L1", 3, t=MIN)])
    values = list(st.__getstate__())[:-1]  # the layout before: one value per slot, no layout number
    slots = KeyState.__slots__
    values[slots.index("transfers")] = {}
    values[slots.index("pending")] = []
    values[slots.index("base")] = [0, 0]
    old = KeyState.__new__(KeyState)
    old.__setstate__(tuple(values))
    assert old.transfers is None and old.pending == () and old.base == (0, 0)
    assert set(old.lines) == {"L1"} and old.demand == st.demand and old.buckets == st.buckets
    apply(old, parse(wms("TRANSFER_IN", qty=2, transfer_id="T1", from_location="DC-09", t=2 * MIN)), DEDUP, WINDOW)
    assert old.transfers == {"T1": -2} and old.buckets[0] == 12
