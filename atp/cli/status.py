"""`atp status`: every component of a deployment (its ATP_* settings), up or down, in a few seconds."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from atp.cli.common import console, friendly, settings

if TYPE_CHECKING:
    from sandbox.status import Report


def show(report: Report, as_json: bool) -> None:
    """Print the report (one line per component, or one JSON document) and exit 0 if all is well, else 1."""
    if as_json:
        console.print(json.dumps(report.as_dict(), indent=2), markup=False, highlight=False, soft_wrap=True)
    else:
        for line in report.lines():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(0 if report.ok else 1)


@friendly
def status(
    as_json: bool = typer.Option(False, "--json", help="One JSON document instead of one line per component."),
) -> None:
    """Kafka, Redis, the keyspace, the dataflow and the API: up or down, lag, last event, dead letters.

    Exit code 0 when everything is up and the keyspace ready, 1 otherwise (2: the settings are wrong).
    """
    from sandbox.status import gather

    show(gather(settings()), as_json)
