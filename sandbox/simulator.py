"""A seeded, realistic event stream: N SKUs with Zipf popularity x M locations.

Events are consistent with each other: ships and releases name lines that were reserved, transfers
arrive where they were sent, counts and snapshots are close to the simulated stock.

The simulated stock starts empty, or from the positions a keyspace already holds (``start_from``):
snapshots and counts describe the stock the simulation believes in, so on top of existing stock
they must start from it, or every one of them would be a drift (and a WMS one a rebase). ``run``
tags every id (events, order lines, transfers, snapshots), so a second run with the same seed is
new traffic rather than duplicates of the first, and its lines never reuse another run's.
"""

from __future__ import annotations

import itertools
import random
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from typing import Any

Event = tuple[str, dict[str, Any]]  # (topic alias, canonical record)

MIX = {
    "RESERVE": 26, "SHIP": 22, "RELEASE": 5, "RECEIPT": 14, "SHORT_PICK": 2, "ADJUST": 3, "COUNT": 3,
    "STATUS_MOVE": 4, "TRANSFER_OUT": 3, "TRANSFER_IN": 3, "RETURN": 3, "SNAPSHOT": 2,
}
REORDER_POINT = 150
CHANNELS = ("web", "marketplace", "edi", "inside-sales")


class Simulator:
    def __init__(self, seed: int = 42, skus: int = 200, locations: int = 4, zipf_s: float = 1.1,
                 start_ms: int = 1_767_225_600_000, step_ms: int = 10, run: str = "") -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self._tag = f"{run}-" if run else ""  # in every id this run makes
        self.skus = [f"SKU-{i:05d}" for i in range(1, skus + 1)]
        self.locations = [f"DC-{j:02d}" for j in range(1, locations + 1)]
        self._cum = list(itertools.accumulate(1.0 / (r + 1) ** zipf_s for r in range(skus)))
        self._kinds = list(MIX)
        self._kind_cum = list(itertools.accumulate(MIX.values()))
        self.stock: dict[tuple[str, str], int] = {}  # AVAILABLE units
        self.held: dict[tuple[str, str], int] = {}  # units in the non-sellable statuses
        self.reserved_before: dict[tuple[str, str], int] = {}  # open reservations it did not make
        self.last_ms: dict[tuple[str, str], int] = {}
        self.lines: dict[tuple[str, str], list[list[Any]]] = {}  # key -> [[line_id, qty, shipped]]
        self.in_transit: list[tuple[str, str, str, str, int]] = []  # (transfer_id, sku, from, to, qty)
        self.clock_ms = start_ms
        self.step_ms = step_ms
        self.seq = 0

    def start_from(self, positions: Mapping[tuple[str, str], tuple[int, int, int]]) -> None:
        """Continue from existing stock: (available, non-sellable, reserved) per (sku, location), as a
        published position has them. Those reservations stay open (their lines are not this run's)."""
        for key, (available, held, reserved) in positions.items():
            self.stock[key] = available
            self.held[key] = held
            self.reserved_before[key] = reserved

    def busiest(self, n: int) -> list[str]:
        """The n most popular SKUs (Zipf rank order)."""
        return self.skus[:n]

    def events(self, now_ms: Any = None) -> Iterator[Event]:
        """Endless stream; ``now_ms`` (a callable) stamps live events, else a fixed step clock."""
        while True:
            yield self.next(now_ms() if now_ms else None)

    def next(self, now_ms: int | None = None) -> Event:
        if now_ms is None:
            self.clock_ms += self.step_ms
            now_ms = self.clock_ms
        self.seq += 1
        rng = self.rng
        sku = self.skus[min(len(self.skus) - 1, bisect_right(self._cum, rng.random() * self._cum[-1]))]
        loc = rng.choice(self.locations)
        key = (sku, loc)
        kind = self._kinds[bisect_right(self._kind_cum, rng.random() * self._kind_cum[-1])]
        stock = self.stock.get(key, 0)
        if stock < 10 and kind not in ("TRANSFER_IN", "SNAPSHOT"):
            kind = "RECEIPT"
        elif kind == "RECEIPT" and stock > REORDER_POINT:
            kind = "SHIP"  # replenish only what sells, so stock stays realistic
        base = {"event_id": f"sim-{self.seed}-{self._tag}{self.seq}", "occurred_at": now_ms, "source": "simulator",
                "sku": sku, "location": loc}
        lines = self.lines.setdefault(key, [])
        if kind in ("SHIP", "RELEASE") and not lines:
            kind = "RESERVE"
        if kind == "RESERVE" and stock - self.reserved_before.get(key, 0) - sum(line[1] for line in lines) < 5:
            kind = "RECEIPT"  # channels only reserve what is sellable
        if kind == "TRANSFER_IN" and not self.in_transit:
            kind = "RECEIPT"
        alias, rec = getattr(self, "_" + kind.lower())(base, key, stock, lines)
        # Event time never stands still at a key (a live clock can repeat a millisecond), so a
        # snapshot's as_of splits the key's events cleanly into before and after.
        where = (rec["sku"], rec["location"])
        t = max(rec["occurred_at"], self.last_ms.get(where, 0) + 1)
        self.last_ms[where] = t
        rec["occurred_at"] = t
        if alias == "snapshots":
            rec["as_of"] = t
        return alias, rec

    # -- one method per event kind ---------------------------------------------------------
    def _receipt(self, base: dict[str, Any], key: Any, stock: int, lines: Any) -> Event:
        qty = self.rng.randint(20, 120)
        self.stock[key] = stock + qty
        return "wms", {**base, "event_type": "RECEIPT", "qty": qty, "to_status": "AVAILABLE"}

    def _reserve(self, base: dict[str, Any], key: Any, stock: int, lines: list[list[Any]]) -> Event:
        qty = self.rng.randint(1, 5)
        line_id = f"L{self._tag}{self.seq}"
        lines.append([line_id, qty, 0])
        return "orders", {**base, "event_type": "RESERVE", "order_id": f"O{self._tag}{self.seq}",
                          "order_line_id": line_id, "channel": self.rng.choice(CHANNELS), "qty": qty}

    def _ship(self, base: dict[str, Any], key: Any, stock: int, lines: list[list[Any]]) -> Event:
        line = lines.pop(self.rng.randrange(len(lines)))
        self.stock[key] = stock - line[1]
        return "wms", {**base, "event_type": "SHIP", "qty": line[1], "order_line_id": line[0]}

    def _release(self, base: dict[str, Any], key: Any, stock: int, lines: list[list[Any]]) -> Event:
        line = lines.pop(self.rng.randrange(len(lines)))
        return "orders", {**base, "event_type": "RELEASE", "order_id": "O" + line[0][1:], "order_line_id": line[0],
                          "channel": "web"}

    def _short_pick(self, base: dict[str, Any], key: Any, stock: int, lines: list[list[Any]]) -> Event:
        qty = self.rng.randint(1, 2)
        self.stock[key] = stock - qty
        line = lines[0][0] if lines else f"L{self._tag}{self.seq}"
        return "wms", {**base, "event_type": "SHORT_PICK", "qty": qty, "order_line_id": line}

    def _adjust(self, base: dict[str, Any], key: Any, stock: int, lines: Any) -> Event:
        qty = self.rng.choice((-3, -2, -1, 1, 2, 3))
        self.stock[key] = stock + qty
        return "wms", {**base, "event_type": "ADJUST", "qty": qty, "reason": "cycle-variance"}

    def _count(self, base: dict[str, Any], key: Any, stock: int, lines: Any) -> Event:
        counted = max(0, stock + self.rng.choice((-1, 0, 0, 0, 1)))
        self.stock[key] = counted
        return "wms", {**base, "event_type": "COUNT", "counted_qty": counted}

    def _status_move(self, base: dict[str, Any], key: Any, stock: int, lines: Any) -> Event:
        qty = self.rng.randint(1, 3)
        self.stock[key] = stock - qty
        self.held[key] = self.held.get(key, 0) + qty
        return "wms", {**base, "event_type": "STATUS_MOVE", "qty": qty, "from_status": "AVAILABLE",
                       "to_status": self.rng.choice(("QUARANTINE", "DAMAGED", "HOLD"))}

    def _transfer_out(self, base: dict[str, Any], key: Any, stock: int, lines: Any) -> Event:
        sku, loc = key
        others = [x for x in self.locations if x != loc]
        if not others:
            return self._receipt(base, key, stock, lines)
        to = self.rng.choice(others)
        qty = self.rng.randint(1, max(1, min(20, stock // 4)))
        tid = f"T{self._tag}{self.seq}"
        self.stock[key] = stock - qty
        self.in_transit.append((tid, sku, loc, to, qty))
        return "wms", {**base, "event_type": "TRANSFER_OUT", "qty": qty, "to_location": to, "transfer_id": tid}

    def _transfer_in(self, base: dict[str, Any], key: Any, stock: int, lines: Any) -> Event:
        tid, sku, src, dst, qty = self.in_transit.pop(0)
        self.stock[(sku, dst)] = self.stock.get((sku, dst), 0) + qty
        return "wms", {**base, "sku": sku, "location": dst, "event_type": "TRANSFER_IN", "qty": qty,
                       "from_location": src, "transfer_id": tid}

    def _return(self, base: dict[str, Any], key: Any, stock: int, lines: Any) -> Event:
        status = self.rng.choice(("AVAILABLE", "AVAILABLE", "DAMAGED"))
        qty = self.rng.randint(1, 2)
        if status == "AVAILABLE":
            self.stock[key] = stock + qty
        else:
            self.held[key] = self.held.get(key, 0) + qty
        return "wms", {**base, "event_type": "RETURN", "qty": qty, "to_status": status}

    def _snapshot(self, base: dict[str, Any], key: Any, stock: int, lines: Any) -> Event:
        on_hand = stock + self.held.get(key, 0)  # every status, as the ERP/WMS counts it
        return "snapshots", {**base, "snapshot_id": f"S{self._tag}{self.seq}", "on_hand": on_hand,
                             "as_of": base["occurred_at"], "source_system": self.rng.choice(("ERP", "WMS"))}

