"""GET /v1/availability/{sku}/{location}/explain against the real Redis: the lineage the sink writes
in the position's own guarded call, read back newest first; its refusals and its scope."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dataflows.redis_sink import LINEAGE
from projection.codec import LINEAGE_SIZE
from projection.keys import KeySpace
from serving.main import create_app
from state.fold import CONTROL, DELTA, EXPIRY, SET_ON_HAND
from tests.serving.test_api import client, pos, sink  # noqa: F401 - fixtures
from tests.serving.test_auth import auth, keyed, token  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration, pytest.mark.one_broker]

T0 = 1_767_225_600_000


def _write(sink, version: int, entries: list, sku: str = "SKU-1", location: str = "DC-01") -> None:  # noqa: F811
    LINEAGE.add((f"{sku}@{location}", list(entries)))
    sink.write_batch([pos(sku=sku, location=location, version=version)])


def test_explain_lists_the_changes_newest_first_once_each(sink, client, settings, rclient):  # noqa: F811
    receipt = (T0, 1, DELTA, 40, 0, "r1", "RECEIPT", "wms-east", "c-recv")
    ship = (T0 + 2000, 2, DELTA, -5, 0, "s1", "SHIP", "wms-east", "c-ship")
    _write(sink, 2, [receipt, ship])
    rebase = (T0 + 1000, 3, SET_ON_HAND, 30, 0, "snap-1", "SNAPSHOT", "wms", "c-snap")
    control = (T0 + 3000, 4, CONTROL, 3, 0, "ctl-1", "SAFETY_STOCK_SET", "ops", None)
    expiry = (T0 + 9000, 5, EXPIRY, 6, 0, "CART-1", "EXPIRY", "", None)
    _write(sink, 5, [rebase, control, expiry])
    # Re-emitted after a restart: an older position with its changes again, and the newest again.
    _write(sink, 2, [receipt, ship])
    _write(sink, 5, [rebase, control, expiry])
    body = client.get("/v1/availability/SKU-1/DC-01/explain").json()
    assert body["position"]["version"] == 5 and body["position"]["available_qty"] == 10
    assert [(c["event_id"], c["event_type"], c["change"], c["quantity"], c["source"], c["correlation_id"])
            for c in body["changes"]] == [
        ("CART-1", "EXPIRY", "expiry", 6, None, None),
        ("ctl-1", "SAFETY_STOCK_SET", "control", 3, "ops", None),
        ("s1", "SHIP", "delta", -5, "wms-east", "c-ship"),
        ("snap-1", "SNAPSHOT", "set_on_hand", 30, "wms", "c-snap"),
        ("r1", "RECEIPT", "delta", 40, "wms-east", "c-recv"),
    ]
    assert body["changes"][0]["effective_at"].startswith("2026-01-01T00:00:09")
    ks = KeySpace(settings.redis_key_prefix)
    assert rclient.llen(ks.lineage("SKU-1", "DC-01")) == 5


def test_the_list_keeps_the_newest_changes_only(sink, client, settings, rclient):  # noqa: F811
    many = [(T0 + i, i, DELTA, 1, 0, f"e{i}", "ADJUST", "wms", None) for i in range(1, LINEAGE_SIZE + 11)]
    _write(sink, 20, many[:20])
    _write(sink, LINEAGE_SIZE + 10, many[20:])
    changes = client.get("/v1/availability/SKU-1/DC-01/explain").json()["changes"]
    assert [c["event_id"] for c in changes] == [f"e{i}" for i in range(LINEAGE_SIZE + 10, 10, -1)]


def test_a_position_without_lineage_an_unknown_key_and_an_unreadable_list(sink, client, settings, rclient):  # noqa: F811
    sink.write_batch([pos(location="DC-02", version=3)])  # e.g. re-published after Redis lost it
    body = client.get("/v1/availability/SKU-1/DC-02/explain").json()
    assert body["position"]["version"] == 3 and body["changes"] == []
    r = client.get("/v1/availability/SKU-9/DC-01/explain")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    ks = KeySpace(settings.redis_key_prefix)
    rclient.set(ks.lineage("SKU-1", "DC-02"), "hand edit")  # the wrong type
    r = client.get("/v1/availability/SKU-1/DC-02/explain")
    assert r.status_code == 503 and r.json()["error"]["code"] == "position_unreadable"
    assert "lineage" in r.json()["error"]["message"]
    rclient.delete(ks.lineage("SKU-1", "DC-02"))
    rclient.rpush(ks.lineage("SKU-1", "DC-02"), "not\x1fan entry")
    r = client.get("/v1/availability/SKU-1/DC-02/explain")
    assert r.status_code == 503 and "has 2 fields, expected 9" in r.json()["error"]["message"]


def test_explain_needs_the_availability_scope_and_keeps_to_the_keys_locations(keyed):  # noqa: F811
    partner = token(keyed, "marketplace", ["availability:read"], locations=["DC-01"])
    ops = token(keyed, "ops", ["drift:read"])
    with TestClient(create_app(keyed)) as c:
        assert c.get("/v1/availability/SKU-1/DC-01/explain", headers=auth(partner)).status_code == 200
        r = c.get("/v1/availability/SKU-1/DC-03/explain", headers=auth(partner))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = c.get("/v1/availability/SKU-1/DC-01/explain", headers=auth(ops))
        assert r.status_code == 403 and r.json()["error"]["details"] == {"scope": "availability:read"}
