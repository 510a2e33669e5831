"""Positions as Redis hashes and back: the fields written, and the checked reading of what is stored
(``Unreadable`` for what no reader can serve); the key layout is in ``projection.keys``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

from redis.typing import EncodableT, FieldT

from state.fold import Entry
from state.position import Position

# The fields of a stored position: every field of ``Position``, in the order ``write_args`` packs them.
HASH_FIELDS = tuple(f.name for f in fields(Position))


SEP = "|"  # never inside a value: ids are [A-Za-z0-9._-], the rest are numbers


INT_FIELDS = (
    "atp", "available_qty", "on_hand", "reserved", "non_sellable", "inbound",
    "safety_stock", "shortfall", "version", "as_of", "updated_at", "formula_version",
)


FLOAT_FIELDS = ("demand_per_min_5m", "demand_per_min_60m", "stockout_eta_minutes")  # "" stores None


def write_args(p: Position) -> tuple[int, str, str]:
    """ARGV for ``GUARDED_WRITE``: the version, the location and the packed values."""
    eta = "" if p.stockout_eta_minutes is None else repr(p.stockout_eta_minutes)
    return p.version, p.location, (
        f"{p.sku}|{p.location}|{p.atp}|{p.available_qty}|{p.on_hand}|{p.reserved}|{p.non_sellable}|"
        f"{p.inbound}|{p.safety_stock}|{p.shortfall}|{p.version}|{p.as_of}|{p.updated_at}|"
        f"{p.formula_version}|{p.demand_per_min_5m!r}|{p.demand_per_min_60m!r}|{eta}"
    )


# The lineage list (``<prefix>:expl:...``): each change one string of the fields of a history entry
# (state.fold.Entry) joined by US; the changes of one write joined by RS. Neither is ever inside a
# value: event ids, sources, correlation ids and an expiry's order line are printable (state.events),
# the rest are numbers.
US, RS = "\x1f", "\x1e"
LINEAGE_SIZE = 32  # changes kept per key (Redis memory: ~55 bytes each, ~90 with a UUID correlation id)
CHANGES = ("delta", "set_available", "set_on_hand", "control", "expiry")  # by state.fold entry kind


def lineage_arg(entries: list[Entry]) -> str:
    """ARGV for ``GUARDED_WRITE``: the newest ``LINEAGE_SIZE`` of ``entries`` (in the order applied)."""
    if len(entries) > LINEAGE_SIZE:
        entries = entries[-LINEAGE_SIZE:]
    return RS.join([f"{t}\x1f{seq}\x1f{kind}\x1f{value}\x1f{other}\x1f{eid}\x1f{etype}\x1f{source}\x1f{cid or ''}"
                    for t, seq, kind, value, other, eid, etype, source, cid in entries])


def read_lineage(raw: Iterable[Any]) -> list[dict[str, Any]]:
    """A stored lineage list as served, newest first (by effective time, then the version that applied
    it); ``Unreadable`` when an entry is not one this version writes."""
    out: list[dict[str, Any]] = []
    for item in raw:
        try:
            text = item.decode() if isinstance(item, bytes) else str(item)
        except UnicodeDecodeError:
            raise Unreadable("a lineage entry is not UTF-8") from None
        f = text.split(US)
        if len(f) != 9:
            raise Unreadable(f"a lineage entry has {len(f)} fields, expected 9: {_shown(text)}")
        kind = safe_int("change", f[2])
        if not 0 <= kind < len(CHANGES):
            raise Unreadable(f"a lineage entry has an unknown kind: {kind}")
        out.append({"effective_at": epoch_ms("effective_at", f[0]), "version": safe_int("version", f[1]),
                    "change": CHANGES[kind], "quantity": safe_int("quantity", f[3]),
                    "non_sellable": safe_int("non_sellable", f[4]), "event_id": f[5], "event_type": f[6],
                    "source": f[7] or None, "correlation_id": f[8] or None})
    out.sort(key=lambda e: (e["effective_at"], e["version"]), reverse=True)
    return out


def hash_fields(p: Position) -> dict[FieldT, EncodableT]:
    """The hash ``GUARDED_WRITE`` stores for a position, as the strings Redis keeps (typed as
    redis-py's ``hset`` takes a mapping: its keys are typed invariantly)."""
    return dict(zip(HASH_FIELDS, write_args(p)[2].split(SEP)))


def _float_or_none(v: bytes | str) -> float | None:
    return float(v) if v else None


_TYPED: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(INT_FIELDS, int), **dict.fromkeys(FLOAT_FIELDS, _float_or_none)}


def from_hash(raw: dict[Any, Any]) -> dict[str, Any] | None:
    """A stored hash as typed fields, or None for a missing key."""
    return from_pairs(raw.items()) if raw else None


def from_flat(flat: list[Any]) -> dict[str, Any] | None:
    """A hash as HGETALL answers inside a script (field, value, field, value, ...), typed."""
    it = iter(flat)
    return from_pairs(zip(it, it)) if flat else None


