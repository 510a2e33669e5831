"""`atp topics`: the project's Kafka topics."""

from __future__ import annotations


import typer

from atp.cli.common import console, friendly, settings

app = typer.Typer(help="Kafka topics.", no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.command("create")
@friendly
def topics_create() -> None:
    """Create the input, availability and dead-letter topics (existing ones are kept)."""
    from dataflows.kafka.admin import create_topics

    for topic, outcome in create_topics(settings()).items():
        console.print(f"{topic:32} {outcome}")
