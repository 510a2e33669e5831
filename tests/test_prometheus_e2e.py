"""A real Prometheus scrapes a real dataflow and API, loads the alert rules, and answers every rule and
every dashboard query: each is valid PromQL on the real exposition, and each metric it reads has series
(the few that appear only on a failure are at least declared by the running process).

Prometheus is Debian's package (`make bootstrap` installs it when missing), started on a free loopback
port with a 1 s scrape and evaluation interval.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from core.config import Settings
from dataflows.kafka.producer import EventProducer
from sandbox.stack import free_port
from serving.auth.keyfile import create, load_secret
from tests.builders import order, snapshot, wms
from tests.conftest import get_json, processed, wait_until
from tests.test_observability import PROMETHEUS_CONFIG, RULES, grafana_to_promql, metric_names, panel_queries, rules

pytestmark = [pytest.mark.integration, pytest.mark.one_broker]

# Series that exist only once something failed (a labelled counter gets its first series with its
# first increment): the test cannot make Kafka refuse an output message or a timer raise, so for
# these the running dataflow must at least declare the metric (HELP/TYPE), which Prometheus keeps
# as the target's metadata.
ONLY_ON_FAILURE = {"atp_produce_errors_total", "atp_produce_errors_created",
                   "atp_timer_failures_total", "atp_timer_failures_created"}
# What the events below must make fire at once (no `for:`), and what must stay quiet while all is well.
FIRING = {"AtpDeadLetters", "AtpDriftCritical"}
PENDING = {"AtpOversoldPositions"}  # oversold for less than its 10 minutes
QUIET = {"AtpApiDown", "AtpDataflowDown", "AtpDataflowCrashLooping", "AtpDataflowLoopStopped", "AtpKeyspaceNotReady",
         "AtpKeyspaceLost", "AtpApiErrorRate", "AtpProduceErrors", "AtpTimerFailures"}


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> dict:
        r = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> dict:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        return r.json()

    def has_series(self, name: str) -> bool:
        return bool(self.get("/api/v1/series", **{"match[]": name, "start": str(time.time() - 600)}))

    def declared(self, name: str) -> bool:
        return bool(self.get("/api/v1/targets/metadata", metric=name))

    def alerts(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for alert in self.get("/api/v1/alerts")["alerts"]:
            out.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return out


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is not None:
        return path
    if os.environ.get("CI") or os.environ.get("KAFKA_TIER") == "required":
        pytest.fail("the prometheus binary is missing: `make bootstrap` installs Debian's prometheus package")
    pytest.skip("the prometheus binary is missing (apt-get install prometheus, or `make bootstrap`)")


def config_for(s: Settings, tmp: Path) -> Path:
    """deploy/prometheus.yml with this test's targets, a 1 s rhythm and the rules by absolute path."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {"atp-dataflow": f"{s.metrics_host}:{s.metrics_port}", "atp-api": f"{s.api_host}:{s.api_port}"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        if "authorization" in job:  # the API's /metrics needs a metrics:read key, as in compose
            token = create(s.keys_file, load_secret(s.key_secret_file, create=True), "prometheus", ["metrics:read"],
                           rate=0)
            (tmp / "prometheus-token").write_text(token + "\n")
            job["authorization"]["credentials_file"] = str(tmp / "prometheus-token")
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str((PROMETHEUS_CONFIG.parent / f).resolve()) for f in config["rule_files"]]
    assert config["rule_files"] == [str(RULES.resolve())]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def prometheus(settings: Settings, tmp_path: Path) -> Iterator[Prometheus]:
    binary = prometheus_binary()
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={config_for(settings, tmp_path)}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}")

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "prometheus.log").read_text()[-3000:])
        try:
            return httpx.get(f"{prom.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 30, "Prometheus to be ready")
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def events(expires_at: int) -> list:
    erp = snapshot(25, t=1_000, event_id="snap-erp")  # the stream has 40 on hand then: critical drift
    cart = order("RESERVE", "CART-1", 6, sku="SKU-4", t=10)
    cart[1]["expires_at"] = expires_at
    return [
        wms("RECEIPT", qty=40, t=0), erp,
        wms("RECEIPT", qty=2, sku="SKU-3", t=0), order("RESERVE", "L9", 5, sku="SKU-3", t=1),  # an OVERSOLD alert
        wms("SHIP", qty=3, sku="SKU-6", order_line_id="X6", t=0),  # stock never received: oversold
        wms("RECEIPT", qty=50, sku="SKU-4", t=0), cart,  # a hold that expires
        wms("RECEIPT", qty=9, sku="SKU-5", t=2_000_000), wms("RECEIPT", qty=1, sku="SKU-5", t=0),  # late
        wms("SHIP", qty=1, sku="SKU-4", order_line_id="S1", t=200_000),  # closes the first demand minute
    ]


def test_prometheus_answers_every_rule_and_panel_on_the_real_exposition(settings, start, prometheus):
    prom = prometheus
    settings = settings.model_copy(update={"reconcile_timeout_s": 3.0, "demand_lateness_s": 0.0,
                                           "api_auth": "required"})  # Prometheus scrapes with its key
    items = events(int((time.time() + 3) * 1000))
    producer = EventProducer(settings)
    for alias, rec in items:
        producer.send(alias, rec)
    producer.send_raw(settings.topic_orders, b"SKU-1@DC-01", b"plain text")  # a dead letter: bad_magic
    assert producer.flush() == 0
    flow = start("run", s=settings)
    api = start("serve", s=settings)
    base = f"http://{settings.api_host}:{settings.api_port}"
    wait_until(lambda: processed(settings) >= len(items) + 1, 60, "every event processed", flow)
    wait_until(lambda: get_json(f"{base}/readyz"), 30, "the API to be ready", api)

    # Traffic on every kind of route, so that the API's labelled series exist.
    def traffic() -> None:
        for path in ("/v1/availability/SKU-1/DC-01", "/v1/availability/SKU-1", "/v1/drift?limit=5",
                     "/v1/availability/SKU-9/DC-01", "/readyz"):
            httpx.get(f"{base}{path}", timeout=5)
        httpx.post(f"{base}/v1/availability/query", json={"items": [{"sku": "SKU-1", "location": "DC-01"}]},
                   timeout=5)

    queries = {f"rule {r['alert']}": r["expr"] for r in rules()}
    queries |= {f"panel {title}: {expr}": grafana_to_promql(expr) for title, expr in panel_queries()}
    wanted = set().union(*(metric_names(expr) for expr in queries.values()))
    missing: list[set[str]] = []

    def all_series() -> bool:
        traffic()
        missing.append({name for name in wanted - ONLY_ON_FAILURE if not prom.has_series(name)})
        return not missing[-1]

    try:
        wait_until(all_series, 120, "a series of every metric the rules and panels read", flow, interval=1)
    except AssertionError as e:
        raise AssertionError(f"{e}\nno series yet: {sorted(missing[-1])}") from None
    for name in ONLY_ON_FAILURE & wanted:
        family = name.removesuffix("_created").removesuffix("_total")  # as OpenMetrics names a counter family
        assert prom.declared(family) or prom.declared(family + "_total"), f"the dataflow does not declare {family}"

    # Every rule and every panel query is valid on this data (a healthy alert condition may be empty).
    for what, expr in queries.items():
        body = prom.query(expr)
        assert body["status"] == "success", (what, expr, body)
        assert body["data"]["resultType"] in ("vector", "scalar"), what

    # Prometheus evaluates every rule without error.
    def evaluated() -> list[dict]:
        loaded = [rule for group in prom.get("/api/v1/rules")["groups"] for rule in group["rules"]]
        never = "0001-01-01T00:00:00Z"  # Go's zero time: not evaluated yet
        return loaded if all(rule.get("lastEvaluation", never) != never for rule in loaded) else []

    loaded = wait_until(evaluated, 30, "every rule evaluated once")
    assert {rule["name"] for rule in loaded} == {rule["alert"] for rule in rules()}
    assert all(rule["health"] == "ok" and not rule.get("lastError") for rule in loaded), loaded

    # The events above make the business alerts fire or arm; the plumbing stays quiet.
    seen: list[dict[str, set[str]]] = []
    try:
        wait_until(lambda: not seen.append(a := prom.alerts()) and all("firing" in a.get(n, ()) for n in FIRING)
                   and all("pending" in a.get(n, ()) for n in PENDING), 90, "the alerts the events raise")
    except AssertionError as e:
        raise AssertionError(f"{e}\nactive alerts: {seen[-1:]}") from None
    assert not QUIET & set(seen[-1]), seen[-1]

    # The API goes away: its alert arms (it fires after its `for:`).
    api.stop()
    wait_until(lambda: prom.alerts().get("AtpApiDown"), 30, "AtpApiDown once the API is stopped")
    assert prom.query('up{job="atp-api"}')["data"]["result"][0]["value"][1] == "0"
