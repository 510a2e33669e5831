"""The simulator continued from existing positions: its snapshots equal the fold's on-hand at every
key, and a second run's ids never collide with the first's."""

from __future__ import annotations

from sandbox.simulator import Simulator
from state import events as ev
from state.fold import KeyState, apply
from state.position import position
from tests.builders import parse
from tests.reference import WINDOW_MS, fold_all


def snapshots_apart(items) -> int:
    """Snapshots whose on-hand differs from the fold's at their key when they arrive (each would be a drift)."""
    states: dict[str, KeyState] = {}
    apart = 0
    for item in items:
        for key, event in ev.fan_out(parse(item)):
            st = states.get(key)
            if st is None:
                st = states[key] = KeyState(event.sku, event.location)
            if type(event) is ev.InventorySnapshot:
                apart += position(st, 0, 0).on_hand != event.on_hand
            apply(st, event, WINDOW_MS)
    return apart


def second_run(first: Simulator, items, start: bool) -> list:
    second = Simulator(seed=42, skus=20, locations=3, start_ms=first.clock_ms, run="b")
    if start:
        second.start_from({(p.sku, p.location): (p.available_qty, p.non_sellable, p.reserved)
                           for p in fold_all(items).values()})
    return [second.next() for _ in range(3000)]


def test_a_run_started_from_the_positions_snapshots_the_stock_that_is_there():
    first = Simulator(seed=1, skus=20, locations=3, run="a")
    items = [first.next() for _ in range(3000)]
    assert snapshots_apart(items) == 0
    more = second_run(first, items, start=True)
    assert sum(alias == "snapshots" for alias, _ in more) > 30
    assert snapshots_apart(items + more) == 0
    # The same run from empty stock: what `atp simulate` did on top of the demo.
    assert snapshots_apart(items + second_run(first, items, start=False)) > 10


def ids(items) -> set[str]:
    fields = ("event_id", "order_line_id", "order_id", "transfer_id", "snapshot_id")
    return {f"{f}={rec[f]}" for _, rec in items for f in fields if rec.get(f)}


def test_runs_with_the_same_seed_make_the_same_events_under_their_own_ids():
    a, b = Simulator(seed=42, run="r1"), Simulator(seed=42, run="r2")
    one, two = [a.next() for _ in range(2000)], [b.next() for _ in range(2000)]
    assert not ids(one) & ids(two)
    plain = [{k: v for k, v in rec.items() if not k.endswith("_id")} for _, rec in one]
    assert plain == [{k: v for k, v in rec.items() if not k.endswith("_id")} for _, rec in two]
    assert Simulator(seed=3).next()[1]["event_id"] == "sim-3-1"  # no run: the ids as before (benchmarks, chaos)
