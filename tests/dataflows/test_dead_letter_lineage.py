"""A dead letter names its record's correlation_id when the record was decoded far enough to have one."""

from __future__ import annotations

from dataflows import kafka as hdr
from dataflows.decode import DecodeStep
from dataflows.kafka import DeadLetter
from dataflows.kafka.output import DeadLetterMessage
from dataflows.timers import refused
from state.errors import InvalidEvent
from tests.builders import parse, wms


class _Msg:
    key, value, topic, headers, offset, partition = b"SKU-1@DC-01", b"v", "wms", None, 7, 0


def _headers(dl: DeadLetter) -> dict[str, bytes]:
    return dict(DeadLetterMessage("dlq")(dl).headers or [])


def test_the_header_is_there_only_with_a_correlation_id():
    assert _headers(DeadLetter(_Msg(), "r", "E", "m", correlation_id="req-9"))[hdr.SOURCE_CORRELATION_ID] == b"req-9"
    assert hdr.SOURCE_CORRELATION_ID not in _headers(DeadLetter(_Msg(), "r", "E", "m"))


def test_decode_refusals_keep_the_decoded_records_correlation_id():
    exc = InvalidEvent("invalid_quantity", "RECEIPT needs qty > 0, got -1")
    assert DecodeStep._dead(_Msg(), exc, {"correlation_id": "req-1"}).correlation_id == "req-1"
    assert DecodeStep._dead(_Msg(), exc, None).correlation_id is None  # not decoded: none to name
    assert DecodeStep._dead(_Msg(), exc, {"correlation_id": 5}).correlation_id is None  # not a string: left out


def test_fold_refusals_keep_the_events_correlation_id():
    alias, rec = wms("RECEIPT", qty=3)
    event = parse((alias, {**rec, "correlation_id": "req-2"}))
    assert refused(event, "out_of_range", "too big", "OutOfRange", "atp_fold", "wms").correlation_id == "req-2"
    assert refused(parse(wms("RECEIPT", qty=3)), "out_of_range", "x", "OutOfRange", "atp_fold", "wms").correlation_id is None
