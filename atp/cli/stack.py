"""`atp stack`: the local stack (a broker, tansu or Apache Kafka, and Redis)."""

from __future__ import annotations

import typer

from atp.cli.common import console, friendly, settings

app = typer.Typer(help="The local stack (a broker, tansu or Apache Kafka, and Redis).", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)


@app.command("up")
@friendly
def stack_up(
    broker: str = typer.Option(None, "--broker", help="tansu (embedded, default) or kafka (Apache Kafka, KRaft); "
                                                     "default: ATP_STACK_BROKER."),
    sasl: bool = typer.Option(False, "--sasl", help="kafka: clients connect with SASL_SSL (SCRAM) over a "
                                                    "certificate made here (ATP_STACK_KAFKA_SASL)."),
) -> None:
    """Start the broker and Redis (if not running) and create the topics."""
    from core.errors import ConfigError
    from sandbox.stack import Stack

    s = settings()
    if broker is not None:
        if broker not in ("tansu", "kafka"):
            raise ConfigError(f"--broker {broker!r}: use tansu or kafka")
        s = s.model_copy(update={"stack_broker": broker})
    if sasl:
        if s.stack_broker != "kafka":
            raise ConfigError("--sasl needs the kafka broker: add --broker kafka (the embedded tansu has no SASL)")
        s = s.model_copy(update={"stack_kafka_sasl": True})
    for name, what in Stack(s).up().items():
        console.print(f"{name:8} {what}", markup=False, soft_wrap=True)
    console.print(f"topics   ready ({s.topic_partitions} partitions each); state in {s.state_dir}/")


@app.command("down")
@friendly
def stack_down() -> None:
    """Stop every process this stack started (API, dataflow, Redis, broker)."""
    from sandbox.stack import Stack

    stopped = Stack(settings()).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command("status")
@friendly
def stack_status(
    as_json: bool = typer.Option(False, "--json", help="One JSON document instead of one line per process and "
                                                       "component."),
) -> None:
    """The stack's processes, then what `atp status` shows (exit code 0 when all is up and the keyspace ready)."""
    from atp.cli.status import show
    from sandbox.stack import Stack
    from sandbox.status import gather

    s = settings()
    stack = Stack(s)
    kind = stack.broker_kind()
    processes = {name: {"running": pid is not None, "pid": pid, **({"kind": kind} if name == "broker" and kind else {})}
                 for name, pid in stack.status().items()}
    show(gather(s, processes), as_json)
