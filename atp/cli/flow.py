"""`atp run`, `atp reset`, `atp produce`, `atp safety-stock`: the dataflow and what goes into it."""

from __future__ import annotations

from pathlib import Path

import typer

from atp.cli.common import progress_bar, console, friendly, settings
from core.errors import AtpError


@friendly
def run() -> None:
    """Run the dataflow in the foreground (Ctrl-C stops it; recovery resumes where it stopped)."""
    from dataflows.runtime.run import RETIRED, run as run_flow

    s = settings()
    if run_flow(s) == RETIRED:
        console.print(f"generation '{s.generation}' retired after a switch; its keys and recovery store are deleted")


@friendly
def reset(yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")) -> None:
    """Delete the dataflow's recovery store and its Redis keyspace; the next run rebuilds from offset 0.

    Stop the dataflow first. Channels get 503 until the next run has re-published the keyspace.
    """
    from projection.client import connect
    from dataflows.runtime.continuity import reset as reset_all

    s = settings()
    if not yes:
        typer.confirm(f"Delete every generation's recovery store under {s.state_dir} and every Redis key "
                      f"under '{s.redis_key_prefix}:'?", abort=True)
    deleted, existed = reset_all(s, connect(s, socket_connect_timeout=5))
    console.print(f"deleted {deleted} Redis keys; recovery store {'removed' if existed else 'was absent'}")


@friendly
def produce(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL: one {topic, event} a line")) -> None:
    """Send canonical JSON events to Kafka as Avro; invalid lines are reported and not sent."""
    from dataflows.jsonl import parse_lines
    from dataflows.kafka.producer import EventProducer
    from dataflows.kafka.admin import check_kafka

    s = settings()
    check_kafka(s)
    producer = EventProducer(s)
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
    undelivered = producer.flush()
    console.print(f"sent {producer.sent - undelivered - producer.failed}, invalid {bad}, failed {producer.failed + undelivered}")
    if bad or producer.failed or undelivered:
        raise typer.Exit(1)


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
    from dataflows.kafka.producer import EventProducer
    from dataflows.kafka.admin import check_kafka
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
