"""Validation of decoded records against the contract: each failure names its reason."""

from __future__ import annotations

import pytest

from loadtest.truth import oracle
from state.errors import InvalidEvent
from tests.builders import order, parse, snapshot, wms


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (wms("RECEIPT", qty=0), "invalid_quantity"),
        (wms("RECEIPT", qty=None), "missing_field"),
        (wms("SHIP", qty=2), "missing_field"),  # no order_line_id
        (wms("ADJUST", qty=0, reason="x"), "invalid_quantity"),
        (wms("ADJUST", qty=3), "missing_field"),  # no reason
        (wms("COUNT", counted_qty=-1), "invalid_quantity"),
        (wms("STATUS_MOVE", qty=1, from_status="HOLD", to_status="HOLD"), "invalid_field"),
        (wms("TRANSFER_OUT", qty=1, to_location="DC-01", transfer_id="T"), "invalid_field"),
        (wms("TRANSFER_OUT", qty=1, to_location="bad loc", transfer_id="T"), "invalid_id"),
        (wms("RETURN", qty=1), "missing_field"),
        (wms("RECEIPT", qty=1, sku="-leading-dash"), "invalid_id"),
        (wms("RECEIPT", qty=1, location="x" * 65), "invalid_id"),
        (wms("RECEIPT", qty=1, event_id=""), "missing_field"),
        (wms("RECEIPT", qty=1, to_status="LOST"), "invalid_field"),
        (order("RESERVE", "L1", -1), "invalid_quantity"),
        (order("RESERVE", "L1", None), "missing_field"),
        (wms("RECEIPT", qty=True), "invalid_field"),
    ],
)
def test_invalid_events_are_refused_with_a_reason(item, reason):
    with pytest.raises(InvalidEvent) as info:
        parse(item)
    assert info.value.reason == reason
    with pytest.raises(oracle.Rejected):  # the independent oracle reads the contract the same way
        oracle.check(*item)


def test_valid_events_parse():
    assert parse(wms("RECEIPT", qty=5)).to_status == "AVAILABLE"
    assert parse(order("RELEASE", "L1")).qty == 0
    assert parse(snapshot(3)).on_hand == 3
    moved = parse(wms("TRANSFER_IN", qty=2, from_location="DC-02", transfer_id="T1"))
    assert moved.other_location == "DC-02"


def test_the_readme_example_file_is_valid():
    from pathlib import Path

    from dataflows.jsonl import parse_lines

    path = Path(__file__).resolve().parents[2] / "docs" / "examples" / "events.jsonl"
    with path.open() as fh:
        lines = list(parse_lines(fh))
    assert len(lines) == 6 and [line.error for line in lines] == [None] * 6


def test_ids_validated_once_are_remembered_in_a_bounded_set(monkeypatch):
    from state import events as ev

    monkeypatch.setattr(ev, "_VALID_IDS", set())
    monkeypatch.setattr(ev, "_MAX_VALID_IDS", 3)
    assert parse(wms("RECEIPT", qty=1, sku="A-1", location="DC-1")).sku == "A-1"
    assert ev._VALID_IDS == {"A-1", "DC-1"}
    for bad in ("-A-1", "A 1", "x" * 65):  # an id like a remembered one is still checked
        with pytest.raises(InvalidEvent, match="must match"):
            parse(wms("RECEIPT", qty=1, sku=bad, location="DC-1"))
    parse(wms("RECEIPT", qty=1, sku="B-1", location="DC-1"))
    assert ev._VALID_IDS == {"A-1", "B-1", "DC-1"}  # full
    parse(wms("RECEIPT", qty=1, sku="C-1", location="DC-1"))  # emptied, then added to
    assert ev._VALID_IDS == {"C-1", "DC-1"}
    with pytest.raises(InvalidEvent) as info:  # a non-string is refused as before, not looked up
        parse(wms("RECEIPT", qty=1, sku=["A-1"], location="DC-1"))
    assert info.value.reason == "invalid_field"
