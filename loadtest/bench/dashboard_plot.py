"""The dashboard's main panels as a picture, drawn from real Prometheus data.

Starts a private stack (broker, Redis), the dataflow and the API, and Debian's Prometheus scraping
both every second with the alert rules loaded; sends seeded traffic at ``--rate`` events/s for
``--seconds`` (a few undecodable records among them, for the dead-letter panel) while a client
reads the API; then asks Prometheus for each panel's own expression from
``deploy/grafana/dashboards/atp.json`` (``query_range``) and draws them. Writes
``docs/img/dashboard.png``.

    python -m loadtest.bench.dashboard_plot --seconds 120 --rate 300
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from core.config import Settings
from dataflows.kafka.producer import EventProducer
from loadtest.common.harness import private_stack, pyplot
from sandbox.child import ROOT, Child
from sandbox.pace import send_paced
from sandbox.simulator import Simulator
from sandbox.stack import free_port

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "atp.json"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"
OUT = ROOT / "docs" / "img" / "dashboard.png"
PANELS = ["Throughput by topic and outcome", "Freshness: event to published position", "Input lag by topic",
          "Oversold positions and keys in state", "Dead letters by reason", "Redis write latency per batch",
          "Requests by route and status", "Latency p99 by route"]
RATE_WINDOW = "10s"  # $__rate_interval at a 1 s scrape and a 2 s step


def _wait(what: str, predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _prometheus(s: Settings, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus is missing: apt-get install prometheus (make bootstrap does)")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {"atp-dataflow": f"{s.metrics_host}:{s.metrics_port}", "atp-api": f"{s.api_host}:{s.api_port}"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str((PROMETHEUS_CONFIG.parent / f).resolve()) for f in config["rule_files"]]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    _wait("Prometheus", lambda: _up(f"{url}/-/ready"), 30)
    return proc, url


def _reader(base: str, stop: threading.Event) -> None:
    """A channel reading availability, with an unknown key now and then (404s)."""
    i = 0
    with httpx.Client(base_url=base, timeout=5) as client:
        while not stop.is_set():
            i += 1
            sku = f"SKU-{1 + i % 50:05d}" if i % 10 else "SKU-99999"
            try:
                client.get(f"/v1/availability/{sku}/DC-01")
                if i % 5 == 0:
                    client.get(f"/v1/availability/{sku}")
                if i % 20 == 0:
                    client.get("/readyz")
                    client.get("/v1/drift?limit=10")
            except httpx.HTTPError:
                pass
            time.sleep(0.02)


def _traffic(s: Settings, rate: float, seconds: float, seed: int) -> None:
    producer = EventProducer(s)
    sent = send_paced(Simulator(seed, 200, 4), producer, rate, int(rate * seconds * 0.5), show_progress=False)
    for i in range(3):  # a few records no schema decodes
        producer.send_raw(s.topic_wms, f"SKU-{i:05d}@DC-01".encode(), b"not avro")
    producer.flush()
    sent2 = send_paced(Simulator(seed + 1, 200, 4), EventProducer(s), rate, int(rate * seconds * 0.5),
                       show_progress=False)
    print(f"sent {sent.sent + sent2.sent:,} events and 3 undecodable records", file=sys.stderr)


def _series(url: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/api/v1/query_range", timeout=30,
                  params={"query": expr, "start": str(start), "end": str(end), "step": "2"}).json()
    if r["status"] != "success":
        raise RuntimeError(f"{expr}: {r}")
    return list(r["data"]["result"])


def _legend(fmt: str, labels: dict[str, str]) -> str:
    if fmt in ("", "__auto"):
        return ",".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def _right_axis(panel: dict[str, Any]) -> list[str]:
    """Patterns of the series the panel draws on its right axis (its overrides), as Grafana would."""
    out = []
    for o in panel["fieldConfig"].get("overrides", []):
        if any(p["id"] == "custom.axisPlacement" and p["value"] == "right" for p in o["properties"]):
            name = o["matcher"]["options"]
            out.append(name if o["matcher"]["id"] == "byRegexp" else re.escape(name))
    return out


def draw(url: str, start: float, end: float, out: Path, command: str) -> None:
    plt = pyplot()
    if plt is None:
        return
    panels = {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"}
    fig, axes = plt.subplots(4, 2, figsize=(14, 14))
    for ax, title in zip(axes.flat, PANELS):
        right = _right_axis(panels[title])
        twin = ax.twinx() if right else None
        for target in panels[title]["targets"]:
            expr = target["expr"].replace("$__rate_interval", RATE_WINDOW)
            for series in _series(url, expr, start, end):
                xs = [float(t) - start for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                label = _legend(target.get("legendFormat", ""), series["metric"])
                on = twin if twin is not None and any(re.fullmatch(r, label) for r in right) else ax
                on.plot(xs, ys, linewidth=1, label=label, linestyle="--" if on is twin else "-")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("seconds", fontsize=8)
        for a in (ax, twin):
            if a is not None:
                a.tick_params(labelsize=8)
                if a.get_legend_handles_labels()[0]:
                    a.legend(fontsize=6, loc="upper left" if a is ax else "upper right")
    when = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M UTC")
    fig.suptitle(f"atp-stream dashboard, main panels, {when}\nReproduce: {command}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="how long traffic runs")
    ap.add_argument("--rate", type=float, default=300.0, help="events per second")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    command = f"python -m loadtest.bench.dashboard_plot --seconds {args.seconds:g} --rate {args.rate:g}"
    with tempfile.TemporaryDirectory(prefix="atp-dashboard-") as tmp, private_stack(Path(tmp)) as (base, _stack):
        work = Path(tmp)
        s = base.model_copy(update={"metrics_port": free_port(), "api_port": free_port()})
        children = [Child(["run"], s, work / "run.log").start(), Child(["serve"], s, work / "serve.log").start()]
        prom, url = _prometheus(s, work)
        stop = threading.Event()
        try:
            _wait("the dataflow's metrics", lambda: _up(f"http://{s.metrics_host}:{s.metrics_port}/metrics"), 60)
            _wait("the API", lambda: _up(f"http://{s.api_host}:{s.api_port}/healthz"), 60)
            start = time.time()
            reader = threading.Thread(target=_reader, args=(f"http://{s.api_host}:{s.api_port}", stop), daemon=True)
            reader.start()
            _traffic(s, args.rate, args.seconds, args.seed)
            time.sleep(10)  # the last events through, the last scrapes in
            stop.set()
            reader.join(10)
            draw(url, start, time.time(), args.out, command)
        finally:
            stop.set()
            prom.terminate()
            prom.wait(15)
            for child in children:
                child.stop()


if __name__ == "__main__":
    main()
