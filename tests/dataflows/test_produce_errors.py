"""An output message that cannot be produced is skipped and counted, never a stop of the flow.

The defect: a record near the size limit became a dead letter over the producer's
``message.max.bytes`` (its bytes plus the dead-letter headers), ``produce`` raised, the flow
stopped, and it stopped again on the same batch after every restart.
"""

from __future__ import annotations

from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from confluent_kafka import KafkaException

from dataflows import metrics
from dataflows.kafka import DeadLetter
from dataflows.kafka.output import DeadLetterMessage
from dataflows.kafka.sink import DEAD_LETTER_MAX_BYTES, OutputSink, size

PRODUCER_LIMIT = 1_000_000  # librdkafka's default message.max.bytes
NOWHERE = ["127.0.0.1:1"]  # no broker: produce() checks a message's size before any connection


def dead_letter(value: bytes, headers=None) -> KafkaSinkMessage:
    src = KafkaSourceMessage(b"SKU-1@DC-01", value, topic="wms.inventory.v1", headers=headers or [],
                             offset=7, partition=0)
    return DeadLetterMessage("atp.dead-letter.v1")(DeadLetter(src, "bad_magic", "InvalidEvent", "not Avro"))


def test_a_dead_letter_of_a_record_near_the_size_limit_fits_under_it():
    msg = dead_letter(b"x" * 999_000)
    headers = dict(msg.headers)
    assert size(msg.key, msg.value, msg.headers) < PRODUCER_LIMIT
    assert msg.value is None and msg.key == b"SKU-1@DC-01"
    assert headers["atp.error.dropped"] == b"value" and headers["atp.source.bytes"] == b"999011"
    assert headers["atp.source.offset"] == b"7" and headers["atp.error.reason"] == b"bad_magic"


def test_huge_original_headers_go_too_and_a_small_record_is_kept_whole():
    msg = dead_letter(b"v", headers=[("h", b"y" * DEAD_LETTER_MAX_BYTES)])
    assert size(msg.key, msg.value, msg.headers) < PRODUCER_LIMIT
    assert dict(msg.headers)["atp.error.dropped"] == b"value,headers"
    small = dead_letter(b"v" * 1000, headers=[("trace", b"t")])
    assert small.value == b"v" * 1000 and ("trace", b"t") in small.headers
    assert "atp.error.dropped" not in dict(small.headers)


def test_a_message_the_producer_refuses_is_skipped_and_counted_not_raised():
    sink = OutputSink(NOWHERE, topic=None).build("messages", 0, 1)
    before = metrics.PRODUCE_ERRORS.labels("atp.availability.v1", "MSG_SIZE_TOO_LARGE")._value.get()
    sink.write_batch([KafkaSinkMessage(b"k", b"z" * (PRODUCER_LIMIT + 1), topic="atp.availability.v1")])
    after = metrics.PRODUCE_ERRORS.labels("atp.availability.v1", "MSG_SIZE_TOO_LARGE")._value.get()
    assert after == before + 1
    sink.close()


def test_bytewax_s_own_sink_stops_on_the_same_message():
    """What the flow ran before: the same message raised out of the sink (and stopped the flow)."""
    from bytewax.connectors.kafka import KafkaSink

    sink = KafkaSink(NOWHERE, topic=None).build("messages", 0, 1)
    try:
        sink.write_batch([KafkaSinkMessage(b"k", b"z" * (PRODUCER_LIMIT + 1), topic="atp.availability.v1")])
    except KafkaException as exc:
        assert exc.args[0].name() == "MSG_SIZE_TOO_LARGE"
    else:
        raise AssertionError("bytewax's KafkaSink no longer raises on a message over the limit")


def test_a_record_of_many_small_headers_is_measured_as_on_the_wire():
    """The defect: only header names and values were counted, so 180,000 empty headers (~1 MB on
    the wire with their framing) looked like 180 KB, and the dead letter was refused whole."""
    src = KafkaSourceMessage(b"SKU-1@DC-01", b"x" * 500_000, topic="wms.inventory.v1",
                             headers=[("a", b"")] * 180_000, offset=7, partition=0)
    msg = DeadLetterMessage("atp.dead-letter.v1")(DeadLetter(src, "bad_magic", "InvalidEvent", "not Avro"))
    assert dict(msg.headers)["atp.error.dropped"] == b"value,headers" and msg.key == b"SKU-1@DC-01"
    sink = OutputSink(NOWHERE, topic=None, add_config={"message.timeout.ms": "500"}).build("messages", 0, 1)
    before = metrics.PRODUCE_ERRORS.labels("atp.dead-letter.v1", "MSG_SIZE_TOO_LARGE")._value.get()
    try:
        sink.write_batch([msg])  # queued, then timed out (no broker): not refused as too large
    except KafkaException as exc:
        assert exc.args[0].name() == "_MSG_TIMED_OUT"
    assert metrics.PRODUCE_ERRORS.labels("atp.dead-letter.v1", "MSG_SIZE_TOO_LARGE")._value.get() == before


def test_a_batch_that_is_not_delivered_fails_so_it_is_produced_again():
    """The defect: a message not delivered in message.timeout.ms (the broker away) was only counted:
    the batch returned, Bytewax committed the epoch, and the message was never produced again."""
    sink = OutputSink(NOWHERE, topic=None, add_config={"message.timeout.ms": "500"}).build("messages", 0, 1)
    try:
        sink.write_batch([KafkaSinkMessage(b"k", b"v", topic="atp.availability.v1")])
    except KafkaException as exc:
        assert exc.args[0].name() == "_MSG_TIMED_OUT" and "not delivered" in exc.args[0].str()
    else:
        raise AssertionError("an undelivered batch returned normally")
