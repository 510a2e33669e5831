"""Folding a list of events with the production fold, as the dataflow would (keyed, fanned out).

Every fold here is checked against the independent oracle (``loadtest.truth.oracle``): each scenario of
the fold's tests is also a test that the two implementations read the contract the same way.
"""

from __future__ import annotations

from typing import Any

from loadtest.truth.oracle import Oracle
from state import events as ev
from state.fold import KeyState, apply
from state.position import Position, position
from state.safety import SafetyStock
from tests.builders import parse

WINDOW_MS = 24 * 3_600_000


def fold_all(items: list[tuple[str, dict[str, Any]]], safety: SafetyStock | None = None) -> dict[str, Position]:
    safety = safety or SafetyStock()
    states: dict[str, KeyState] = {}
    for item in items:
        for key, event in ev.fan_out(parse(item)):
            st = states.get(key)
            if st is None:
                st = states[key] = KeyState(event.sku, event.location)
            apply(st, event, WINDOW_MS)
    positions = {k: position(st, safety.for_state(st), 0) for k, st in states.items()}
    assert_oracle_agrees(items, positions, safety)
    return positions


def oracle_of(items: list[tuple[str, dict[str, Any]]], safety: SafetyStock | None = None) -> Oracle:
    safety = safety or SafetyStock()
    oracle = Oracle(safety_by_location=dict(safety.locations), safety_by_key=dict(safety.items))
    for alias, rec in items:
        why = oracle.feed(alias, rec)
        assert why is None, f"the oracle rejects a record the fold accepted: {why}: {rec}"
    return oracle


def assert_oracle_agrees(items: list[tuple[str, dict[str, Any]]], positions: dict[str, Position],
                         safety: SafetyStock) -> None:
    expected = oracle_of(items, safety).positions()
    assert set(expected) == set(positions)
    for key, p in positions.items():
        assert quantities(p) == expected[key].fields() | {"sku": p.sku, "location": p.location}, key


def quantities(p: Position) -> dict[str, int]:
    """A position without processing time, for comparing folds."""
    d = p.as_dict()
    d.pop("updated_at")
    return d
