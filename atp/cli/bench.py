"""`atp chaos` and `atp loadtest`: the fault and load suites (the `loadtest` package; absent from the Docker image)."""

from __future__ import annotations

from pathlib import Path

import typer

from atp.cli.common import console, friendly, settings


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
    from loadtest.chaos import report as chaos_report
    from loadtest.chaos.run import ChaosConfig, run_chaos

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


@friendly
def loadtest(
    base_rate: float = typer.Option(1_000.0, help="Baseline events per second."),
    peak_factor: float = typer.Option(10.0, help="The promotion peak as a multiple of the baseline."),
    phases: str = typer.Option("10,20,30,20,10", help="Seconds of warm-up,ramp,hold,decay,cool-down."),
    skus: int = typer.Option(20_000, help="Distinct SKUs (Zipf popularity)."),
    locations: int = typer.Option(20, help="Distinct locations."),
    seed: int = typer.Option(1, help="Seed of the simulated stream."),
    workers: int = typer.Option(1, help="Bytewax workers of the dataflow."),
    snapshot_s: float = typer.Option(5.0, help="The dataflow's snapshot interval (ATP_SNAPSHOT_INTERVAL_S), seconds."),
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
    from loadtest.common.harness import REPORT_DIR, write_report
    from loadtest.load import report as loadreport
    from loadtest.load.config import LoadConfig
    from loadtest.load.run import run_loadtest
    from loadtest.workload.profile import PeakProfile

    try:
        w, r, h, d, c = (float(x) for x in phases.split(","))
        step_rates = tuple(float(x) for x in steps.split(","))
        profile = PeakProfile(base_rate, peak_factor, w, r, h, d, c)
    except ValueError as exc:
        raise typer.BadParameter(f"--phases takes five numbers of seconds, --steps rates, both comma-separated: {exc}") from None
    settings()  # logging
    cfg = LoadConfig(profile=profile, skus=skus, locations=locations, seed=seed, workers=workers, api_workers=api_workers,
                     find_max=find_max, snapshot_s=snapshot_s,
                     step_rates=step_rates, step_s=step_s, api_s=api_s, api_rate=api_rate, broker=broker)
    if broker not in ("tansu", "kafka"):
        raise typer.BadParameter("--broker must be tansu or kafka")
    report = run_loadtest(cfg, log=lambda line: console.print(line, markup=False))
    out = report_dir or REPORT_DIR
    name = "loadtest" if broker == "tansu" else f"loadtest-{broker}"
    console.print(write_report(out, name, report, loadreport.markdown), markup=False)
    loadreport.plot(report, out / f"{name}.png")
