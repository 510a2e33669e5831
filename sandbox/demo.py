"""``atp demo``: the whole system on the local stack, a short simulation and a look at the result."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import httpx
from rich.console import Console

from core.config import Settings
from core.errors import StackError
from dataflows.kafka.producer import EventProducer
from sandbox.pace import send_paced, start_from_keyspace
from sandbox.scrape import scrape, total
from sandbox.simulator import Simulator
from sandbox.stack import Stack
from serving.auth import ADMIN
from serving.auth.keyfile import create, load_secret, read_records, rotate


def events_processed(metrics_url: str) -> int:
    """Input events the dataflow has finished with (applied, duplicate or dead-lettered)."""
    return int(total(scrape(metrics_url), "atp_events_total"))


def wait_http(url: str, timeout_s: float, what: str, stack: Stack, name: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stack.pid(name) is None:
            raise StackError(f"{what} exited; see {stack.log_dir / (name + '.log')}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise StackError(f"{what} not ready at {url} after {timeout_s:.0f} s; see {stack.log_dir / (name + '.log')}")


DEMO_KEY = "demo"


def demo_token(s: Settings) -> str | None:
    """A token of the demo's key (``admin``, unlimited), made or given a new token; None without auth."""
    if s.api_auth != "required":
        return None
    secret = load_secret(s.key_secret_file, create=True)
    if DEMO_KEY in read_records(s.keys_file):
        return rotate(s.keys_file, secret, DEMO_KEY, grace_s=0)
    return create(s.keys_file, secret, DEMO_KEY, [ADMIN], rate=0)


def run_demo(s: Settings, count: int, rate: float, console: Console) -> tuple[list[tuple[Any, ...]], str, str | None]:
    stack = Stack(s)
    for name, what in stack.up().items():
        console.print(f"{name:9} {what}")
    token = demo_token(s)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    env = dict(os.environ)
    stack.start("dataflow", [sys.executable, "-m", "atp", "run"], env)
    stack.start("api", [sys.executable, "-m", "atp", "serve"], env)
    api = f"http://{s.api_host}:{s.api_port}"
    metrics = f"http://{s.metrics_host}:{s.metrics_port}/metrics"
    wait_http(f"{api}/readyz", 30, "the API", stack, "api")
    wait_http(metrics, 60, "the dataflow", stack, "dataflow")
    console.print(f"dataflow  running (metrics {metrics})\napi       running ({api})")
    before = events_processed(metrics)
    sim = Simulator(seed=int(time.time()), skus=200, locations=4, run=f"{int(time.time() * 1000):x}")
    start_from_keyspace(sim, s)  # a second demo on a running stack continues from its stock (no false drift)
    result = send_paced(sim, EventProducer(s), rate, count)
    console.print(f"sent {result.sent} events in {result.seconds:.1f} s ({result.rate:,.0f}/s)")
    deadline = time.monotonic() + 60
    while events_processed(metrics) - before < result.sent:
        if time.monotonic() > deadline:
            raise StackError(f"the dataflow has not caught up after 60 s; see {stack.log_dir / 'dataflow.log'}")
        time.sleep(0.2)
    time.sleep(0.5)  # the Redis sink writes right after the fold
    rows = []
    with httpx.Client(base_url=api, timeout=5, headers=headers) as client:
        for sku in sim.busiest(8):
            r = client.get(f"/v1/availability/{sku}")
            if r.status_code == 200:
                body = r.json()
                t = body["total"]
                rows.append((sku, t["atp"], t["available_qty"], t["reserved"], t["on_hand"], t["inbound"],
                             len(body["locations"])))
    return rows, api, token
