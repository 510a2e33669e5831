"""Safety-stock controls from ``atp.controls.v1``: each location's directory of SKUs, which hands
every location-wide control to every key of the location.

A control for one item is keyed ``sku@location`` and goes straight to its key, like any event.
A location's default (``sku`` null, keyed by the location) must reach every key there, including
keys that appear later, and Bytewax has no broadcast: a stateful step keyed by location learns the
location's SKUs from the input (summed per batch, so it sees one set per location per batch, not
one item per event) and sends a copy of each location-wide control to each key.

Every key receives every location-wide control of its location, whenever either appears, and keeps
the newest (``occurred_at``, then ``event_id``): the result does not depend on arrival order, and a
replay gives every key the same controls, so the same versions.
"""

from __future__ import annotations

from dataclasses import replace
from sys import intern
from typing import Any, TypeGuard

from bytewax.operators import StatefulBatchLogic

from dataflows import metrics
from state.events import SafetyStockSet, make_key

DirectoryInput = set[str] | SafetyStockSet  # a batch's SKUs at the location, or a control
Copy = tuple[str, SafetyStockSet]  # (sku@location, the control with the key's sku)


def is_location_control(item: tuple[str, Any]) -> TypeGuard[tuple[str, SafetyStockSet]]:
    event = item[1]
    return type(event) is SafetyStockSet and event.sku is None


def skus_by_location(batch: list[tuple[str, Any]]) -> list[tuple[str, set[str]]]:
    """The SKUs of one batch of (key, event), one set per location."""
    found: dict[str, set[str]] = {}
    for _, event in batch:
        skus = found.get(event.location)
        if skus is None:
            skus = found[event.location] = set()
        skus.add(intern(event.sku))  # shared with the keys' states (state.fold.KeyState)
    return list(found.items())


class LocationDirectory(StatefulBatchLogic[DirectoryInput, Copy, Any]):
    """One location: the SKUs seen there and the location-wide controls received."""

    def __init__(self, topic: str, resume: Any | None) -> None:
        self._topic = topic
        skus, controls = resume if resume is not None else (set(), {})
        self.skus: set[str] = skus
        self.controls: dict[str, SafetyStockSet] = controls  # event_id -> control
        self._snapshot: tuple[set[str], dict[str, SafetyStockSet]] | None = None

    def on_batch(self, values: list[DirectoryInput]) -> tuple[list[Copy], bool]:
        out: list[Copy] = []
        changed = False
        for v in values:
            if type(v) is SafetyStockSet:
                fresh = v.event_id not in self.controls
                metrics.EVENTS.inc((self._topic, "SAFETY_STOCK_SET", "applied" if fresh else "duplicate"))
                if fresh:
                    self.controls[v.event_id] = v
                    out.extend(_copy(v, sku) for sku in self.skus)
                    changed = True
                continue
            new = v - self.skus
            if new:
                self.skus |= new
                changed = True
                for ctl in self.controls.values():
                    out.extend(_copy(ctl, sku) for sku in new)
        if changed:
            self._snapshot = None
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> Any:
        # Bytewax snapshots every key touched in an epoch, and a location is touched by almost
        # every batch: copy its set only when it changed.
        if self._snapshot is None:
            self._snapshot = (set(self.skus), dict(self.controls))
        return self._snapshot


def _copy(ctl: SafetyStockSet, sku: str) -> Copy:
    return make_key(sku, ctl.location), replace(ctl, sku=sku)
