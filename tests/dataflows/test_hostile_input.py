"""Valid-but-hostile records: extreme quantities, impossible times, shared ids, a step that raises.

Each of these stopped or corrupted the stream before: the flow died on an OverflowError encoding
the availability feed (and again on every restart), a year-10000 date reached Redis, a snapshot
from the future absorbed every change before its ``as_of``, and a control and a receipt sharing
an ``event_id`` silently dropped one of them.
"""

from __future__ import annotations

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from dataflows import logic, timers
from dataflows.decode import TimeRules
from dataflows.flow import FlowDeps, FlowIO, build_flow, deps_from_settings
from dataflows.guard import guarded
from state import limits
from state.errors import InvalidEvent
from state.fold import APPLIED, KeyState, apply
from state.position import Position
from tests.builders import T0, control, order, parse, snapshot, wms
from tests.dataflows.test_flow import SETTINGS, message

MAX_QTY, MAX_FIGURE = limits.MAX_QTY, limits.MAX_FIGURE
YEAR_10000_MS = 253_402_300_800_000


def run(msgs, deps: FlowDeps | None = None):
    redis, out = [], []
    flow = build_flow(FlowIO(TestingSource(msgs), TestingSink(redis), TestingSink(out)),
                      deps or deps_from_settings(SETTINGS))
    run_main(flow)
    dead = [m for m in out if m.topic == SETTINGS.topic_dead_letter]
    return [p for p in redis if type(p) is Position], dead, out


def reasons(dead):
    return [dict(m.headers)["atp.error.reason"].decode() for m in dead]


# -- bounds in the contract ----------------------------------------------------------------------

@pytest.mark.parametrize("item, field", [
    (wms("RECEIPT", qty=MAX_QTY + 1), "qty"),
    (wms("ADJUST", qty=-MAX_QTY - 1, reason="r"), "qty"),
    (wms("SHIP", qty=2**63 - 1, order_line_id="L"), "qty"),
    (wms("COUNT", counted_qty=MAX_FIGURE + 1), "counted_qty"),
    (order("RESERVE", "L1", MAX_QTY + 1), "qty"),
    (snapshot(MAX_FIGURE + 1), "on_hand"),
    (snapshot(-MAX_FIGURE - 1), "on_hand"),
    (control(MAX_QTY + 1), "safety_stock"),
])
def test_a_quantity_beyond_its_range_is_out_of_range(item, field):
    with pytest.raises(InvalidEvent) as err:
        parse(item)
    assert err.value.reason == "out_of_range" and field in str(err.value)


def test_the_largest_quantities_in_range_are_accepted():
    assert parse(wms("RECEIPT", qty=MAX_QTY)).qty == MAX_QTY
    assert parse(wms("ADJUST", qty=-MAX_QTY, reason="r")).qty == -MAX_QTY
    assert parse(wms("COUNT", counted_qty=MAX_FIGURE)).qty == MAX_FIGURE
    assert parse(snapshot(-MAX_FIGURE)).on_hand == -MAX_FIGURE


def test_an_expiry_no_date_can_hold_is_out_of_range_and_a_control_character_in_an_id_is_invalid():
    alias, rec = order("RESERVE", "L1", 1)
    with pytest.raises(InvalidEvent) as err:
        parse((alias, {**rec, "expires_at": YEAR_10000_MS}))
    assert err.value.reason == "out_of_range"
    with pytest.raises(InvalidEvent) as err:
        parse(wms("RECEIPT", qty=1, event_id="a\x1fb"))
    assert err.value.reason == "invalid_id"


def test_group_and_network_sums_stay_exact_for_javascript():
    # The per-key bound leaves room for MAX_SUMMED_KEYS keys in one sum.
    assert limits.MAX_SUMMED_KEYS * MAX_FIGURE <= limits.JS_MAX
    assert 2 * MAX_FIGURE + MAX_QTY <= limits.JS_MAX  # a drift difference, snapshot minus stream


def test_a_group_larger_than_a_sum_can_hold_is_refused_at_start():
    from core.config import load_settings
    from core.errors import ConfigError

    members = [f"DC-{i}" for i in range(limits.MAX_SUMMED_KEYS + 1)]
    with pytest.raises(ConfigError, match="split it"):
        load_settings({"ATP_LOCATION_GROUPS": '{"ALL": ' + str(members).replace("'", '"') + "}"})


