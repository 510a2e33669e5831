"""An independent oracle: the expected position of every key, recomputed from the event log.

Written from the contract in docs/contract.md, not from ``state/`` (it imports nothing of it), and in a
different style on purpose: it validates each record with its own rules, keeps every accepted
event of a key in a list, and computes the position from that list only when asked. If it and the
production fold ever disagree, one of them misreads the contract.

Feed records in topic/partition/offset order (``feed``); read positions with ``positions``.

The contract's ranges (docs/contract.md, docs/contract-limits.md) are checked here with their own code: an
event moving more than 10^12 units, a level beyond 10^13, a time before 2000 or more than the skew
ahead of the clock is rejected; an event after which one of its key's figures would be beyond
±10^13 is rejected at that key (the key as if it never came). Not modelled: a location-wide
control refused at one key only (the oracle applies a location's control to all its keys).
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, TypeGuard

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_STATUSES = ("AVAILABLE", "QUARANTINE", "DAMAGED", "HOLD")
_TOPIC_OF_TYPE = {
    **dict.fromkeys(("RECEIPT", "SHIP", "SHORT_PICK", "ADJUST", "COUNT", "STATUS_MOVE", "TRANSFER_OUT", "TRANSFER_IN", "RETURN"), "wms"),
    "RESERVE": "orders", "RELEASE": "orders",
}


_QTY = 1_000_000_000_000  # docs/contract.md: |units| one event moves
_LEVEL = 10_000_000_000_000  # docs/contract.md: |a level an event sets| and |a key's figures|
_Y2000_MS = 946_684_800_000
_SKEW_MS = 300_000
_FIGURES = ("available_qty", "non_sellable", "on_hand", "reserved", "inbound", "safety_stock", "atp", "shortfall")


class Rejected(Exception):
    """The record breaks the contract; the dataflow must dead-letter it."""


def _need(cond: bool, why: str) -> None:
    if not cond:
        raise Rejected(why)


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_control(rec: dict[str, Any], key: str | None) -> None:
    for name in ("event_id", "location"):
        _need(isinstance(rec.get(name), str) and rec[name] != "", f"{name} missing")
    _need(len(rec["event_id"]) <= 200, "event_id too long")
    _need(_is_int(rec.get("occurred_at")) and rec["occurred_at"] > 0, "bad occurred_at")
    sku = rec.get("sku")
    _need(bool(_ID.match(rec["location"])) and (sku is None or (isinstance(sku, str) and bool(_ID.match(sku)))),
          "bad sku or location")
    value = rec.get("safety_stock")
    _need(value is None or (_is_int(value) and value >= 0), "safety_stock must be >= 0 or null")
    if key is not None:
        _need(key == (rec["location"] if sku is None else f"{sku}@{rec['location']}"), "key is not the control's scope")


def _in(v: Any, lo: int, hi: int) -> bool:
    return _is_int(v) and lo <= v <= hi


def _check_ranges(alias: str, rec: dict[str, Any], now_ms: int) -> None:
    _need(rec["event_id"].isprintable(), "event_id has control characters")
    times = [rec["occurred_at"]] + ([rec["as_of"]] if alias == "snapshots" else [])
    _need(all(_Y2000_MS <= t <= now_ms + _SKEW_MS for t in times), "clock_skew")
    if alias == "snapshots":
        _need(rec["as_of"] <= rec["occurred_at"] + _SKEW_MS, "clock_skew: as_of after occurred_at")
        _need(_in(rec["on_hand"], -_LEVEL, _LEVEL), "on_hand out of range")
    elif alias == "controls":
        _need(rec.get("safety_stock") is None or rec["safety_stock"] <= _QTY, "safety_stock out of range")
    elif rec.get("event_type") == "COUNT":
        _need(rec["counted_qty"] <= _LEVEL, "counted_qty out of range")
    elif rec.get("event_type") != "RELEASE":
        _need(abs(rec["qty"]) <= _QTY, "qty out of range")
        expires = rec.get("expires_at")
        _need(expires is None or _in(expires, 0, 253_402_300_799_000), "expires_at out of range")


def check(alias: str, rec: dict[str, Any], key: str | None = None, now_ms: int | None = None) -> None:
    """Raise ``Rejected`` unless the record is a valid event of the topic ``alias``, read at ``now_ms``."""
    _check_fields(alias, rec, key)
    _check_ranges(alias, rec, int(time.time() * 1000) if now_ms is None else now_ms)


def _check_fields(alias: str, rec: dict[str, Any], key: str | None) -> None:
    if alias == "controls":
        _check_control(rec, key)
        return
    for name in ("event_id", "sku", "location"):
        _need(isinstance(rec.get(name), str) and rec[name] != "", f"{name} missing")
    _need(len(rec["event_id"]) <= 200, "event_id too long")
    _need(bool(_ID.match(rec["sku"])) and bool(_ID.match(rec["location"])), "bad sku or location")
    _need(_is_int(rec.get("occurred_at")) and rec["occurred_at"] > 0, "bad occurred_at")
    if key is not None:
        _need(key == f"{rec['sku']}@{rec['location']}", "key is not sku@location")
    if alias == "snapshots":
        _need(rec.get("source_system") in ("ERP", "WMS"), "bad source_system")
        _need(isinstance(rec.get("snapshot_id"), str) and rec["snapshot_id"] != "", "snapshot_id missing")
        _need(_is_int(rec.get("on_hand")) and _is_int(rec.get("as_of")), "bad on_hand or as_of")
        return
    kind: Any = rec.get("event_type")  # whatever the record holds (None: nothing)
    _need(_TOPIC_OF_TYPE.get(kind) == alias, f"{kind} is not an event of {alias}")
    qty = rec.get("qty")
    if alias == "orders":
        for name in ("order_id", "order_line_id", "channel"):
            _need(isinstance(rec.get(name), str) and rec[name] != "", f"{name} missing")
        if kind == "RESERVE":
            _need(_is_int(qty) and qty >= 0, "RESERVE qty must be >= 0")
        return
    if kind == "COUNT":
        _need(_is_int(rec.get("counted_qty")) and rec["counted_qty"] >= 0, "counted_qty must be >= 0")
        return
    if kind == "ADJUST":
        _need(_is_int(qty) and qty != 0, "ADJUST qty must be non-zero")
        _need(isinstance(rec.get("reason"), str) and rec["reason"] != "", "reason missing")
        return
    _need(_is_int(qty) and qty > 0, f"{kind} qty must be > 0")
    if kind in ("SHIP", "SHORT_PICK"):
        _need(isinstance(rec.get("order_line_id"), str) and rec["order_line_id"] != "", "order_line_id missing")
    if kind in ("RECEIPT", "RETURN", "STATUS_MOVE"):
        to = rec.get("to_status") or ("AVAILABLE" if kind == "RECEIPT" else None)
        _need(to in _STATUSES, "bad to_status")
    if kind == "STATUS_MOVE":
        _need(rec.get("from_status") in _STATUSES and rec["from_status"] != rec["to_status"], "bad from_status")
    if kind in ("TRANSFER_OUT", "TRANSFER_IN"):
        other = rec.get("to_location" if kind == "TRANSFER_OUT" else "from_location")
        _need(isinstance(other, str) and bool(_ID.match(other)) and other != rec["location"], "bad other location")
        _need(isinstance(rec.get("transfer_id"), str) and rec["transfer_id"] != "", "transfer_id missing")


@dataclass
class Expected:
    """One key's expected position (the same field names as the API and Redis)."""

    sku: str
    location: str
    available_qty: int
    non_sellable: int
    on_hand: int
    reserved: int
    inbound: int
    safety_stock: int
    atp: int
    shortfall: int
    version: int
    as_of: int
    formula_version: int = 1
    demand_per_min_5m: float = 0.0
    demand_per_min_60m: float = 0.0
    stockout_eta_minutes: float | None = None

    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("sku", "location")}


