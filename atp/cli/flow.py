"""`atp run`, `atp reset`, `atp produce`, `atp safety-stock`: the dataflow and what goes into it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer

from atp.cli.common import console, err, friendly, progress_bar, settings
from core import redact
from core.errors import AtpError

if TYPE_CHECKING:  # the commands import their heavy modules when they run
    from core.config import Settings
    from dataflows.kafka.producer import EventProducer


@friendly
def run() -> None:
    """Run the dataflow in the foreground (Ctrl-C stops it; recovery resumes where it stopped)."""
    from dataflows.runtime.run import RETIRED
    from dataflows.runtime.run import run as run_flow

    s = settings()
    if run_flow(s) == RETIRED:
        console.print(f"generation '{s.generation}' retired after a switch; its keys and recovery store are deleted")


@friendly
def reset(yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")) -> None:
    """Delete the dataflow's recovery store and its Redis keyspace; the next run rebuilds from offset 0.

    Stop the dataflow first. Channels get 503 until the next run has re-published the keyspace.
    """
    from dataflows.runtime.continuity import reset as reset_all
    from dataflows.runtime.run import check_redis
    from projection.client import connect

    s = settings()
    check_redis(s)  # before asking: Redis down is one line with what to do
    if not yes:
        typer.confirm(f"Delete every generation's recovery store under {s.state_dir} and every Redis key "
                      f"under '{s.redis_key_prefix}:'?", abort=True)
    deleted, existed = reset_all(s, connect(s, socket_connect_timeout=5))
    console.print(f"deleted {deleted} Redis keys; recovery store {'removed' if existed else 'was absent'}")


@friendly
def produce(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL: one {topic, event} a line"),
    raw: bool = typer.Option(False, "--raw", help='Lines of {"topic", "key", "value_b64" or "value_hex", '
                             '"headers"}: bytes sent as they are, unchecked (docs/contract.md)'),
) -> None:
    """Send canonical JSON events to Kafka as Avro; invalid lines are reported and not sent.

    With --raw each line's bytes go as they are, so that you can watch the dataflow dead-letter bad
    ones or test your own producer's bytes."""
    from dataflows.kafka.producer import EventProducer

    s = settings()
    if raw:
        from core.kafka_config import metadata

        known = set(cast(Any, metadata(s)).topics)  # sending to a topic that does not exist would wait minutes
        producer = EventProducer(s)
        bad = _send(file, lambda text: producer.send_raw(*_raw_record(text, s, known)))
    else:
        from dataflows.kafka.admin import check_kafka

        check_kafka(s)
        producer = EventProducer(s)
        bad = _send_events(file, producer)
    undelivered = producer.flush()
    console.print(f"sent {producer.sent - undelivered - producer.failed}, invalid {bad}, failed {producer.failed + undelivered}")
    if producer.failed or undelivered:
        err.print(f"not delivered: {producer.last_error.str() if producer.last_error else 'no answer in time'}",
                  markup=False)
    if bad or producer.failed or undelivered:
        raise typer.Exit(1)


def _send_events(file: Path, producer: EventProducer) -> int:
    from dataflows.jsonl import parse_lines

    bad = 0
    with file.open() as fh, progress_bar("produce") as progress:
        task = progress.add_task("lines", total=sum(1 for _ in fh))
        fh.seek(0)
        for line in parse_lines(fh):
            progress.update(task, completed=line.number)
            if line.error is None:
                assert line.alias is not None and line.record is not None  # parse_lines sets both then
                try:
                    producer.send(line.alias, line.record)
                    continue
                except (ValueError, TypeError) as exc:  # the Avro encoder's complaints
                    line = type(line)(line.number, error=f"cannot encode: {exc}")
            bad += 1
            progress.console.print(f"{file}:{line.number}: {line.error}", markup=False)
    return bad


def _send(file: Path, send: Callable[[str], None]) -> int:
    """``send`` every non-blank line of ``file``; a line it refuses (ValueError) is reported with its number."""
    bad = 0
    with file.open() as fh, progress_bar("produce") as progress:
        task = progress.add_task("lines", total=sum(1 for _ in fh))
        fh.seek(0)
        for number, text in enumerate(fh, start=1):
            progress.update(task, completed=number)
            if not text.strip():
                continue
            try:
                send(text)
            except ValueError as exc:
                bad += 1
                progress.console.print(f"{file}:{number}: {exc}", markup=False)
    return bad