def test_a_sum_that_would_leave_the_range_is_refused_and_the_flow_goes_on():
    """The defect: ten receipts of the largest quantity and one more unit stopped the flow (an
    OverflowError while encoding the availability feed) on every restart."""
    big = [wms("RECEIPT", qty=MAX_QTY) for _ in range(10)]  # exactly MAX_FIGURE
    one_more = wms("RECEIPT", qty=1)
    after = wms("ADJUST", qty=-5, reason="count correction")
    other_key = wms("RECEIPT", qty=7, sku="SKU-2")
    msgs = [message(it, i) for i, it in enumerate([*big, one_more, after, other_key])]
    positions, dead, out = run(msgs)
    assert reasons(dead) == ["out_of_range"]
    headers = dict(dead[0].headers)
    assert headers["atp.error.step"] == b"atp_fold" and headers["atp.source.offset"] == b"10"
    assert dead[0].value == msgs[10].value  # the original record, unchanged
    last = {p.key: p for p in positions}
    assert last["SKU-1@DC-01"].available_qty == MAX_FIGURE - 5  # the refused unit is not in it
    assert last["SKU-2@DC-01"].available_qty == 7
    feed = [m for m in out if m.topic == SETTINGS.topic_availability]
    assert len(feed) == len(positions)


def test_the_range_holds_after_every_event_not_only_at_the_end_of_a_batch():
    # One batch: the receipt takes AVAILABLE past the range, the ship would bring it back. The
    # rule is per event (as the oracle applies it), so the receipt is refused and the ship counts.
    items = [wms("RECEIPT", qty=MAX_QTY) for _ in range(10)] + [wms("RECEIPT", qty=1), wms("SHORT_PICK", qty=1, order_line_id="L")]
    positions, dead, _ = run([message(it, i) for i, it in enumerate(items)])
    assert reasons(dead) == ["out_of_range"] and dict(dead[0].headers)["atp.source.offset"] == b"10"
    assert max(positions, key=lambda p: p.version).available_qty == MAX_FIGURE - 1


def test_a_shortfall_beyond_the_range_is_refused_for_that_event_only():
    # Safety stock and a reservation each in range; their sum against a negative AVAILABLE is not.
    items = [wms("ADJUST", qty=-MAX_QTY, reason="r") for _ in range(10)]  # AVAILABLE = -MAX_FIGURE
    items += [control(MAX_QTY, sku="SKU-1"), order("RESERVE", "L1", 3)]
    positions, dead, _ = run([message(it, i) for i, it in enumerate(items)])
    assert reasons(dead) == ["out_of_range", "out_of_range"]
    final = max(positions, key=lambda p: p.version)
    assert (final.available_qty, final.shortfall, final.safety_stock, final.reserved) == (-MAX_FIGURE, MAX_FIGURE, 0, 0)


# -- event time ----------------------------------------------------------------------------------

def test_an_event_from_the_future_or_before_2000_is_clock_skew():
    now = T0 + 1_000
    rules = dict(now_ms=now, skew_ms=limits.DEFAULT_SKEW_MS)
    limits.times("RECEIPT", now + limits.DEFAULT_SKEW_MS, **rules)  # at the bound: fine
    limits.times("RECEIPT", limits.EARLIEST_MS + 1, **rules)  # a replay of a 2000 log: fine
    for t in (now + limits.DEFAULT_SKEW_MS + 1, YEAR_10000_MS, limits.EARLIEST_MS - 1, 1):
        with pytest.raises(InvalidEvent) as err:
            limits.times("RECEIPT", t, **rules)
        assert err.value.reason == "clock_skew"
    with pytest.raises(InvalidEvent, match="cannot describe the future"):
        limits.times("InventorySnapshot", now - 86_400_000, as_of_ms=now, **rules)  # as_of a day after occurred_at


