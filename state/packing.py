"""A key's state as bytes: what the dataflow's snapshots hold and a key at rest keeps.

Bytewax asks for a snapshot of every key touched in an epoch, and a key unpacks its bytes at its
next event, so both directions run about once per event at full load. Pickling the ``KeyState``
object itself makes pickle reduce every slotted object in it (its order lines, its snapshots and
controls) through the generic object protocol: 4.3 us to pack a typical key (a receipt and an
open order line) and 3.9 to unpack it. Here the state is first turned into plain tuples, dicts and
lists, which pickle writes and reads in C: 2.2 and 2.1 us, in 223 bytes against 268
(``python -m loadtest.bench.hotspots`` shows its share of the pipeline).

The bytes are still a pickle, so snapshots written before (a pickled ``KeyState``, whose
``__setstate__`` upgrades older layouts) unpack as they did.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from operator import attrgetter
from typing import Any, cast

from state.events import InventorySnapshot, SafetyStockSet
from state.fold import ID_TAGS, KeyState, Line, upgrade_entries

# The last value of a packed tuple; pickled KeyState objects were layouts 1 and 2. Format 5 keeps
# lineage (source, correlation_id) in each history entry and has the ``fresh`` slot (last);
# format 4 keeps dedup identities per record type (state.fold.identity); format 3 kept bare event ids.
FORMAT = 5
_FORMATS = (3, 4, FORMAT)
_SLOTS = KeyState.__slots__
_OLD_LEN = len(_SLOTS)  # formats 3 and 4: every slot but ``fresh``, then the format
_values = attrgetter(*_SLOTS)
_LINES, _LAST, _PENDING, _ITEM, _LOCATION = (
    _SLOTS.index(s) for s in ("lines", "last_snapshot", "pending", "safety_item", "safety_location"))
# A slotted dataclass's slots are its fields, in order; the input record (``src``, last) is not state.
_snapshot_fields = attrgetter(*InventorySnapshot.__slots__[:-1])
_control_fields = attrgetter(*SafetyStockSet.__slots__[:-1])
_line_fields = attrgetter(*Line.__slots__)

# One STORE_ATTR per slot, as a dataclass's generated __init__ does: half the time of a setattr loop.
_namespace: dict[str, Any] = {}
exec(f"def _assign(o, v):\n    {', '.join('o.' + s for s in _SLOTS)}, _ = v\n", _namespace)
_assign = _namespace["_assign"]


def pack(state: KeyState | None) -> bytes:
    if state is None:
        return pickle.dumps(None)
    v: Sequence[Any] = _values(state)
    lines, last, pending, item, location = v[_LINES], v[_LAST], v[_PENDING], v[_ITEM], v[_LOCATION]
    if lines or last is not None or pending or item is not None or location is not None:
        v = plain = list(v)
        if lines:
            plain[_LINES] = {k: _line_fields(line) for k, line in lines.items()}
        if last is not None:
            plain[_LAST] = _snapshot_fields(last)
        if pending:
            plain[_PENDING] = tuple((arrival, _snapshot_fields(s)) for arrival, s in pending)
        if item is not None:
            plain[_ITEM] = _control_fields(item)
        if location is not None:
            plain[_LOCATION] = _control_fields(location)
    return pickle.dumps((*v, FORMAT), protocol=pickle.HIGHEST_PROTOCOL)


def unpack(data: bytes) -> KeyState | None:
    packed = pickle.loads(data)
    if type(packed) is not tuple:
        return cast("KeyState | None", packed)  # None, or a KeyState pickled before FORMAT 3
    if len(packed) == _OLD_LEN and packed[-1] in (3, 4):
        packed = (*packed[:-1], None, packed[-1])  # no ``fresh`` yet
    elif len(packed) != len(_SLOTS) + 1 or packed[-1] not in _FORMATS:
        raise ValueError(f"not a packed key state of format {FORMAT}: {len(packed)} values, last {packed[-1]!r}")
    st = KeyState.__new__(KeyState)
    _assign(st, packed)
    if packed[-1] != FORMAT:
        st.history = upgrade_entries(st.history)
    if packed[-1] == 3:
        # A bare id stood for every record type: keep it standing for each, so an event applied
        # before the upgrade is still a duplicate after it (these age out with the dedup window).
        st.seen = {**st.seen, **{tag + i: t for i, t in st.seen.items() for tag in ID_TAGS.values()}}
    # The slots hold the plain values just assigned: read them from ``packed``, typed Any.
    lines, last, pending, item, location = (
        packed[_LINES], packed[_LAST], packed[_PENDING], packed[_ITEM], packed[_LOCATION])
    if lines:
        st.lines = {k: _line(t) for k, t in lines.items()}
    if last is not None:
        st.last_snapshot = InventorySnapshot(*last)
    if pending:
        st.pending = tuple((arrival, InventorySnapshot(*s)) for arrival, s in pending)
    if item is not None:
        st.safety_item = SafetyStockSet(*item)
    if location is not None:
        st.safety_location = SafetyStockSet(*location)
    return st


def _line(values: tuple[Any, ...]) -> Line:
    line = Line.__new__(Line)
    line.reserved, line.shipped, line.released, line.last_ms, line.expires_ms = values
    return line