RAW_FIELDS = ("topic", "key", "value_b64", "value_hex", "headers")


def _raw_record(text: str, s: Settings, known: set[str]) -> tuple[str, bytes | None, bytes | None,
                                                                   list[tuple[str, str | bytes | None]]]:
    """One ``--raw`` line as (topic, key, value, headers); a ValueError says what is wrong with it."""
    import base64
    import binascii
    import json

    from dataflows.kafka.producer import RECORD_OF_ALIAS

    try:
        obj = json.loads(text)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(obj, dict):
        raise ValueError('expected {"topic": ..., "key": ..., "value_b64" or "value_hex": ..., "headers": {...}}')
    unknown = sorted(set(obj) - set(RAW_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; a raw line has {', '.join(RAW_FIELDS)}")
    topic = obj.get("topic")
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"topic: one of {', '.join(RECORD_OF_ALIAS)} or a topic's full name")
    topic = s.topic_alias(topic) if topic in RECORD_OF_ALIAS else topic
    if topic not in known:
        raise ValueError(f"no topic {topic!r} on {redact.text(s.kafka_bootstrap)} (`atp topics create` makes the project's)")
    key = obj.get("key")
    if key is not None and not isinstance(key, str):
        raise ValueError("key: text or null")
    given = [f for f in ("value_b64", "value_hex") if f in obj]
    if len(given) != 1:
        raise ValueError("give one of value_b64 and value_hex (null for a record without a value)")
    encoded = obj[given[0]]
    if encoded is not None and not isinstance(encoded, str):
        raise ValueError(f"{given[0]}: a string or null")
    try:
        value = None if encoded is None else (base64.b64decode(encoded, validate=True) if given[0] == "value_b64"
                                              else bytes.fromhex(encoded))
    except (binascii.Error, ValueError):
        raise ValueError(f"{given[0]} is not {'base64' if given[0] == 'value_b64' else 'hexadecimal'}") from None
    headers = obj.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) or v is None for v in headers.values()):
        raise ValueError("headers: an object of text (or null) values")
    return (topic, None if key is None else key.encode(), value,
            [(k, None if v is None else v.encode()) for k, v in headers.items()])


@friendly
def safety_stock(
    location: str = typer.Argument(..., help="The location whose safety stock is set."),
    units: int = typer.Option(None, min=0, help="Units to hold back from ATP."),
    clear: bool = typer.Option(False, help="Remove the control: the configuration file's value applies again."),
    sku: str = typer.Option(None, help="One item at the location (default: the location's default for every item)."),
    reason: str = typer.Option(None, help="Why, for the audit trail on the controls topic."),
) -> None:
    """Set a safety stock through the controls topic: the dataflow applies it to the position(s),
    and a replay applies it again."""
    import time
    import uuid

    from core.errors import ConfigError
    from dataflows.jsonl import normalise
    from dataflows.kafka.admin import check_kafka
    from dataflows.kafka.producer import EventProducer
    from state.errors import InvalidEvent

    if (units is None) == (not clear):
        raise ConfigError("give either --units N or --clear")
    s = settings()
    event = {"event_id": f"ctl-{uuid.uuid4()}", "occurred_at": int(time.time() * 1000), "source": "atp-cli",
             "sku": sku, "location": location, "safety_stock": None if clear else units, "reason": reason}
    try:
        record = normalise("controls", event)
    except InvalidEvent as exc:
        raise ConfigError(str(exc)) from None
    check_kafka(s)
    producer = EventProducer(s)
    producer.send("controls", record)
    if producer.flush() or producer.failed:
        raise AtpError(f"the control was not delivered to {s.topic_controls}: {producer.last_error}")
    scope = f"{sku}@{location}" if sku else f"every item at {location}"
    what = "cleared" if clear else f"{units} units"
    console.print(f"safety stock of {scope}: {what} (sent to {s.topic_controls} as {event['event_id']})")
