"""Folding a list of events with the production fold, as the dataflow would (keyed, fanned out)."""

from __future__ import annotations

from typing import Any

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
    return {k: position(st, safety.for_key(st.sku, st.location), 0) for k, st in states.items()}


def quantities(p: Position) -> dict[str, int]:
    """A position without processing time, for comparing folds."""
    d = p.as_dict()
    d.pop("updated_at")
    return d
