"""`atp serve` with several worker processes: one port, and /metrics sums every process's counts."""

from __future__ import annotations

import httpx
import pytest

from projection.keys import keyspace_of
from sandbox.scrape import scrape, total
from tests.conftest import get_json, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.one_broker]


def test_two_api_processes_share_the_port_and_metrics_count_every_request(settings, rclient, start):
    s = settings.model_copy(update={"api_workers": 2})
    ks = keyspace_of(s)
    rclient.hset(ks.meta, mapping={"state": "ready", "run_id": "t", "since": 1})
    rclient.hset(ks.position("SKU-1", "DC-01"), mapping={
        "sku": "SKU-1", "location": "DC-01", "atp": 3, "available_qty": 5, "on_hand": 5, "reserved": 2,
        "non_sellable": 0, "inbound": 0, "safety_stock": 0, "shortfall": 0, "version": 4, "as_of": 1_767_225_600_000,
        "updated_at": 1_767_225_600_000, "formula_version": 1})
    api = start("serve", s=s)
    base = f"http://{s.api_host}:{s.api_port}"
    wait_until(lambda: get_json(f"{base}/healthz"), 30, "the API", api)
    n = 60
    for _ in range(n):  # a new connection each time: the processes take turns accepting
        r = httpx.get(f"{base}/v1/availability/SKU-1/DC-01", timeout=5)
        assert r.status_code == 200 and r.json()["atp"] == 3
    for _ in range(8):  # whichever process answers the scrape, it reports every process's requests
        samples = scrape(f"{base}/metrics")
        assert total(samples, "atp_api_requests_total", route="/v1/availability/{sku}/{location}", status="200") == n
