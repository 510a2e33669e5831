"""The live API (``atp serve``, uvicorn) probed from its own OpenAPI document by schemathesis.

Every operation gets valid and invalid requests (positive and negative generation), with a fixed
seed (derandomized) and a bounded number of examples, against a real Redis holding a few
positions and alerts. Each answer must not be a server error and must conform to the document:
declared status code, content type, headers and response schema.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.config import Settings
from projection.codec import hash_fields
from projection.keys import READY, keyspace_of
from projection.scripts import alert_member
from serving.auth.keyfile import create, load_secret
from tests.conftest import get_json, wait_until
from tests.serving.test_api import pos

pytestmark = [pytest.mark.integration, pytest.mark.one_broker]

EXAMPLES = 60  # per operation and generation mode (about 600 requests, about 15 s here)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


def _store(settings: Settings, rclient) -> None:
    ks = keyspace_of(settings)
    rclient.hset(ks.meta, mapping={"run_id": "t", "state": READY, "since": 1})
    now = int(time.time() * 1000)
    positions = [pos(sku="SKU-1", location="DC-01", version=3), pos(sku="SKU-1", location="DC-02", version=2),
                 pos(sku="SKU-2", location="DC-01", version=1, demand_per_min_5m=0.5, stockout_eta_minutes=16.0),
                 pos(sku="SKU-3", location="DC-01", version=1, as_of=0, available=0, reserved=0, safety_stock=2,
                     shortfall=2)]  # a key with only a safety-stock control
    for p in positions:
        rclient.hset(ks.position(p.sku, p.location), mapping=hash_fields(p))
        rclient.sadd(ks.locations(p.sku), p.location)
    good = {"alert_id": "a1", "kind": "DRIFT", "severity": "critical", "sku": "SKU-1", "location": "DC-01",
            "as_of": now - 1000, "detected_at": now, "expected": 5, "observed": 3, "difference": -2,
            "source_system": "ERP", "snapshot_id": "s1", "action": "alert", "corrected": False, "version": 3,
            "moved_by": [{"event_id": "e1", "event_type": "SHIP", "effective_at": now - 2000, "change": "delta",
                          "available": -1, "non_sellable": 0}]}
    rclient.hset(ks.alert("SKU-1", "DC-01"), mapping={"DRIFT": json.dumps(good), "DRIFT:version": 3,
                                                      "OVERSOLD": b"{not json", "OVERSOLD:version": 3})
    for kind in ("DRIFT", "OVERSOLD"):
        for index in (ks.alerts(), ks.alerts("DC-01")):
            rclient.zadd(index, {alert_member(kind, "SKU-1", "DC-01"): now - 1000})


@pytest.mark.parametrize("auth", ["disabled", "required"])
def test_the_live_api_conforms_to_its_openapi_and_never_fails(settings, rclient, start, auth):
    """With auth required the probe carries an admin key's token; every operation then also answers
    401 without one (the health checks excepted)."""
    settings = settings.model_copy(update={"api_auth": auth})
    _store(settings, rclient)
    headers = {}
    if auth == "required":
        token = create(settings.keys_file, load_secret(settings.key_secret_file, create=True), "probe", ["admin"])
        headers = {"Authorization": f"Bearer {token}"}
    api = start("serve", s=settings)
    base = f"http://{settings.api_host}:{settings.api_port}"
    wait_until(lambda: get_json(f"{base}/readyz"), 30, "the API", api)

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    ran: dict[str, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9  # every route (and HEAD of the health routes)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @hsettings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                       phases=[Phase.explicit, Phase.generate, Phase.shrink],
                       suppress_health_check=list(HealthCheck))
            def probe(case) -> None:
                ran[operation.label] = ran.get(operation.label, 0) + 1
                case.call_and_validate(base_url=base, checks=CHECKS, timeout=10, headers=headers)

            try:
                probe()
            except Exception as exc:
                if "Unsatisfiable" in type(exc).__name__:  # an operation without invalid inputs (no parameters)
                    continue
                raise
    print("schemathesis examples per operation:", ran)
    assert sum(ran.values()) >= 100, ran
    if auth == "required":
        for operation in operations:
            path = operation.path.replace("{sku}", "SKU-1").replace("{location}", "DC-01")
            r = httpx.request(operation.method.upper(), f"{base}{path}", json={"items": []}, timeout=5)
            expected = 200 if path in ("/healthz", "/readyz") else 401
            assert r.status_code == expected, (operation.label, r.status_code, r.text)
            documented = operation.definition.raw["responses"]
            assert expected == 200 or "401" in documented, operation.label
    assert api.alive()
