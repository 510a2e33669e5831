"""`atp dlq`: dead letters (list, show, skip, redrive)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from atp.cli.common import console, friendly, settings
from core.errors import AtpError

app = typer.Typer(help="Dead letters: list, show, redrive, skip.", no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.command("list")
@friendly
def dlq_list(
    reason: str = typer.Option(None, help="Only this reason."),
    limit: int = typer.Option(20, help="Newest entries to show."),
) -> None:
    """Dead letters by reason and source topic, then the newest entries."""
    from dataflows.runtime import deadletters as dlq

    entries = [e for e in dlq.read_dead_letters(settings()).values() if reason in (None, e.reason)]
    table = Table(title=f"{len(entries)} dead letters")
    for col in ("reason", "source topic", "count"):
        table.add_column(col, justify="right" if col == "count" else "left")
    for (why, topic), n in sorted(dlq.summary(entries).items()):
        table.add_row(why, topic, str(n))
    console.print(table)
    for e in entries[-limit:]:
        console.print(f"{e.source}  {e.reason}  {e.message[:120]}", markup=False)


@app.command("show")
@friendly
def dlq_show(source: str = typer.Argument(..., help="topic:partition:offset, as `atp dlq list` prints it")) -> None:
    """One dead letter: where it came from, why it failed, its headers and bytes."""
    from dataflows.runtime import deadletters as dlq

    entry = dlq.read_dead_letters(settings()).get(dlq.parse_source(source))
    if entry is None:
        raise AtpError(f"no dead letter from {source}; `atp dlq list` shows what there is")
    for name, value in (("source", entry.source), ("reason", entry.reason), ("error", entry.error_class),
                        ("message", entry.message), ("key", repr(entry.key)), ("copies", entry.copies)):
        console.print(f"{name:8} {value}", markup=False)
    for k, v in sorted(entry.headers.items()):
        console.print(f"header   {k}={v}", markup=False)
    console.print(f"value    {len(entry.value or b'')} bytes: {(entry.value or b'')[:64].hex()}", markup=False)


@app.command("skip")
@friendly
def dlq_skip(source: str = typer.Argument(..., help="topic:partition:offset of an input record, as `atp dlq list` prints it")) -> None:
    """Dead-letter one input record unread (reason `skipped`) instead of processing it (docs/crash-loop.md)."""
    from dataflows.runtime import deadletters as dlq

    added, note = dlq.skip(settings(), source)
    console.print(f"{'skipping' if added else 'already on the skip list:'} {source}; {note}", markup=False)


@app.command("redrive")
@friendly
def dlq_redrive(
    source: list[str] = typer.Option(None, help="topic:partition:offset to redrive (repeatable)."),
    reason: str = typer.Option(None, help="Redrive every dead letter with this reason."),
    fix: Path = typer.Option(None, exists=True, dir_okay=False,
                             help='JSONL of {"source": "topic:p:o", "event": {...}}: corrected events.'),
    dry_run: bool = typer.Option(False, help="Say what would be sent, send nothing."),
) -> None:
    """Re-publish fixed or now-valid dead letters to their source topics; redriving twice sends nothing."""
    import json

    from dataflows.runtime import deadletters as dlq

    s = settings()
    fixes: dict[str, dict[str, Any]] = {}
    if fix is not None:
        for n, line in enumerate(fix.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    obj = json.loads(line)
                    fixes[dlq.parse_source(obj["source"])] = obj["event"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise AtpError(f"{fix}:{n}: expected {{\"source\": ..., \"event\": {{...}}}} ({exc})") from None
    wanted = {dlq.parse_source(x) for x in source or []} | set(fixes)
    entries = [e for e in dlq.read_dead_letters(s).values()
               if (not wanted or e.source in wanted) and reason in (None, e.reason)]
    redriver = dlq.Redriver(s)
    plan = redriver.plan(entries, fixes)
    for src, why in plan.still_invalid:
        console.print(f"still invalid  {src}  {why}", markup=False)
    for src in plan.skipped_done:
        console.print(f"already redriven  {src}", markup=False)
    if dry_run:
        console.print(f"would redrive {len(plan.send)}; {len(plan.still_invalid)} still invalid, "
                      f"{len(plan.skipped_done)} already redriven")
        return
    sent = redriver.send(plan)
    console.print(f"redrove {sent}; {len(plan.still_invalid)} still invalid, {len(plan.skipped_done)} already redriven")
