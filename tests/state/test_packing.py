"""A key's state packed into its snapshot bytes and back: nothing lost, older snapshots still read."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from state.fold import KeyState, apply
from state.packing import FORMAT, pack, unpack
from state.position import position
from tests.builders import T0, control, order, parse, snapshot, wms

DEDUP = 24 * 3_600_000
WINDOW = 15 * 60_000
MIN = 60_000


def _full_state() -> KeyState:
    """A key that uses every part of the state: lines, transfers, a snapshot, controls, demand."""
    st = KeyState("SKU-1", "DC-01")
    location_wide = dataclasses.replace(parse(control(4)), sku="SKU-1")  # the directory's copy for this key
    snap = parse(snapshot(12, t=3 * MIN))
    for event in [parse(wms("RECEIPT", qty=20, t=0)), parse(wms("RECEIPT", qty=3, to_status="HOLD", t=MIN)),
                  parse(order("RESERVE", "L1", 5, t=MIN)), parse(order("RESERVE", "L2", 2, t=2 * MIN)),
                  parse(wms("SHIP", qty=2, order_line_id="L1", t=2 * MIN)),
                  parse(wms("TRANSFER_IN", qty=2, transfer_id="T1", from_location="DC-09", t=3 * MIN)),
                  snap, parse(control(6, sku="SKU-1", t=MIN)), location_wide]:
        apply(st, event, DEDUP, WINDOW)
    st.lines["L2"].expires_ms = T0 + 30 * MIN  # type: ignore[index]
    st.pending = ((T0 + 4 * MIN, snap),)
    st.short_since, st.band = (T0 + 5 * MIN, T0 + 3 * MIN), "IN_STOCK"
    return st


def _plain(st: KeyState) -> tuple[object, ...]:
    values = list(st.__getstate__())
    lines = KeyState.__slots__.index("lines")
    values[lines] = {k: line.__getstate__() for k, line in (st.lines or {}).items()}
    return tuple(values)


def test_every_part_of_a_key_survives_packing():
    st = _full_state()
    assert st.lines and st.transfers and st.last_snapshot and st.pending and st.demand  # the test covers them
    assert st.safety_item is not None and st.safety_location is not None and st.history
    data = pack(st)
    back = unpack(data)
    assert back is not None and _plain(back) == _plain(st)
    assert type(back.lines["L1"]).__name__ == "Line" and back.pending[0][1] == st.pending[0][1]  # type: ignore[index]
    assert pack(back) == data
    # The copy goes on exactly as the original.
    more = [parse(wms("SHIP", qty=1, order_line_id="L2", t=6 * MIN)), parse(order("RELEASE", "L1", t=6 * MIN))]
    for event in more:
        apply(st, event, DEDUP, WINDOW)
        apply(back, event, DEDUP, WINDOW)
    assert position(back, 4, T0, 1) == position(st, 4, T0, 1)


def test_packed_bytes_are_shorter_than_the_pickled_object():
    st = _full_state()
    assert len(pack(st)) < len(pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL))


def test_a_new_key_and_no_state_pack_too():
    assert unpack(pack(None)) is None
    st = KeyState("SKU-1", "DC-01")
    assert _plain(unpack(pack(st))) == _plain(st)  # type: ignore[arg-type]


def test_snapshots_written_before_the_packed_format_still_resume():
    st = _full_state()
    old = pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL)  # how snapshots were written before
    back = unpack(old)
    assert back is not None and _plain(back) == _plain(st)


def test_bytes_of_another_format_are_refused_by_name():
    with pytest.raises(ValueError, match=f"format {FORMAT}"):
        unpack(pickle.dumps((1, 2, 3)))
