"""`atp replay` and `atp generation list|verify|switch|drop`: rebuild the keyspace and move the API."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from atp.cli.common import console, err, friendly, settings
from core.errors import AtpError, ConfigError
from core.procinfo import own_peak_rss_mib
from projection.keys import GENERATION_PATTERN, generations_of, keyspace_of
from state.position import FORMULAS

if TYPE_CHECKING:  # the commands import their heavy modules when they run
    import redis

    from core.config import Settings
    from projection.verify import Diff

generation_app = typer.Typer(help="Keyspace generations: list, verify, switch, drop.", no_args_is_help=True,
                             pretty_exceptions_show_locals=False)


def _name(value: str) -> str:
    if not re.fullmatch(GENERATION_PATTERN, value):
        raise typer.BadParameter("lower-case letters, digits, '-' and '_', at most 32, e.g. rebuild-1122")
    return value


def _until(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("an ISO 8601 time, e.g. 2026-11-21T14:05:00+01:00") from None
    if at.tzinfo is None:
        raise typer.BadParameter("add a time zone (e.g. +01:00 or Z): a bare time is ambiguous")
    return int(at.timestamp() * 1000)


def _starts(values: list[str]) -> dict[str, int]:
    out = {}
    for v in values:
        where, sep, offset = v.rpartition("=")
        if not sep or ":" not in where or not offset.isdigit():
            raise typer.BadParameter(f"{v!r}: expected topic:partition=offset")
        out[where] = int(offset)
    return out


def _client(s: Settings) -> redis.Redis:
    from dataflows.runtime.run import check_redis
    from projection.client import connect

    check_redis(s)
    return connect(s, socket_timeout=30, socket_connect_timeout=5)


def _print_diff(diff: Diff, limit: int) -> None:
    d = diff.as_dict(limit)
    console.print(f"keys: {d['keys_new']} new, {d['keys_current']} current; equal {d['equal']}, "
                  f"different {d['different']}, version apart {d['version_apart']}, "
                  f"only in new {d['only_new']}, only in current {d['only_current']}")
    for key, fields in ((e["key"], e["fields"]) for e in d["examples"]["different"]):
        console.print(f"  differs {key}: " + ", ".join(f"{f} {a}→{b}" for f, (a, b) in sorted(fields.items())))
    for e in d["examples"]["version_apart"]:
        console.print(f"  version {e['key']}: new {e['new']}, current {e['current']}")
    for key in d["examples"]["only_new"]:
        console.print(f"  only in new {key}")
    for key in d["examples"]["only_current"]:
        console.print(f"  only in current {key}")


def replay(
    name: str = typer.Argument(..., callback=_name, help="The new generation's name"),
    until: str = typer.Option(None, help="Point in time (ISO 8601 with zone): only records logged before it"),
    formula: int = typer.Option(None, help=f"ATP formula version ({', '.join(map(str, sorted(FORMULAS)))}); "
                                "default ATP_FORMULA_VERSION"),
    start: list[str] = typer.Option([], help="topic:partition=offset to start a partition at (repeatable)"),
    allow_truncated: bool = typer.Option(False, help="Replay even though retention deleted the log's start"),
    resume: bool = typer.Option(False, help="Continue an interrupted replay of NAME"),
    discard: bool = typer.Option(False, help="Delete NAME first (an interrupted or earlier replay)"),
    dry_run: bool = typer.Option(False, help="Build, list the differences with the current generation, delete"),
    metrics_port: int = typer.Option(9109, help="Prometheus port of the replay (0: none)"),
) -> None:
    """Rebuild positions from the input log into a new generation; the live one keeps serving.

    Then run NAME live (ATP_GENERATION=NAME atp run) and move the API with `atp generation switch NAME`.
    """
    _replay(name, _until(until), formula, _starts(start), allow_truncated, resume, discard, dry_run, metrics_port)


@friendly
def _replay(name: str, until_ms: int | None, formula: int | None, starts: dict[str, int], allow_truncated: bool,
            resume: bool, discard: bool, dry_run: bool, metrics_port: int) -> None:
    from core.kafka_config import metadata
    from dataflows.runtime import replay as rp
    from dataflows.runtime.run import DONE, Replay
    from dataflows.runtime.run import run as run_flow
    from projection.generations import count_positions, current, drop
    from projection.verify import compare

    s = settings()
    if formula is not None and formula not in FORMULAS:
        raise ConfigError(f"--formula {formula}: known versions are {', '.join(map(str, sorted(FORMULAS)))}")
    client = _client(s)
    metadata(s)  # the broker too, before anything is prepared: one line within seconds when it is down
    req = rp.Request(name, until_ms, formula or s.formula_version or 1, starts, allow_truncated, resume, discard)
    gen, spec = rp.prepare(s, client, req)
    gen = gen.model_copy(update={"metrics_port": metrics_port})
    with Progress(TextColumn(f"replay {name}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task("records", total=None, rate="")
        started = time.monotonic()

        def show(read: int, total: int) -> None:
            rate = read / max(1e-9, time.monotonic() - started)
            bar.update(task, completed=read, total=total, rate=f"{rate:,.0f} rec/s")

        progress = rp.Progress(spec, show)
        progress.start()
        try:
            outcome = run_flow(gen, Replay(spec, rp.bounds_of(spec)))
        finally:
            progress.stopped.set()
        progress.tick()
    seconds = time.monotonic() - started
    if outcome != DONE:
        err.print(f"replay of '{name}' stopped; `atp replay {name} --resume` continues it, --discard deletes it")
        raise typer.Exit(130)
    keys = count_positions(client, keyspace_of(gen))
    console.print(f"replayed {progress.read:,} records into generation '{name}' ({spec.kind}, formula "
                  f"{spec.formula_version}) in {seconds:.1f} s: {progress.read / max(seconds, 1e-9):,.0f} rec/s, "
                  f"{keys:,} keys, peak RSS {own_peak_rss_mib():,.0f} MiB")
    if dry_run:
        cur = current(client, generations_of(s))
        diff = compare(client, keyspace_of(gen), generations_of(s).keyspace(cur))
        console.print(f"dry run: '{name}' against the current generation '{cur}'")
        _print_diff(diff, 20)
        drop(s, client, name)
        console.print(f"deleted '{name}'")
    elif spec.kind == "pit":
        console.print(f"read it with ?generation={name} (it stays frozen and never becomes current)")
    else:
        console.print(f"next: run it live (ATP_GENERATION={name} atp run), then `atp generation switch {name}`")


@generation_app.command("list")
@friendly
def generation_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output")) -> None:
    """Every generation: whether it is current, its kind, state, formula and key count."""
    from projection.generations import list_all

    s = settings()
    found = list_all(s, _client(s))
    if as_json:
        console.print_json(json.dumps([{"name": g.name, "current": g.current, "keys": g.keys, **g.meta} for g in found]))
        return
    table = Table("name", "current", "kind", "state", "formula", "keys", "until", "retire at")
    for g in found:
        m = g.meta
        table.add_row(g.name, "*" if g.current else "", m.get("kind", "live"), m.get("state", "no keyspace"),
                      m.get("formula_version", "1"), f"{g.keys:,}", _when(m.get("until")), _when(m.get("retire_at")))
    console.print(table)


def _when(ms: str | None) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat(timespec="seconds") if ms else ""


@generation_app.command("verify")
@friendly
def generation_verify(
    name: str = typer.Argument(..., callback=_name),
    settle: float = typer.Option(10.0, help="Seconds to wait for keys whose versions are apart to converge"),
    limit: int = typer.Option(20, help="Examples listed per kind of difference"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Compare NAME with the current generation key by key; exit 1 when they differ."""
    from projection.generations import current
    from projection.verify import compare

    s = settings()
    client = _client(s)
    cur = current(client, generations_of(s))
    diff = compare(client, generations_of(s).keyspace(name), generations_of(s).keyspace(cur), settle)
    if as_json:
        console.print_json(json.dumps({"generation": name, "current": cur, **diff.as_dict(limit)}))
    else:
        console.print(f"'{name}' against the current generation '{cur}'")
        _print_diff(diff, limit)
    if not diff.passed:
        raise typer.Exit(1)


