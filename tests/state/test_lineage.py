"""Lineage in the pure domain: source and correlation_id kept with each change of a key's history,
the changes the dataflow collects for the explain route, and states packed before they existed."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from state import events as ev
from state.fold import CONTROL, EXPIRY, SET_ON_HAND, KeyState, apply, expire, rebase
from state.packing import FORMAT, pack, unpack
from state.position import position
from tests.builders import T0, control, order, parse, snapshot, wms

DEDUP = 24 * 3_600_000
WINDOW = 15 * 60_000
MIN = 60_000


def _with(item: tuple[str, dict], cid: str | None, source: str = "wms-east") -> tuple[str, dict]:
    alias, rec = item
    return alias, {**rec, "correlation_id": cid, "source": source}


def test_events_carry_source_and_correlation_id():
    e = parse(_with(wms("RECEIPT", qty=3), "req-1"))
    assert (e.source, e.correlation_id) == ("wms-east", "req-1")
    assert parse(_with(order("RESERVE", "L1", 2), None)).correlation_id is None
    assert parse(_with(snapshot(4), "snap-7", "erp")).correlation_id == "snap-7"
    assert parse(_with(control(2, sku="SKU-1"), "ctl-1")).correlation_id == "ctl-1"
    # The far side of a transfer keeps them too.
    out = parse(_with(wms("TRANSFER_OUT", qty=2, to_location="DC-02", transfer_id="T1"), "mv-1"))
    assert [(e.source, e.correlation_id) for _, e in ev.fan_out(out)] == [("wms-east", "mv-1")] * 2
    # An empty correlation_id is none; a record without source (a re-driven JSON one) has "".
    assert parse(_with(wms("RECEIPT", qty=3), "")).correlation_id is None
    alias, rec = wms("RECEIPT", qty=3)
    del rec["source"]
    assert parse((alias, rec)).source == ""


@pytest.mark.parametrize("value, kept", [
    (7, None),  # not a string (only a hand-made JSON record can have one): dropped
    ("x" * 201, "x" * 200),
    ("a\nb\x1fc", "a?b?c"),  # control characters never reach a log line or the stored lineage
])
def test_a_correlation_id_is_kept_printable_and_bounded_and_never_refuses_the_event(value, kept):
    e = parse(_with(wms("RECEIPT", qty=3), value, source="wms\x1e" + "s" * 300))
    assert e.correlation_id == kept and e.source == "wms?" + "s" * 196


def test_the_history_keeps_each_change_with_its_lineage():
    st = KeyState("SKU-1", "DC-01")
    apply(st, parse(_with(wms("RECEIPT", qty=10, t=MIN, event_id="r1"), "c-1")), DEDUP, WINDOW)
    apply(st, parse(_with(wms("SHIP", qty=4, order_line_id="L1", t=2 * MIN, event_id="s1"), "c-2", "wms-west")),
          DEDUP, WINDOW)
    apply(st, parse(_with(wms("COUNT", counted_qty=5, t=0, event_id="k1"), None)), DEDUP, WINDOW)  # late: inserted
    assert [(e[5], e[6], e[3], e[7], e[8]) for e in st.history] == [
        ("k1", "COUNT", 5, "wms-east", None), ("r1", "RECEIPT", 10, "wms-east", "c-1"),
        ("s1", "SHIP", -4, "wms-west", "c-2")]
    snap = parse(_with(snapshot(20, t=3 * MIN, event_id="snap-1"), "c-snap", "erp"))
    assert isinstance(snap, ev.InventorySnapshot)
    rebase(st, snap, WINDOW)
    assert st.history[-1][2:] == (SET_ON_HAND, 20, 0, "snap-1", "SNAPSHOT", "erp", "c-snap")
    assert st.fresh is None  # nobody collects: the fold adds nothing beside the history


def test_collected_changes_include_controls_and_expiries_but_the_figures_do_not_move():
    st = KeyState("SKU-1", "DC-01")
    apply(st, parse(wms("RECEIPT", qty=10, t=0)), DEDUP, WINDOW)
    hold = _with(order("RESERVE", "CART-1", 4, t=MIN), "c-cart")
    hold[1]["expires_at"] = T0 + 5 * MIN
    apply(st, parse(hold), DEDUP, WINDOW)
    before = position(st, 0, T0, 1)
    history = list(st.history)
    st.fresh = []
    apply(st, parse(_with(control(3, sku="SKU-1", t=2 * MIN, event_id="ctl-1"), "c-ctl")), DEDUP, WINDOW)
    apply(st, parse(_with(control(1, sku="SKU-1", t=MIN, event_id="ctl-0"), "c-old")), DEDUP, WINDOW)  # older: no effect
    assert expire(st, T0 + 6 * MIN) == ["CART-1"]
    assert st.fresh == [
        (T0 + 2 * MIN, st.version - 2, CONTROL, 3, 0, "ctl-1", "SAFETY_STOCK_SET", "wms-east", "c-ctl"),
        (T0 + 5 * MIN, st.version, EXPIRY, 4, 0, "CART-1", "EXPIRY", "", None),
    ]
    assert st.history == history  # controls and expiries are lineage only, never in the history
    after = position(st, 0, T0, 1)
    assert (after.available_qty, after.reserved) == (before.available_qty, 0)


# A key packed by format 4 (before lineage): a receipt, a HOLD receipt, a reservation, a shipment,
# a snapshot and a control. Made with the code of that format, kept as it was written.
FORMAT_4 = (
    "gAWVWwEAAAAAAAAojAVTS1UtMZSMBURDLTAxlF2UKEsSSwBLAEsDZX2UjAJMMZQoSwVLAomKBsB83HabAU50lHNOSwNLAH2UKIwCdzGUigYA"
    "qNp2mwGMAncylIoGYJLbdpsBjARPH28xlIoGYJLbdpsBjAJ3M5SKBsB83HabAYwEUx9zMZSKBiBn3XabAYwEQx9jMZSKBmCS23abAXVLBooG"
    "IGfddpsBKIwCczGUigYgZ912mwFoAGgBjAJTMZRLDIoGIGfddpsBjANFUlCUdJRLQF2UKCiKBgCo2nabAUsBSwBLFEsAaAeMB1JFQ0VJUFSU"
    "dJQoigZgktt2mwFLAksASwBLA2gIaBJ0lCiKBsB83HabAUsESwBK/v///0sAaAqMBFNISVCUdJRlSwBLAIaUTilOiYoGwHzcdpsBfZRKwW3B"
    "AUsFc04ojAJjMZSKBmCS23abAWgAaAFLBol0lE5LBHSULg=="
)


def test_a_state_packed_by_format_4_still_unpacks_and_goes_on():
    assert FORMAT == 5
    st = unpack(base64.b64decode(FORMAT_4))
    assert st is not None and st.fresh is None
    assert (st.buckets, st.reserved, st.version) == ([18, 0, 0, 3], 3, 6)
    assert [e[5:] for e in st.history] == [("w1", "RECEIPT", "", None), ("w2", "RECEIPT", "", None),
                                           ("w3", "SHIP", "", None)]
    assert st.last_snapshot is not None and st.last_snapshot.correlation_id is None
    assert st.safety_item is not None and st.safety_item.safety_stock == 6
    # A duplicate of an event applied before the upgrade is still one; new events fold on.
    assert apply(st, parse(wms("RECEIPT", qty=20, t=0, event_id="w1")), DEDUP, WINDOW) == 0
    apply(st, parse(_with(wms("RECEIPT", qty=2, t=4 * MIN, event_id="w4"), "c-4")), DEDUP, WINDOW)
    assert st.buckets[0] == 20 and st.history[-1][5:] == ("w4", "RECEIPT", "wms-east", "c-4")
    back = unpack(pack(st))
    assert back is not None and back.history == st.history and pack(back) == pack(st)


def test_the_current_format_round_trips_lineage():
    st = KeyState("SKU-1", "DC-01")
    apply(st, parse(_with(wms("RECEIPT", qty=10, t=0), "c-1")), DEDUP, WINDOW)
    snap = parse(_with(snapshot(8, t=MIN), "c-snap", "erp"))
    apply(st, snap, DEDUP, WINDOW)
    apply(st, dataclasses.replace(parse(_with(control(2, t=MIN), "c-loc")), sku="SKU-1"), DEDUP, WINDOW)
    back = unpack(pack(st))
    assert back is not None and back.history == st.history
    assert back.last_snapshot is not None and back.last_snapshot.correlation_id == "c-snap"
    assert back.safety_location is not None and back.safety_location.correlation_id == "c-loc"
    assert back.safety_location.source == "wms-east"


def test_an_expirys_order_line_is_kept_printable():
    st = KeyState("SKU-1", "DC-01")
    hold = order("RESERVE", "L\x1e1", 2, t=0)
    hold[1]["expires_at"] = T0 + MIN
    apply(st, parse(hold), DEDUP, WINDOW)
    st.fresh = []
    assert expire(st, T0 + MIN) == ["L\x1e1"]
    assert st.fresh[0][5] == "L?1"
