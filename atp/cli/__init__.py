"""The ``atp`` command: it only assembles the command groups, one module each, and is imported by nothing.

The command modules import the rest of the project inside each command, so that ``atp --help`` and a
mistyped command answer at once instead of loading Bytewax, the API and the benchmarks first.
"""

from __future__ import annotations

import faulthandler
import os
import sys
from importlib.util import find_spec

import typer

from atp.cli import demo, dlq, flow, keys, serve, stack, status, topics
from atp.cli.generations import generation_app, replay

# A crash in native code (librdkafka, Bytewax's Rust core) then leaves the Python stack of every
# thread on stderr instead of a bare exit code.
faulthandler.enable()

# Help in a pipe (`atp replay --help | less`, a CI log) is laid out 80 columns wide unless told
# otherwise, which cuts option names and words like topic:partition=offset with "…". Outside a
# terminal it gets HELP_WIDTH columns; COLUMNS (rich) and TERMINAL_WIDTH (typer) still win.
HELP_WIDTH = 120
if not sys.stdout.isatty() and not os.environ.get("COLUMNS") and not os.environ.get("TERMINAL_WIDTH"):
    from typer import rich_utils

    rich_utils.MAX_WIDTH = HELP_WIDTH

app = typer.Typer(help="atp-stream: streaming available-to-promise.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_show_locals=False)  # a local may hold a secret
app.add_typer(stack.app, name="stack")
app.add_typer(topics.app, name="topics")
app.add_typer(dlq.app, name="dlq")
app.add_typer(generation_app, name="generation")
app.add_typer(keys.app, name="keys")
app.command()(replay)
app.command()(flow.run)
app.command()(flow.reset)
app.command()(serve.serve)
app.command()(flow.produce)
app.command("safety-stock")(flow.safety_stock)
app.command()(status.status)
app.command()(demo.simulate)
if find_spec("loadtest") is not None:  # the fault and load suites are not in the Docker image
    from atp.cli import bench

    app.command()(bench.chaos)
    app.command()(bench.loadtest)
app.command()(demo.demo)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