@generation_app.command("switch")
@friendly
def generation_switch(
    name: str = typer.Argument(..., callback=_name),
    grace: float = typer.Option(300.0, min=0, help="Seconds the old generation stays readable before it retires"),
    settle: float = typer.Option(10.0, min=0, help="Seconds to wait for NAME's dataflow to be live and caught up, "
                                 "then for keys to converge"),
    max_behind: float = typer.Option(15.0, min=0, help="Caught up: NAME's dataflow has read every input record "
                                     "logged up to this many seconds ago"),
    force: bool = typer.Option(False, help="Switch even when NAME's dataflow is not live and caught up, or "
                               "verification finds differences (never to a point-in-time generation)"),
) -> None:
    """Point the API at NAME (one atomic SET) once its dataflow runs live and caught up and it equals the current
    generation; the old one retires after --grace."""
    from projection.generations import check_switchable, current, not_live, switch
    from projection.verify import compare

    s = settings()
    client = _client(s)
    check_switchable(s, client, name)  # what no --force overrides (a point-in-time generation, for one)
    problem = _wait_live(s, client, name, settle, max_behind)
    if problem is not None and not force:
        raise not_live(name, problem)
    if problem is not None:
        err.print(f"warning: switching to '{name}' although {problem} (--force)", style="yellow", markup=False)
    cur = current(client, generations_of(s))
    diff = compare(client, generations_of(s).keyspace(name), generations_of(s).keyspace(cur), settle)
    _print_diff(diff, 10)
    if not diff.passed and not force:
        raise AtpError(f"'{name}' differs from '{cur}' (listed above); fix the cause, or --force if the "
                       "differences are the point (a formula change)")
    old = switch(s, client, name, grace)
    console.print(f"the API now serves '{name}'; '{old}' retires in {grace:.0f} s (its dataflow then stops and "
                  "deletes it)")