@dataclass
class Oracle:
    """Keeps every accepted event per key; ``positions`` folds them from scratch."""

    safety_by_location: dict[str, int] = field(default_factory=dict)
    safety_by_key: dict[str, int] = field(default_factory=dict)
    formula: int = 1  # docs/contract.md: 1 promises AVAILABLE only, 2 also what is in transit to the location
    lateness_ms: int = 15 * 60_000  # docs/contract.md: a stock change older than this takes effect at the window's edge
    log: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))
    # docs/contract.md: a location's default control reaches every key there; the newest occurred_at wins
    location_controls: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    # docs/contract.md: the dedup identity is (record type, event_id); the topic alias names the type here
    ids: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    now_ms: int | None = None  # when the records are read (None: the wall clock at each feed)
    # Sums of |quantities| per key: while it is below the range no figure can leave it, and the
    # exact check (a position per event) is skipped.
    mass: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    accepted = 0
    duplicates = 0
    rejected = 0

    def feed(self, alias: str, rec: dict[str, Any], key: str | None = None) -> str | None:
        """Take one record; returns why it was rejected, or None."""
        try:
            check(alias, rec, key, self.now_ms)
        except Rejected as exc:
            self.rejected += 1
            return str(exc)
        if alias == "controls" and rec.get("sku") is None:
            known = self.location_controls[rec["location"]]
            if rec["event_id"] in known:
                self.duplicates += 1
            else:
                known[rec["event_id"]] = rec
                self.accepted += 1
            return None
        own = f"{rec['sku']}@{rec['location']}"
        targets = [(own, alias, rec)]
        if rec.get("event_type") == "TRANSFER_OUT":  # the receiving side learns what is on its way
            targets.append((f"{rec['sku']}@{rec['to_location']}", "transfer-sent", rec))
        fresh = (alias, rec["event_id"]) not in self.ids[own]
        refused = None
        for k, kind, r in targets:
            if (kind, r["event_id"]) not in self.ids[k]:
                self.log[k].append((kind, r))
                why = self._out_of_range(k, kind, r)
                if why is not None:  # the key as if the event never came
                    self.log[k].pop()
                    refused = refused or why
                    continue
                self.ids[k].add((kind, r["event_id"]))
        if refused is not None and fresh:
            self.rejected += 1
            return refused
        if fresh:
            self.accepted += 1
        else:
            self.duplicates += 1
        return None

    def _out_of_range(self, key: str, kind: str, rec: dict[str, Any]) -> str | None:
        """Why the key's position after ``rec`` (the last of its log) leaves the range, or None."""
        size = sum(abs(rec.get(f) or 0) for f in ("qty", "counted_qty", "on_hand", "safety_stock"))
        self.mass[key] += size
        if self.mass[key] + _QTY <= _LEVEL:
            return None
        expected = self._position(key, self.log[key])
        bad = [f for f in _FIGURES if abs(getattr(expected, f)) > _LEVEL]
        # docs/contract-limits.md: under formula 2 ATP stays in range once every reservation lapses.
        if self.formula == 2 and expected.available_qty + expected.inbound - expected.safety_stock > _LEVEL:
            bad.append("atp once the reservations lapse")
        if not bad:
            return None
        self.mass[key] -= size
        return f"{key}: {bad[0]} would leave the range"

    def positions(self) -> dict[str, Expected]:
        return {k: self._position(k, events) for k, events in self.log.items()}

    def _safety(self, key: str, location: str, item_controls: list[dict[str, Any]]) -> int:
        """docs/contract.md: the most specific level wins, a control beats the file at its level, and a null
        control clears its level."""
        def newest(controls: Any) -> Any:
            best = max(controls, key=lambda r: (r["occurred_at"], r["event_id"]), default=None)
            return None if best is None else best.get("safety_stock")

        for value in (newest(item_controls), self.safety_by_key.get(key),
                      newest(self.location_controls.get(location, {}).values()), self.safety_by_location.get(location)):
            if value is not None:
                return value
        return 0

    def _in_effect_order(self, events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        """The key's events with the wms ones sorted by when they take effect: ``occurred_at``, or
        the lateness window's edge (the newest wms event time seen before it, minus the window) for
        an older one; ties keep arrival order. Nothing else depends on order."""
        newest = 0
        timed = []
        for i, (kind, r) in enumerate(events):
            effective = -1
            if kind == "wms":
                effective = max(r["occurred_at"], newest - self.lateness_ms)
                newest = max(newest, r["occurred_at"])
            timed.append((effective, i, kind, r))
        return [(kind, r) for _, _, kind, r in sorted(timed, key=lambda x: (x[0], x[1]))]

    def _position(self, key: str, events: list[tuple[str, dict[str, Any]]]) -> Expected:
        sku, location = key.split("@", 1)
        stock = dict.fromkeys(_STATUSES, 0)
        # A COUNT sets AVAILABLE; later wms events on the key move it from there. Orders and
        # transfers-on-their-way never touch AVAILABLE, so only the wms sequence matters for it.
        line_reserved: dict[str, int] = {}
        line_shipped: dict[str, int] = defaultdict(int)
        line_released: set[str] = set()
        sent: dict[str, int] = defaultdict(int)
        received: dict[str, int] = defaultdict(int)
        for kind, r in self._in_effect_order(events):
            t = r.get("event_type")
            if kind == "transfer-sent":
                sent[r["transfer_id"]] += r["qty"]
            elif kind in ("snapshots", "controls"):
                pass  # no quantity; controls set the safety stock below
            elif t == "RESERVE":
                line_reserved[r["order_line_id"]] = r["qty"]
                line_released.discard(r["order_line_id"])
            elif t == "RELEASE":
                line_released.add(r["order_line_id"])
            elif t in ("RECEIPT", "RETURN"):
                stock[r.get("to_status") or "AVAILABLE"] += r["qty"]
            elif t == "SHIP":
                stock["AVAILABLE"] -= r["qty"]
                line_shipped[r["order_line_id"]] += r["qty"]
            elif t in ("SHORT_PICK", "TRANSFER_OUT"):
                stock["AVAILABLE"] -= r["qty"]
            elif t == "ADJUST":
                stock["AVAILABLE"] += r["qty"]
            elif t == "COUNT":
                stock["AVAILABLE"] = r["counted_qty"]
            elif t == "STATUS_MOVE":
                stock[r["from_status"]] -= r["qty"]
                stock[r["to_status"]] += r["qty"]
            elif t == "TRANSFER_IN":
                stock["AVAILABLE"] += r["qty"]
                received[r["transfer_id"]] += r["qty"]
        lines = set(line_reserved) | set(line_shipped)
        reserved = sum(
            max(0, line_reserved.get(line, 0) - line_shipped[line]) for line in lines if line not in line_released
        )
        inbound = sum(max(0, sent[t] - received[t]) for t in set(sent) | set(received))
        safety = self._safety(key, location, [r for kind, r in events if kind == "controls"])
        available = stock["AVAILABLE"]
        atp = max(0, available + (inbound if self.formula == 2 else 0) - reserved - safety)
        # docs/contract.md: demand is the units a RESERVE adds over its line's previous RESERVE, by event-time
        # minute; rates read the last 5 and 60 minutes up to the key's newest event.
        stock_times = [r["occurred_at"] for kind, r in events if kind != "controls"]  # a control's time is its issue
        as_of = max(stock_times, default=0)
        newest_minute = as_of // 60_000
        last_qty: dict[str, int] = {}
        per_5 = per_60 = 0
        for kind, r in events:
            if r.get("event_type") != "RESERVE" or kind != "orders":
                continue
            added = r["qty"] - last_qty.get(r["order_line_id"], 0)
            last_qty[r["order_line_id"]] = r["qty"]
            age = newest_minute - r["occurred_at"] // 60_000
            if added > 0 and 0 <= age < 60:
                per_60 += added
                per_5 += added if age < 5 else 0
        d5 = round(per_5 / 5, 3)
        non_sellable = stock["QUARANTINE"] + stock["DAMAGED"] + stock["HOLD"]
        return Expected(
            sku=sku, location=location, available_qty=available, non_sellable=non_sellable,
            on_hand=available + non_sellable, reserved=reserved, inbound=inbound, safety_stock=safety,
            atp=atp,
            shortfall=max(0, reserved + safety - available),
            version=len(events) + len(self.location_controls.get(location, ())), as_of=as_of,
            formula_version=self.formula,
            demand_per_min_5m=d5, demand_per_min_60m=round(per_60 / 60, 3),
            stockout_eta_minutes=round(atp / (per_5 / 5), 1) if per_5 else None,
        )
