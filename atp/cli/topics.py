"""`atp topics`: the project's Kafka topics."""

from __future__ import annotations

import typer

from atp.cli.common import console, friendly, settings

app = typer.Typer(help="Kafka topics.", no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.command("create")
@friendly
def topics_create() -> None:
    """Create the input, availability and dead-letter topics (existing ones are kept)."""
    from core.errors import StackError
    from core.kafka_config import metadata, unreachable
    from dataflows.kafka.admin import create_topics

    s = settings()
    metadata(s)  # a broker that is down: one line within seconds, not a timeout of every topic's request
    try:
        created = create_topics(s)
    except TimeoutError:  # it answered the check, then stopped answering
        raise StackError(unreachable(s.kafka_bootstrap, "no answer to the topic creation within 15 s")) from None
    for topic, outcome in created.items():
        console.print(f"{topic:32} {outcome}")