def test_future_dated_records_go_to_the_dead_letter_topic_and_move_nothing():
    """The defects: a year-10000 event reached Redis (500 on every read of the key), and one
    event dated far ahead moved the key's newest time, so a retried ordinary event was applied
    twice and every later change counted as late."""
    day = 86_400_000
    receipt = wms("RECEIPT", qty=10, event_id="r1")
    ahead = wms("RECEIPT", qty=1, t=2 * day)  # two days ahead of the clock
    year_10000 = wms("RECEIPT", qty=1)
    year_10000[1]["occurred_at"] = YEAR_10000_MS
    local_time_snapshot = snapshot(0)
    local_time_snapshot[1]["as_of"] += day  # a WMS sending local time as UTC
    retry = receipt  # a producer retry, a day later in processing order
    items = [receipt, ahead, year_10000, local_time_snapshot, retry]
    deps = deps_from_settings(SETTINGS)
    clock = TimeRules(limits.DEFAULT_SKEW_MS, limits.EARLIEST_MS, clock=lambda: (T0 + 60_000) / 1000)
    deps = FlowDeps(**{**deps.__dict__, "decode": type(deps.decode)(
        deps.decode._decoder, SETTINGS.input_topics, times=clock)})
    positions, dead, _ = run([message(it, i) for i, it in enumerate(items)], deps)
    assert reasons(dead) == ["clock_skew", "clock_skew", "clock_skew"]
    assert [(p.available_qty, p.as_of) for p in positions] == [(10, T0)]


# -- dedup identity ------------------------------------------------------------------------------

def test_records_of_different_types_sharing_an_event_id_are_all_applied():
    st = KeyState("SKU-1", "DC-01")
    shared = "shared-id"
    events = [parse(wms("RECEIPT", qty=5, event_id=shared)), parse(order("RESERVE", "L1", 2, event_id=shared)),
              parse(control(1, sku="SKU-1", event_id=shared)), parse(snapshot(5, event_id=shared))]
    assert [apply(st, e, 10**9) for e in events] == [APPLIED] * 4
    assert (st.buckets[0], st.reserved, st.version) == (5, 2, 4)
    assert apply(st, parse(wms("RECEIPT", qty=5, event_id=shared)), 10**9) != APPLIED  # same type: a duplicate


def test_a_location_wide_control_and_a_receipt_sharing_an_id_both_count_in_the_flow():
    items = [wms("RECEIPT", qty=9, event_id="x1"), control(4, event_id="x1")]
    positions, dead, _ = run([message(it, i) for i, it in enumerate(items)])
    final = max(positions, key=lambda p: p.version)
    assert not dead and (final.available_qty, final.safety_stock, final.atp) == (9, 4, 5)


# -- errors are data after decode ----------------------------------------------------------------

def test_an_event_that_raises_in_the_fold_is_a_dead_letter_and_the_rest_of_its_batch_applies(monkeypatch):
    real = logic.apply

    def failing(state, event, *args):
        if event.event_id == "poison":
            raise ZeroDivisionError("a bug nobody imagined")
        return real(state, event, *args)

    monkeypatch.setattr(logic, "apply", failing)
    items = [wms("RECEIPT", qty=5), wms("RECEIPT", qty=1, event_id="poison"), wms("RECEIPT", qty=2)]
    positions, dead, _ = run([message(it, i) for i, it in enumerate(items)])
    assert reasons(dead) == ["step_error"]
    headers = dict(dead[0].headers)
    assert headers["atp.error.class"] == b"ZeroDivisionError" and headers["atp.error.step"] == b"atp_fold"
    assert b"a bug nobody imagined" in headers["atp.error.message"]
    final = max(positions, key=lambda p: p.version)
    assert (final.available_qty, final.version) == (7, 2)  # the key as if the poison never came


def test_an_output_that_fails_to_encode_is_a_dead_letter_not_a_crash():
    deps = deps_from_settings(SETTINGS)

    def boom(item):
        raise OverflowError("int too big to convert")

    step = guarded("availability_message", boom, deps.dead_letter)
    p = Position("SKU-1", "DC-01", 1, 1, 1, 0, 0, 0, 0, 0, 1, T0, T0)
    [msg] = step(p)
    headers = dict(msg.headers)
    assert msg.topic == SETTINGS.topic_dead_letter and msg.key == b"SKU-1@DC-01"
    assert headers["atp.error.reason"] == b"step_error" and headers["atp.error.step"] == b"availability_message"
    assert headers["atp.error.class"] == b"OverflowError"


