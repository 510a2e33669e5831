"""The ``atp`` command: local stack, topics, dataflow, API, producing, simulating and a demo."""

from __future__ import annotations

import faulthandler
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from atp.cli_common import progress_bar, console, friendly, settings
from atp.cli_generations import generation_app, replay
from atp.errors import AtpError

# A crash in native code (librdkafka, Bytewax's Rust core) then leaves the Python stack of every
# thread on stderr instead of a bare exit code.
faulthandler.enable()

app = typer.Typer(help="atp-stream: streaming available-to-promise.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_show_locals=False)  # a local may hold a secret
stack_app = typer.Typer(help="The local stack (a broker, tansu or Apache Kafka, and Redis).", no_args_is_help=True, pretty_exceptions_show_locals=False)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True, pretty_exceptions_show_locals=False)
dlq_app = typer.Typer(help="Dead letters: list, show, redrive, skip.", no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
app.add_typer(generation_app, name="generation")
app.command()(replay)
@stack_app.command("up")
@friendly
def stack_up(
    broker: str = typer.Option(None, "--broker", help="tansu (embedded, default) or kafka (Apache Kafka, KRaft); "
                                                     "default: ATP_STACK_BROKER."),
    sasl: bool = typer.Option(False, "--sasl", help="kafka: clients connect with SASL_SSL (SCRAM) over a "
                                                    "certificate made here (ATP_STACK_KAFKA_SASL)."),
) -> None:
    """Start the broker and Redis (if not running) and create the topics."""
    from atp.errors import ConfigError
    from atp.stack import Stack

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


@stack_app.command("down")
@friendly
def stack_down() -> None:
    """Stop every process this stack started (API, dataflow, Redis, broker)."""
    from atp.stack import Stack

    stopped = Stack(settings()).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("status")
@friendly
def stack_status() -> None:
    """Show which processes of this stack are running."""
    from atp.stack import Stack

    stack = Stack(settings())
    kind = stack.broker_kind()
    for name, pid in stack.status().items():
        what = f"{kind}, " if name == "broker" and kind else ""
        console.print(f"{name:8} {'running (' + what + 'pid ' + str(pid) + ')' if pid else 'stopped'}")


@topics_app.command("create")
@friendly
def topics_create() -> None:
    """Create the input, availability and dead-letter topics (existing ones are kept)."""
    from dataflows.kafka_io import create_topics

    for topic, outcome in create_topics(settings()).items():
        console.print(f"{topic:32} {outcome}")


@dlq_app.command("list")
@friendly
def dlq_list(
    reason: str = typer.Option(None, help="Only this reason."),
    limit: int = typer.Option(20, help="Newest entries to show."),
) -> None:
    """Dead letters by reason and source topic, then the newest entries."""
    from atp import dlq

    entries = [e for e in dlq.read_dead_letters(settings()).values() if reason in (None, e.reason)]
    table = Table(title=f"{len(entries)} dead letters")
    for col in ("reason", "source topic", "count"):
        table.add_column(col, justify="right" if col == "count" else "left")
    for (why, topic), n in sorted(dlq.summary(entries).items()):
        table.add_row(why, topic, str(n))
    console.print(table)
    for e in entries[-limit:]:
        console.print(f"{e.source}  {e.reason}  {e.message[:120]}", markup=False)


@dlq_app.command("show")
@friendly
def dlq_show(source: str = typer.Argument(..., help="topic:partition:offset, as `atp dlq list` prints it")) -> None:
    """One dead letter: where it came from, why it failed, its headers and bytes."""
    from atp import dlq

    entry = dlq.read_dead_letters(settings()).get(dlq.parse_source(source))
    if entry is None:
        raise AtpError(f"no dead letter from {source}; `atp dlq list` shows what there is")
    for name, value in (("source", entry.source), ("reason", entry.reason), ("error", entry.error_class),
                        ("message", entry.message), ("key", repr(entry.key)), ("copies", entry.copies)):
        console.print(f"{name:8} {value}", markup=False)
    for k, v in sorted(entry.headers.items()):
        console.print(f"header   {k}={v}", markup=False)
    console.print(f"value    {len(entry.value or b'')} bytes: {(entry.value or b'')[:64].hex()}", markup=False)


@dlq_app.command("skip")
@friendly
def dlq_skip(source: str = typer.Argument(..., help="topic:partition:offset of an input record, as `atp dlq list` prints it")) -> None:
    """Dead-letter one input record unread (reason `skipped`) instead of processing it (docs/crash-loop.md)."""
    from atp import dlq

    added, note = dlq.skip(settings(), source)
    console.print(f"{'skipping' if added else 'already on the skip list:'} {source}; {note}", markup=False)


@dlq_app.command("redrive")
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

    from atp import dlq

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


@app.command()
@friendly
def run() -> None:
    """Run the dataflow in the foreground (Ctrl-C stops it; recovery resumes where it stopped)."""
    from dataflows.run import RETIRED, run as run_flow

    s = settings()
    if run_flow(s) == RETIRED:
        console.print(f"generation '{s.generation}' retired after a switch; its keys and recovery store are deleted")


@app.command()
@friendly
def reset(yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")) -> None:
    """Delete the dataflow's recovery store and its Redis keyspace; the next run rebuilds from offset 0.

    Stop the dataflow first. Channels get 503 until the next run has re-published the keyspace.
    """
    from atp.redisconn import connect
    from dataflows.continuity import reset as reset_all

    s = settings()
    if not yes:
        typer.confirm(f"Delete every generation's recovery store under {s.state_dir} and every Redis key "
                      f"under '{s.redis_key_prefix}:'?", abort=True)
    deleted, existed = reset_all(s, connect(s, socket_connect_timeout=5))
    console.print(f"deleted {deleted} Redis keys; recovery store {'removed' if existed else 'was absent'}")


@app.command()
@friendly
def serve() -> None:
    """Serve the availability API in the foreground."""
    import uvicorn

    from serving.main import create_app

    s = settings()
    if s.api_workers == 1:
        uvicorn.run(create_app(s), host=s.api_host, port=s.api_port, log_level="warning", access_log=False)
        return
    from serving.metrics import multiprocess_dir

    multiprocess_dir(s.state_dir / "api-metrics")  # before the workers start: they count into files there
    uvicorn.run("serving.main:main_app", factory=True, workers=s.api_workers, host=s.api_host, port=s.api_port,
                log_level="warning", access_log=False)


@app.command()
@friendly
def produce(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL: one {topic, event} a line")) -> None:
    """Send canonical JSON events to Kafka as Avro; invalid lines are reported and not sent."""
    from atp.jsonl import parse_lines
    from atp.producer import EventProducer
    from dataflows.kafka_io import check_kafka

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
                try:
                    producer.send(line.alias, line.record)  # type: ignore[arg-type]
                    continue
                except (ValueError, TypeError) as exc:  # the Avro encoder's complaints
                    line = type(line)(line.number, error=f"cannot encode: {exc}")
            bad += 1
            progress.console.print(f"{file}:{line.number}: {line.error}", markup=False)
    undelivered = producer.flush()
    console.print(f"sent {producer.sent - undelivered - producer.failed}, invalid {bad}, failed {producer.failed + undelivered}")
    if bad or producer.failed or undelivered:
        raise typer.Exit(1)


@app.command("safety-stock")
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

    from atp.errors import ConfigError
    from atp.jsonl import normalise
    from atp.producer import EventProducer
    from dataflows.kafka_io import check_kafka
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


@app.command()
@friendly
def simulate(
    count: int = typer.Option(10_000, help="Events to send."),
    rate: float = typer.Option(1000.0, help="Target events per second (0 = as fast as possible)."),
    skus: int = typer.Option(200, help="Distinct SKUs (Zipf popularity)."),
    locations: int = typer.Option(4, help="Distinct locations."),
    seed: int = typer.Option(42, help="Random seed: the same seed gives the same events."),
) -> None:
    """Send a seeded, realistic stream of warehouse, order and snapshot events."""
    from atp.producer import EventProducer
    from dataflows.kafka_io import check_kafka
    from loadtest.pace import send_paced
    from loadtest.simulator import Simulator

    s = settings()
    check_kafka(s)
    result = send_paced(Simulator(seed, skus, locations), EventProducer(s), rate, count)
    console.print(f"sent {result.sent} events in {result.seconds:.1f} s ({result.rate:,.0f}/s), failed {result.failed}")
    if result.interrupted:
        raise typer.Exit(130)


@app.command()
@friendly
def chaos(
    events: int = typer.Option(200_000, help="Simulated events (duplicates and poison come on top)."),
    skus: int = typer.Option(2_000, help="Distinct SKUs."),
    locations: int = typer.Option(20, help="Distinct locations."),
    seed: int = typer.Option(1, help="Seed of the stream and of the fault schedule."),
    rate: float = typer.Option(0.0, help="Records per second; 0 spreads production over the fault schedule."),
    kills: int = typer.Option(3, help="kill -9 of the dataflow (restarted with recovery)."),
    gap: str = typer.Option("5,30", help="Seconds between faults: min,max."),
    redis_loss: str = typer.Option("flush", help="flush | restart | none."),
    pauses: bool = typer.Option(True, help="SIGSTOP/SIGCONT the dataflow and Redis."),
    pause: str = typer.Option("10,60", help="Pause length in seconds: min,max."),
    duplicates: float = typer.Option(0.10, help="Share of events produced twice."),
    poison: float = typer.Option(0.005, help="Share of events followed by a bad record."),
    workers: int = typer.Option(1, help="Bytewax workers."),
    snapshot_interval: float = typer.Option(2.0, help="Dataflow recovery snapshot interval, seconds."),
    broker: str = typer.Option("tansu", help="The private stack's broker: tansu | kafka (needed for broker faults)."),
    broker_kills: int = typer.Option(0, help="kill -9 of the broker, restarted on its log (kafka only)."),
    pause_broker: bool = typer.Option(False, help="SIGSTOP/SIGCONT the broker for a pause (kafka only)."),
    report_dir: Path = typer.Option(None, help="Where to write chaos.json and chaos.md (default loadtest/reports)."),
) -> None:
    """Run the real dataflow and API under faults and compare every key with an independent oracle."""
    from loadtest import chaos_report
    from loadtest.chaos import ChaosConfig, run_chaos

    def pair(text: str, name: str) -> tuple[float, float]:
        try:
            lo, hi = (float(x) for x in text.split(","))
        except ValueError:
            raise typer.BadParameter(f"--{name} takes min,max in seconds, e.g. 5,30") from None
        if not 0 <= lo <= hi:
            raise typer.BadParameter(f"--{name} needs 0 <= min <= max")
        return lo, hi

    if redis_loss not in ("flush", "restart", "none"):
        raise typer.BadParameter("--redis-loss must be flush, restart or none")
    if broker not in ("tansu", "kafka"):
        raise typer.BadParameter("--broker must be tansu or kafka")
    if (broker_kills or pause_broker) and broker != "kafka":
        raise typer.BadParameter("--broker-kills and --pause-broker need --broker kafka (tansu loses its log)")
    settings()  # logging
    cfg = ChaosConfig(events=events, skus=skus, locations=locations, seed=seed, rate=rate, kills=kills,
                      kill_gap_s=pair(gap, "gap"), duplicates=duplicates, poison=poison, redis_loss=redis_loss,
                      pause_dataflow=pauses, pause_redis=pauses, pause_s=pair(pause, "pause"), workers=workers,
                      snapshot_interval_s=snapshot_interval, broker=broker, broker_kills=broker_kills,
                      pause_broker=pause_broker)
    report = run_chaos(cfg, log=lambda line: console.print(line, markup=False))
    name = "chaos" if broker == "tansu" else f"chaos-{broker}"  # each broker's report beside the other's
    paths = chaos_report.write(report, report_dir or chaos_report.REPORT_DIR, name)
    console.print(chaos_report.markdown(report))
    console.print(f"report: {paths[0]} and {paths[1]}")
    if not report["passed"]:
        raise typer.Exit(1)


@app.command()
@friendly
def loadtest(
    base_rate: float = typer.Option(1_000.0, help="Baseline events per second."),
    peak_factor: float = typer.Option(10.0, help="The promotion peak as a multiple of the baseline."),
    phases: str = typer.Option("10,20,30,20,10", help="Seconds of warm-up,ramp,hold,decay,cool-down."),
    skus: int = typer.Option(20_000, help="Distinct SKUs (Zipf popularity)."),
    locations: int = typer.Option(20, help="Distinct locations."),
    seed: int = typer.Option(1, help="Seed of the simulated stream."),
    workers: int = typer.Option(1, help="Bytewax workers of the dataflow."),
    api_workers: int = typer.Option(2, help="API processes (ATP_API_WORKERS)."),
    find_max: bool = typer.Option(False, "--find-max", help="Then step the rate up until the lag is no longer bounded."),
    steps: str = typer.Option("5000,10000,15000,20000,25000", help="Rates of the --find-max steps, events/s."),
    step_s: float = typer.Option(60.0, help="Seconds each --find-max step is held."),
    api_s: float = typer.Option(15.0, help="Seconds of each wrk run against the API; 0 skips the API."),
    api_rate: float = typer.Option(5_000.0, help="The fixed rate of the single-key latency run, requests/s."),
    broker: str = typer.Option("tansu", help="The private stack's broker: tansu | kafka (report loadtest-kafka.*)."),
    report_dir: Path = typer.Option(None, help="Where to write loadtest.{json,md,png} (default loadtest/reports)."),
) -> None:
    """Peak-season traffic through the real dataflow and API: freshness, lag, max rate, API load."""
    from loadtest import loadreport
    from loadtest.bench import REPORT_DIR, write_report
    from loadtest.loadrun import LoadConfig, run_loadtest
    from loadtest.profile import PeakProfile

    try:
        w, r, h, d, c = (float(x) for x in phases.split(","))
        step_rates = tuple(float(x) for x in steps.split(","))
        profile = PeakProfile(base_rate, peak_factor, w, r, h, d, c)
    except ValueError as exc:
        raise typer.BadParameter(f"--phases takes five numbers of seconds, --steps rates, both comma-separated: {exc}") from None
    settings()  # logging
    cfg = LoadConfig(profile=profile, skus=skus, locations=locations, seed=seed, workers=workers, api_workers=api_workers,
                     find_max=find_max,
                     step_rates=step_rates, step_s=step_s, api_s=api_s, api_rate=api_rate, broker=broker)
    if broker not in ("tansu", "kafka"):
        raise typer.BadParameter("--broker must be tansu or kafka")
    report = run_loadtest(cfg, log=lambda line: console.print(line, markup=False))
    out = report_dir or REPORT_DIR
    name = "loadtest" if broker == "tansu" else f"loadtest-{broker}"
    console.print(write_report(out, name, report, loadreport.markdown), markup=False)
    loadreport.plot(report, out / f"{name}.png")


@app.command()
@friendly
def demo(
    count: int = typer.Option(20_000, help="Events to simulate."),
    rate: float = typer.Option(4000.0, help="Events per second."),
) -> None:
    """Start everything, stream a short simulation, and show the busiest SKUs' ATP."""
    from atp.demo import run_demo

    table_rows, api = run_demo(settings(), count, rate, console)
    table = Table(title="Busiest SKUs: network ATP (sum over locations)")
    for col in ("sku", "atp", "available", "reserved", "on hand", "inbound", "locations"):
        table.add_column(col, justify="right" if col != "sku" else "left")
    for row in table_rows:
        table.add_row(*(str(v) for v in row))
    console.print(table)
    sku = table_rows[0][0] if table_rows else "SKU-00001"
    console.print(f"\nTry:  curl {api}/v1/availability/{sku}\n      curl {api}/v1/availability/{sku}/DC-01")
    console.print(f"Docs: {api}/docs    Metrics: {api}/metrics")
    console.print("Everything keeps running; stop it with `.venv/bin/atp stack down` (or `make down`).")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