def from_pairs(pairs: Iterable[tuple[Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        k = k.decode() if isinstance(k, bytes) else k
        typed = _TYPED.get(k)
        out[k] = typed(v) if typed is not None else v.decode() if isinstance(v, bytes) else v
    return out


MAX_SAFE_INT = 2**53 - 1  # beyond it a JSON number loses precision in JavaScript clients


MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant Python's datetime holds


EPOCH_FIELDS = ("as_of", "updated_at")


# Fields a hash written by an older layout may lack: the API gives the model's default.
OPTIONAL_FIELDS = ("formula_version", "demand_per_min_5m", "demand_per_min_60m", "stockout_eta_minutes")


REQUIRED_FIELDS = tuple(f for f in HASH_FIELDS if f not in OPTIONAL_FIELDS)


class Unreadable(ValueError):
    """A stored record that cannot be served as it is (corrupt, out of range, or missing a field)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def safe_int(name: str, v: Any) -> int:
    """A stored integer within what JSON carries exactly to every client (|x| <= 2**53 - 1)."""
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise Unreadable(f"{name} is not an integer: {_shown(v)}") from None
    if not -MAX_SAFE_INT <= n <= MAX_SAFE_INT:
        raise Unreadable(f"{name} is beyond 2**53 - 1 in magnitude: {_shown(v)}")
    return n


def epoch_ms(name: str, v: Any) -> int:
    """A stored event or processing time in epoch milliseconds, within datetime's range."""
    n = safe_int(name, v)
    if not 0 <= n <= MAX_EPOCH_MS:
        raise Unreadable(f"{name} is not a time between 1970 and 9999 in epoch milliseconds: {n}")
    return n


def _finite(name: str, v: Any, empty_ok: bool) -> float | None:
    if v in ("", b""):
        if empty_ok:
            return None
        raise Unreadable(f"{name} is empty")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise Unreadable(f"{name} is not a number: {_shown(v)}") from None
    if f != f or f in (float("inf"), float("-inf")) or abs(f) > MAX_SAFE_INT:
        raise Unreadable(f"{name} is not a finite number within 2**53 - 1: {_shown(v)}")
    return f


def _shown(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


_STRICT: dict[str, Any] = {
    **{f: safe_int for f in INT_FIELDS if f not in EPOCH_FIELDS},
    **dict.fromkeys(EPOCH_FIELDS, epoch_ms),
    "demand_per_min_5m": lambda n, v: _finite(n, v, empty_ok=False),
    "demand_per_min_60m": lambda n, v: _finite(n, v, empty_ok=False),
    "stockout_eta_minutes": lambda n, v: _finite(n, v, empty_ok=True),
}


_INT, _FLOAT, _ETA, _TEXT = 1, 2, 3, 4


_FAST = {**dict.fromkeys(INT_FIELDS, _INT), "demand_per_min_5m": _FLOAT, "demand_per_min_60m": _FLOAT,
         "stockout_eta_minutes": _ETA, "sku": _TEXT, "location": _TEXT, "members": _TEXT}


def read_position(pairs: Iterable[tuple[Any, Any]]) -> dict[str, Any]:
    """A stored position (or group position) as the API serves it, or ``Unreadable``. Known fields
    are typed and checked; fields this version does not know (a newer layout) are ignored; the
    optional fields an older layout lacks are left out (the reader's default applies)."""
    pairs = pairs if isinstance(pairs, list) else list(pairs)
    try:  # the common case, inline (this runs once per key read); any doubt: the checks below say why
        out = _read_fast(pairs)
    except (TypeError, ValueError):  # UnicodeDecodeError is a ValueError
        out = None
    return out if out is not None else _read_checked(pairs)


def _read_fast(pairs: list[tuple[Any, Any]]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    lo, hi = -MAX_SAFE_INT, MAX_SAFE_INT
    fast = _FAST
    for k, v in pairs:
        if type(k) is bytes:
            k = k.decode()
        kind = fast.get(k)
        if kind is None:
            continue
        if kind == 1:  # _INT
            n = out[k] = int(v)
            if n < lo or n > hi:
                return None
        elif kind == 4:  # _TEXT
            out[k] = v.decode() if type(v) is bytes else v
        elif kind == 3 and not v:  # _ETA, none
            out[k] = None
        else:
            x = out[k] = float(v)
            if not lo <= x <= hi:  # also NaN
                return None
    for f in REQUIRED_FIELDS:
        if f not in out:
            return None
    if not (0 <= out["as_of"] <= MAX_EPOCH_MS and 0 <= out["updated_at"] <= MAX_EPOCH_MS):
        return None
    return out


def _read_checked(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        try:
            k = k.decode() if isinstance(k, bytes) else k
        except UnicodeDecodeError:
            continue  # not a field name this (or any) version writes
        check = _STRICT.get(k)
        if check is not None:
            out[k] = check(k, v)
        elif k in ("sku", "location", "members"):
            try:
                out[k] = v.decode() if isinstance(v, bytes) else v
            except UnicodeDecodeError:
                raise Unreadable(f"{k} is not UTF-8") from None
    missing = [f for f in REQUIRED_FIELDS if f not in out]
    if missing:
        raise Unreadable(f"missing field(s): {', '.join(missing)}")
    return out