def test_a_refused_batch_goes_back_to_exactly_the_state_before_it():
    """The key goes back through its packed bytes and the journal of batches since (no copy per
    batch): the state after a refused batch is the one the accepted batches alone make, including
    what depended on the clock (a snapshot's arrival, a reservation's expiry)."""
    import pickle
    from dataclasses import replace as copy_of

    from state.packing import pack

    ctx = deps_from_settings(SETTINGS).fold
    clock = [T0 / 1000]
    ctx = copy_of(ctx, clock=lambda: clock[0], stock_progress=lambda: 0)
    reserve = order("RESERVE", "L1", 4)
    reserve[1]["expires_at"] = T0 + 30_000
    batches = [[wms("RECEIPT", qty=10)], [reserve, snapshot(10)], [wms("SHIP", qty=1, order_line_id="L9")]]
    batches += [[wms("ADJUST", qty=1, reason="r")] for _ in range(logic.JOURNAL_MAX + 3)]  # past a journal cut
    good, guarded_logic = logic.PositionLogic(ctx, None), logic.PositionLogic(ctx, None)
    for i, batch in enumerate(batches):
        clock[0] = (T0 + i * 1000) / 1000  # the reservation expires along the way
        for lg in (good, guarded_logic):
            lg.on_batch([parse(it) for it in batch])
    bad = [parse(wms("ADJUST", qty=2, reason="r")), parse(wms("RECEIPT", qty=MAX_QTY))] + [
        parse(wms("ADJUST", qty=MAX_QTY, reason="r")) for _ in range(9)]
    out, _ = guarded_logic.on_batch(bad)
    assert [type(o).__name__ for o in out].count("DeadLetter") == 1  # the last: AVAILABLE would pass 10^13
    good.on_batch(bad[:-1])
    # Equal as values (the bytes can differ in pickle's sharing of equal strings).
    assert pickle.loads(pack(guarded_logic.state)) == pickle.loads(pack(good.state))


def _values(st) -> dict:
    import pickle

    from state.packing import pack

    return dict(zip(KeyState.__slots__, pickle.loads(pack(st))))


def _timed_logic(progress: int = 0):
    from dataclasses import replace as copy_of

    clock = [T0 / 1000]
    ctx = copy_of(deps_from_settings(SETTINGS).fold, clock=lambda: clock[0], stock_progress=lambda: progress)
    return logic.PositionLogic(ctx, None), clock


def test_a_snapshot_whose_rebase_would_leave_the_range_is_refused_and_later_events_apply():
    """Each field of the snapshot is in range; its rebase under an open reservation is not. Due
    on a timer: the snapshot is refused and the key stays as it was."""
    lg, clock = _timed_logic()
    lg.on_batch([parse(wms("RECEIPT", qty=10)), parse(order("RESERVE", "L1", 5))])
    low = snapshot(-MAX_FIGURE)
    low[1]["source_system"] = "WMS"  # rebased, not only alerted
    lg.on_batch([parse(low)])
    clock[0] += 61  # past the reconcile timeout
    before = _values(lg.state)
    out, _ = lg.on_notify()
    assert [type(o).__name__ for o in out] == ["DeadLetter"]
    assert out[0].reason == "out_of_range" and out[0].step == "atp_fold"
    assert lg.state.pending == () and lg.state.buckets[0] == 10  # not rebased, not waiting
    assert _values(lg.state) == {**before, "pending": ()}  # every other field exactly as before
    out, _ = lg.on_batch([parse(wms("RECEIPT", qty=3))])
    [pos] = [o for o in out if type(o) is Position]
    assert (pos.available_qty, pos.reserved, pos.atp) == (13, 5, 8)


def test_a_snapshot_out_of_range_due_in_a_batch_is_refused_alone():
    """The defect: due in a batch, the waiting snapshot took the batch's events down with it, and
    every later event of the key was refused too until a timer dropped the snapshot."""
    lg, clock = _timed_logic()
    lg.on_batch([parse(wms("RECEIPT", qty=10)), parse(order("RESERVE", "L1", 5))])
    low = snapshot(-MAX_FIGURE)
    low[1]["source_system"] = "WMS"
    lg.on_batch([parse(low)])
    clock[0] += 61
    out, _ = lg.on_batch([parse(wms("RECEIPT", qty=3, t=1))])  # the snapshot is due in this batch
    assert [o.reason for o in out if type(o).__name__ == "DeadLetter"] == ["out_of_range"]
    [pos] = [o for o in out if type(o) is Position]
    assert (pos.available_qty, pos.reserved) == (13, 5)