def _wait_live(s: Settings, client: redis.Redis, name: str, settle: float, max_behind: float) -> str | None:
    """Wait up to ``settle`` s for NAME's dataflow to be running live and caught up, as the heartbeat
    and read progress it writes into NAME's meta say; returns why not (None: it is, and says so)."""
    from projection.generations import CAUGHT_UP_AT, live_problem, now_ms, read_meta

    ks = generations_of(s).keyspace(name)
    deadline, said = time.monotonic() + settle, False
    while True:
        meta = read_meta(client, ks) or {}
        at = now_ms()
        problem = live_problem(meta, at, int(s.ready_heartbeat_s * 1000), int(max_behind * 1000))
        if problem is None:
            console.print(f"'{name}' runs live: its dataflow has read every input record logged up to "
                          f"{(at - int(meta[CAUGHT_UP_AT])) / 1000:.1f} s ago")
            return None
        if time.monotonic() >= deadline:
            return problem
        if not said:
            err.print(f"waiting up to {settle:g} s for the dataflow of '{name}': {problem}", markup=False)
            said = True
        time.sleep(0.5)


@generation_app.command("drop")
@friendly
def generation_drop(
    name: str = typer.Argument(..., callback=_name),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation"),
) -> None:
    """Delete a generation that is not current (its keys, recovery store and spec). Stop its dataflow first."""
    from projection.generations import drop

    s = settings()
    if not yes:
        typer.confirm(f"Delete generation '{name}'?", abort=True)
    console.print(f"deleted {drop(s, _client(s), name)} Redis keys of '{name}'")
