"""Reconciliation, alerts, expiring reservations and the band feed: the pure parts and the adapter."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dataflows.logic import FoldContext, PositionLogic
from state import drift
from state.bands import IN_STOCK, LOW_STOCK, OUT_OF_STOCK, BandChange
from state.events import InventorySnapshot, OrderLineEvent, WarehouseEvent
from state.fold import KeyState, apply
from state.position import Position
from state.safety import SafetyStock
from tests.builders import T0, order, parse, snapshot, wms

DEDUP = 24 * 3_600_000
WINDOW = 15 * 60_000
MIN = 60_000


def snap(on_hand, t, system="ERP", event_id=None):
    alias, rec = snapshot(on_hand, t=t, event_id=event_id)
    return parse((alias, {**rec, "source_system": system}))


def state_with(*items):
    st = KeyState("SKU-1", "DC-01")
    for it in items:
        apply(st, parse(it), DEDUP, WINDOW)
    return st


# -- thresholds ---------------------------------------------------------------------------------

@pytest.mark.parametrize("difference, on_hand, expected", [
    (0, 100, None), (4, 100, None), (5, 100, drift.WARNING), (-5, 100, drift.WARNING),
    (19, 100, drift.WARNING), (20, 100, drift.CRITICAL), (20, 1000, drift.WARNING), (200, 1000, drift.CRITICAL),
])
def test_a_level_is_reached_exactly_at_both_its_units_and_its_percent(difference, on_hand, expected):
    th = drift.Thresholds(drift.Level(5, 1.0), drift.Level(20, 10.0))
    assert th.severity(difference, on_hand) == expected


def test_locations_override_the_default_thresholds_and_systems_choose_the_action():
    policy = drift.DriftPolicy(locations={"DC-09": drift.Thresholds(drift.Level(50), drift.Level(100))})
    assert policy.thresholds("DC-09").severity(10, 100) is None
    assert policy.thresholds("DC-01").severity(10, 100) == drift.CRITICAL
    assert (policy.action("ERP"), policy.action("WMS")) == (drift.ALERT, drift.REBASE)


# -- reconcile ----------------------------------------------------------------------------------

def test_a_matching_snapshot_gives_no_alert_even_with_newer_changes_applied():
    st = state_with(wms("RECEIPT", qty=40, t=0), wms("RECEIPT", qty=5, to_status="DAMAGED", t=MIN),
                    wms("SHIP", qty=3, order_line_id="L1", t=3 * MIN))
    result = drift.reconcile(st, snap(45, 2 * MIN), drift.DriftPolicy(), WINDOW, T0)
    assert (result.outcome, result.drift, result.alert) == (drift.MATCH, 0, None)


def test_erp_drift_alerts_and_explains_itself_without_touching_the_state():
    st = state_with(wms("RECEIPT", qty=40, t=0, event_id="r1"), wms("ADJUST", qty=-2, reason="x", t=MIN, event_id="a1"))
    before = list(st.buckets)
    result = drift.reconcile(st, snap(25, 2 * MIN, event_id="s1"), drift.DriftPolicy(), WINDOW, T0 + 5 * MIN)
    a = result.alert
    assert result.outcome == drift.DRIFT and st.buckets == before
    assert (a.kind, a.severity, a.expected, a.observed, a.difference, a.action, a.corrected) == (
        "DRIFT", drift.CRITICAL, 38, 25, -13, drift.ALERT, False)
    assert a.alert_id == "drift:s1" and a.as_of == T0 + 2 * MIN and a.source_system == "ERP"
    assert [(m.event_id, m.change, m.available) for m in a.moved_by] == [("r1", "delta", 40), ("a1", "delta", -2)]


def test_wms_drift_rebases_as_of_the_snapshot_and_keeps_the_newer_changes():
    st = state_with(wms("RECEIPT", qty=40, t=0), wms("RECEIPT", qty=2, to_status="HOLD", t=0),
                    wms("SHIP", qty=5, order_line_id="L1", t=3 * MIN))
    result = drift.reconcile(st, snap(33, 2 * MIN, system="WMS"), drift.DriftPolicy(), WINDOW, T0)
    assert result.alert.action == drift.REBASE and result.alert.corrected
    assert result.alert.difference == 33 - 42
    # As of 10:02 on-hand is 33 (31 available + 2 on hold); the 10:03 shipment follows.
    assert st.buckets[0] == 31 - 5
    # A change that was late for the snapshot lands before it and is absorbed, not doubled.
    apply(st, parse(wms("ADJUST", qty=-1, reason="x", t=MIN)), DEDUP, WINDOW)
    assert st.buckets[0] == 26


def test_small_drift_below_the_warning_level_is_a_match_and_a_snapshot_too_old_is_unverifiable():
    st = state_with(wms("RECEIPT", qty=40, t=0), wms("RECEIPT", qty=5, t=30 * MIN))
    quiet = drift.DriftPolicy(default=drift.Thresholds(drift.Level(5), drift.Level(50)))
    result = drift.reconcile(st, snap(41, 20 * MIN), quiet, WINDOW, T0)
    assert (result.outcome, result.drift, result.alert) == (drift.MATCH, 1, None)
    assert drift.reconcile(st, snap(41, 10 * MIN), quiet, WINDOW, T0).outcome == drift.UNVERIFIABLE


# -- the adapter: pending snapshots, expiry, oversold, bands --------------------------------------

class Clock:
    def __init__(self, ms):
        self.ms = ms

    def __call__(self):
        return self.ms / 1000


def logic(clock, read_to=T0 + 10 * MIN, **kw):
    ctx = FoldContext(DEDUP, SafetyStock(), {WarehouseEvent: "wms", OrderLineEvent: "orders",
                                             InventorySnapshot: "snapshots"}, clock=clock,
                      stock_progress=lambda: read_to, **kw)
    return PositionLogic(ctx, None)


def kinds(out):
    return [type(x).__name__ for x in out]


def test_a_snapshot_waits_for_the_reconcile_delay_unless_newer_stock_changes_arrived():
    clock = Clock(T0 + 10 * MIN)
    lg = logic(clock, reconcile_delay_ms=2000)
    lg.on_batch([parse(wms("RECEIPT", qty=40, t=0))])
    out, _ = lg.on_batch([parse(snapshot(30, t=MIN))])
    assert not [x for x in out if isinstance(x, drift.Alert)]
    assert lg.notify_at().timestamp() * 1000 == clock.ms + 2000
    clock.ms += 2000
    out, _ = lg.on_notify()
    assert [a.difference for a in out if isinstance(a, drift.Alert)] == [-10]
    assert lg.notify_at() is None
    # A newer stock change means the snapshot's past has arrived: reconciled at once.
    out, _ = lg.on_batch([parse(snapshot(30, t=MIN + 1)), parse(wms("ADJUST", qty=1, reason="x", t=2 * MIN))])
    assert [a.difference for a in out if isinstance(a, drift.Alert)] == [-10]


def test_a_snapshot_waits_until_every_wms_partition_is_read_past_its_as_of_by_the_out_of_order_bound():
    # Event times step back within a partition (writers' clocks differ, a hot key is stamped
    # ahead of the others): a partition read just past as_of can still hold a change from before.
    clock = Clock(T0 + 10 * MIN)
    read_to = [T0 + MIN + 999]
    ctx = FoldContext(DEDUP, SafetyStock(), {WarehouseEvent: "wms", OrderLineEvent: "orders",
                                             InventorySnapshot: "snapshots"}, clock=clock,
                      stock_progress=lambda: read_to[0], reconcile_delay_ms=2000, out_of_order_ms=1000)
    lg = PositionLogic(ctx, None)
    lg.on_batch([parse(wms("RECEIPT", qty=40, t=0))])
    lg.on_batch([parse(snapshot(30, t=MIN))])
    clock.ms += 2000
    out, _ = lg.on_notify()
    assert alerts_of(out) == []  # 999 ms past as_of: still waiting, and checked again a delay later
    assert lg.notify_at().timestamp() * 1000 == clock.ms + 2000
    # The change from before as_of that was still in the partition; then the partition passes the bound.
    out, _ = lg.on_batch([parse(wms("ADJUST", qty=-10, reason="damaged", t=MIN - 1))])
    assert alerts_of(out) == []
    read_to[0] = T0 + MIN + 1000
    clock.ms += 1
    out, _ = lg.on_notify()
    assert alerts_of(out) == [] and not [p for p in out if isinstance(p, Position)]  # a match: nothing changed
    assert lg.notify_at() is None
    # Without the bound the same order of reading raises a false drift alert.
    eager = PositionLogic(replace(ctx, out_of_order_ms=0), None)
    eager.on_batch([parse(wms("RECEIPT", qty=40, t=0))])
    eager.on_batch([parse(snapshot(30, t=MIN))])
    read_to[0] = T0 + MIN + 999
    clock.ms += 2000
    out, _ = eager.on_notify()
    assert alerts_of(out) == [("DRIFT", 40, 30, -10)]


def test_an_expired_reservation_is_released_with_no_further_event():
    clock = Clock(T0)
    lg = logic(clock)
    lg.on_batch([parse(wms("RECEIPT", qty=40, t=0))])
    alias, rec = order("RESERVE", "L1", 6, t=1)
    out, _ = lg.on_batch([parse((alias, {**rec, "expires_at": T0 + 30 * MIN}))])
    assert [p.reserved for p in out if isinstance(p, Position)] == [6]
    assert lg.notify_at().timestamp() * 1000 == T0 + 30 * MIN
    clock.ms = T0 + 30 * MIN
    out, _ = lg.on_notify()
    p = [p for p in out if isinstance(p, Position)][0]
    assert (p.reserved, p.atp) == (0, 40) and lg.notify_at() is None
    # A new RESERVE of the line holds it again; a SHIP closes it before it can expire.
    out, _ = lg.on_batch([parse((alias, {**rec, "event_id": "again", "expires_at": T0 + 40 * MIN}))])
    assert [p.reserved for p in out if isinstance(p, Position)] == [6]
    lg.on_batch([parse(wms("SHIP", qty=6, order_line_id="L1", t=2))])
    clock.ms = T0 + 41 * MIN
    out, _ = lg.on_notify()
    assert not [p for p in out if isinstance(p, Position)]  # nothing left to release


def alerts_of(out):
    return [(a.kind, a.expected, a.observed, a.difference) for a in out if isinstance(a, drift.Alert)]


def test_oversold_alert_fires_once_per_episode_when_the_shortfall_is_confirmed():
    clock = Clock(T0 + MIN)
    lg = logic(clock, reconcile_delay_ms=2000)
    lg.on_batch([parse(wms("RECEIPT", qty=5, t=0))])
    out, _ = lg.on_batch([parse(order("RESERVE", "L1", 8, t=1))])
    # The wms topic may not have been read up to the reservation yet: wait for it.
    assert alerts_of(out) == [] and lg.notify_at().timestamp() * 1000 == clock.ms + 2000
    clock.ms += 2000
    out, _ = lg.on_notify()
    assert alerts_of(out) == [("OVERSOLD", 8, 5, -3)] and lg.notify_at() is None
    out, _ = lg.on_batch([parse(order("RESERVE", "L2", 1, t=2))])
    clock.ms += 5000
    out2, _ = lg.on_notify()
    assert alerts_of(out + out2) == []  # still short: no second alert
    lg.on_batch([parse(wms("RECEIPT", qty=10, t=3))])
    lg.on_batch([parse(order("RESERVE", "L3", 20, t=4))])
    clock.ms += 2000
    out, _ = lg.on_notify()
    assert alerts_of(out) == [("OVERSOLD", 29, 15, -14)]  # short again: a new episode


def test_a_shortfall_that_exists_only_in_the_reading_order_raises_no_alert():
    clock = Clock(T0 + MIN)
    lg = logic(clock, reconcile_delay_ms=2000)
    out, _ = lg.on_batch([parse(order("RESERVE", "L1", 8, t=10))])  # read before its receipt
    assert alerts_of(out) == [] and lg.notify_at() is not None
    clock.ms += 1000
    out, _ = lg.on_batch([parse(wms("RECEIPT", qty=50, t=0))])
    assert alerts_of(out) == [] and lg.notify_at() is None
    clock.ms += 60_000
    assert alerts_of(lg.on_notify()[0]) == []


def test_a_shortfall_from_a_stock_change_alerts_at_once_and_a_lagging_wms_topic_waits_for_the_timeout():
    clock = Clock(T0 + MIN)
    lg = logic(clock, reconcile_delay_ms=2000)
    lg.on_batch([parse(wms("RECEIPT", qty=10, t=0)), parse(order("RESERVE", "L1", 8, t=1))])
    out, _ = lg.on_batch([parse(wms("ADJUST", qty=-5, reason="damaged", t=2))])  # the stock is in
    assert alerts_of(out) == [("OVERSOLD", 8, 5, -3)]
    lagging = logic(clock, read_to=0, reconcile_delay_ms=2000, reconcile_timeout_ms=10_000)
    lagging.on_batch([parse(wms("RECEIPT", qty=5, t=0))])
    lagging.on_batch([parse(order("RESERVE", "L1", 8, t=1))])
    # Checked again every delay while the wms topic lags, and confirmed at the timeout at the latest.
    for _ in range(4):
        clock.ms += 2000
        assert alerts_of(lagging.on_notify()[0]) == [] and lagging.notify_at().timestamp() * 1000 == clock.ms + 2000
    clock.ms += 2000
    assert alerts_of(lagging.on_notify()[0]) == [("OVERSOLD", 8, 5, -3)]


def test_band_changes_only_when_atp_crosses_a_boundary_up_or_down():
    lg = logic(Clock(T0), low_stock_atp=10)
    changes = []
    def feed(*items):
        out, _ = lg.on_batch([parse(it) for it in items])
        changes.extend((c.old_band, c.new_band) for c in out if isinstance(c, BandChange))
    feed(wms("RECEIPT", qty=5000, t=0))
    for i in range(1000):  # a burst of a thousand reservations that never leaves IN_STOCK
        feed(order("RESERVE", f"B{i}", 1, t=1 + i))
    assert changes == [(None, IN_STOCK)]
    feed(order("RESERVE", "BIG", 3990, t=2000))
    feed(order("RESERVE", "BIG", 4100, t=2001))
    feed(order("RELEASE", "BIG", t=2002))
    assert changes == [(None, IN_STOCK), (IN_STOCK, LOW_STOCK), (LOW_STOCK, OUT_OF_STOCK), (OUT_OF_STOCK, IN_STOCK)]


def test_a_key_at_rest_is_kept_as_its_snapshot_and_picks_up_where_it_was():
    clock = Clock(T0)
    lg = logic(clock)
    lg.on_batch([parse(wms("RECEIPT", qty=40, t=0))])
    alias, rec = order("RESERVE", "L1", 6, t=1)
    lg.on_batch([parse((alias, {**rec, "expires_at": T0 + 30 * MIN}))])
    live = lg.state.__getstate__()
    data = lg.snapshot()  # the end of an epoch: the state is packed into its snapshot
    assert lg.state is None and lg.snapshot() is data  # a second snapshot re-uses the bytes
    assert lg.notify_at().timestamp() * 1000 == T0 + 30 * MIN  # the wait survives packing
    resumed = PositionLogic(lg._ctx, data)  # a restart resumes the same bytes, packed too
    assert resumed.state is None and resumed.notify_at() == lg.notify_at()
    out, _ = lg.on_batch([parse(wms("ADJUST", qty=2, reason="x", t=2))])
    assert lg.state.__getstate__()[:-1] != live[:-1]  # unpacked, then changed
    assert [(p.available_qty, p.reserved, p.version) for p in out if isinstance(p, Position)] == [(42, 6, 3)]
    clock.ms = T0 + 30 * MIN
    out, _ = resumed.on_notify()  # the resumed copy expires the hold from its packed state
    assert [(p.reserved, p.version) for p in out if isinstance(p, Position)] == [(0, 3)]
