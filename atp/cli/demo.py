"""`atp simulate` and `atp demo`: simulated events, and the two-command demo."""

from __future__ import annotations

import typer
from rich.table import Table

from atp.cli.common import console, friendly, settings


@friendly
def simulate(
    count: int = typer.Option(10_000, help="Events to send."),
    rate: float = typer.Option(1000.0, help="Target events per second (0 = as fast as possible)."),
    skus: int = typer.Option(200, help="Distinct SKUs (Zipf popularity)."),
    locations: int = typer.Option(4, help="Distinct locations."),
    seed: int = typer.Option(42, help="Random seed: the same seed from the same stock gives the same events "
                                      "(their ids carry the run's start time, so a rerun is new traffic)."),
    from_empty: bool = typer.Option(False, "--from-empty", help="Start every key from no stock instead of the "
                                    "positions Redis serves: only for a keyspace that has no positions (the "
                                    "snapshots and counts sent describe the simulated stock)."),
) -> None:
    """Send a seeded, realistic stream of warehouse, order and snapshot events.

    It continues from the positions the API serves (read from Redis once a running dataflow has caught
    up), so on top of `atp demo` its snapshots and counts match the stock there: no drift, no rebase.
    """
    import time

    from dataflows.kafka.admin import check_kafka
    from dataflows.kafka.producer import EventProducer
    from sandbox.pace import send_paced, start_from_keyspace
    from sandbox.simulator import Simulator

    s = settings()
    check_kafka(s)
    sim = Simulator(seed, skus, locations, run=f"{int(time.time() * 1000):x}")
    if not from_empty:
        start = start_from_keyspace(sim, s, on_wait=lambda behind: console.print(
            f"waiting for the dataflow to read the {behind} records it is behind, to start from current positions"))
        console.print(f"continuing from {start.positions} existing position(s) of generation '{start.generation}'"
                      if start.positions else f"no positions yet in generation '{start.generation}': starting from "
                      "empty stock", markup=False)
    result = send_paced(sim, EventProducer(s), rate, count)
    console.print(f"sent {result.sent} events in {result.seconds:.1f} s ({result.rate:,.0f}/s), failed {result.failed}")
    if result.interrupted:
        raise typer.Exit(130)


@friendly
def demo(
    count: int = typer.Option(20_000, help="Events to simulate."),
    rate: float = typer.Option(4000.0, help="Events per second."),
) -> None:
    """Start everything, stream a short simulation, and show the busiest SKUs' ATP."""
    from sandbox.demo import run_demo

    table_rows, api, token = run_demo(settings(), count, rate, console)
    table = Table(title="Busiest SKUs: network ATP (sum over locations)")
    for col in ("sku", "atp", "available", "reserved", "on hand", "inbound", "locations"):
        table.add_column(col, justify="right" if col != "sku" else "left")
    for row in table_rows:
        table.add_row(*(str(v) for v in row))
    console.print(table)
    sku = table_rows[0][0] if table_rows else "SKU-00001"
    if token is None:
        console.print(f"\nTry:  curl {api}/v1/availability/{sku}\n      curl {api}/v1/availability/{sku}/DC-01")
    else:  # the demo key (admin, on this machine only): give each channel its own, `atp keys create`
        console.print(f"\nTry:  export ATP_TOKEN={token}\n"
                      f"      curl -H \"Authorization: Bearer $ATP_TOKEN\" {api}/v1/availability/{sku}\n"
                      f"      curl -H \"Authorization: Bearer $ATP_TOKEN\" {api}/v1/availability/{sku}/DC-01",
                      markup=False)
    console.print(f"Docs: {api}/docs    Metrics: {api}/metrics (with the token)")
    console.print("Everything keeps running; stop it with `.venv/bin/atp stack down` (or `make down`).")