def test_under_formula_2_atp_stays_in_range_when_the_reservations_lapse():
    """The defect: every event was in range, but under formula 2 (available + inbound - reserved)
    the reservations lapsing on a timer took ATP to 1.8 x 10^13; the timer failed every minute and
    every later event of the key was refused. Now the inbound that makes that possible is refused."""
    from dataclasses import replace as copy_of

    from state.events import TransferSent

    q = MAX_QTY
    lg, clock = _timed_logic()
    lg._ctx = copy_of(lg._ctx, formula=2)
    lg.on_batch([parse(wms("RECEIPT", qty=q)) for _ in range(9)])
    reserves = [order("RESERVE", f"L{i}", q) for i in range(9)]
    for r in reserves:
        r[1]["expires_at"] = T0 + 10_000
    lg.on_batch([parse(r) for r in reserves])
    out, _ = lg.on_batch([TransferSent(f"t{i}", T0, "SKU-1", "DC-01", f"T{i}", q) for i in range(9)])
    assert [o.reason for o in out if type(o).__name__ == "DeadLetter"] == ["out_of_range"] * 8
    clock[0] = (T0 + 11_000) / 1000
    out, _ = lg.on_notify()  # the reservations lapse
    [pos] = [o for o in out if type(o) is Position]
    assert (pos.reserved, pos.inbound, pos.atp) == (0, q, MAX_FIGURE)


def test_a_timer_that_fails_with_nothing_to_drop_does_not_fire_again_at_once(monkeypatch, caplog):
    """The defect: a timer that raised with no snapshot waiting (a lapsed reservation, a
    re-publish) kept its due time in the past, so it fired and failed again every time."""
    lg, clock = _timed_logic()
    reserve = order("RESERVE", "L1", 4)
    reserve[1]["expires_at"] = T0 + 10_000
    lg.on_batch([parse(wms("RECEIPT", qty=10)), parse(reserve)])
    clock[0] += 11

    real = timers.expire

    def failing(state, now_ms):
        if now_ms >= T0 + 10_000:  # a bug that shows only once the reservation has lapsed
            raise ZeroDivisionError("a bug in expiry")
        return real(state, now_ms)

    monkeypatch.setattr(timers, "expire", failing)
    out, _ = lg.on_notify()
    assert out == []  # nothing was read that could be a dead letter
    assert any("timer of SKU-1@DC-01 failed" in r.getMessage() for r in caplog.records)
    due = lg.notify_at()
    assert due is None or due.timestamp() > clock[0]  # not due again now
    monkeypatch.undo()
    clock[0] = due.timestamp()
    out, _ = lg.on_notify()  # tried again later: the reservation is released
    [pos] = [o for o in out if type(o) is Position]
    assert pos.reserved == 0


def test_a_refused_batch_after_a_re_publish_goes_back_to_exactly_the_state_before_it():
    """The defect: the re-publish of a lost keyspace was not in the key's journal, so going back
    replayed that timer without its publish, and lost what the publish had set (here the confirmed
    shortfall that the safety stock raised at the restart)."""
    import pickle
    from dataclasses import replace as copy_of

    from dataflows.republish import REPUBLISH
    from state.packing import pack
    from state.safety import SafetyStock

    lg, clock = _timed_logic()
    lg.on_batch([parse(wms("RECEIPT", qty=3))])
    resume = lg.snapshot()
    ctx = copy_of(lg._ctx, safety=SafetyStock(items={"SKU-1@DC-01": 5}))  # raised at the restart
    REPUBLISH.reset(active=True)
    try:
        good, guarded_logic = logic.PositionLogic(ctx, resume), logic.PositionLogic(ctx, resume)
        for lgc in (good, guarded_logic):
            lgc.on_notify()
    finally:
        REPUBLISH.reset(active=False)
    assert good.state.short  # the shortfall the restart made is confirmed (an oversold alert)
    bad = [parse(wms("ADJUST", qty=-1, reason="r"))] + [parse(wms("RECEIPT", qty=MAX_QTY)) for _ in range(10)]
    out, _ = guarded_logic.on_batch(bad)
    expected, _ = good.on_batch(bad[:-1])
    def alerts(outs):
        return [o.kind for o in outs if type(o).__name__ == "Alert"]

    assert alerts(expected) == [] and alerts(out) == []  # the shortfall was alerted once, at the re-publish
    assert pickle.loads(pack(guarded_logic.state)) == pickle.loads(pack(good.state))
