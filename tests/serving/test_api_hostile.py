"""Hostile stored data and hostile requests: the API answers 200 or its error body, never a 500.

Records are written straight into Redis in the projection's layout (``projection.codec``), as a
bug, an older or newer version, or a hand edit could leave them, and read through every read route.
The choices (what is served, flagged or refused) are in docs/api-errors.md.
"""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from dataflows.runtime.continuity import write_meta
from projection.codec import hash_fields
from projection.keys import READY, KeySpace
from projection.scripts import alert_member
from serving.main import create_app
from tests.serving.test_api import pos

pytestmark = [pytest.mark.integration, pytest.mark.one_broker]

GROUPS = {"EAST": ["DC-01", "DC-02"]}
DOCUMENTED_503 = {"store_unavailable", "keyspace_missing", "rebuilding", "position_unreadable", "index_unreadable",
                  "dataflow_stopped", "dataflow_crash_loop", "dataflow_stale"}
YEAR_10000_MS = 253_402_300_800_000


def good_hash(sku: str, location: str = "DC-01", **kw) -> dict[str, str]:
    return hash_fields(pos(sku=sku, location=location, **kw))


# name -> (the stored hash, whether the API can serve it)
HOSTILE_POSITIONS: dict[str, tuple[dict, bool]] = {
    "as-of-year-10000": ({**good_hash("X"), "as_of": str(YEAR_10000_MS)}, False),
    "as-of-negative": ({**good_hash("X"), "as_of": "-5"}, False),
    "as-of-huge": ({**good_hash("X"), "as_of": str(10**30)}, False),
    "updated-at-year-10000": ({**good_hash("X"), "updated_at": str(YEAR_10000_MS)}, False),
    "qty-beyond-2-63": ({**good_hash("X"), "on_hand": str(2**64 + 3)}, False),
    "qty-beyond-2-53": ({**good_hash("X"), "available_qty": str(2**53)}, False),
    "version-beyond-2-53": ({**good_hash("X"), "version": str(-(2**60))}, False),
    "qty-garbage": ({**good_hash("X"), "atp": "twelve"}, False),
    "qty-empty": ({**good_hash("X"), "reserved": ""}, False),
    "demand-nan": ({**good_hash("X"), "demand_per_min_5m": "nan"}, False),
    "demand-empty": ({**good_hash("X"), "demand_per_min_60m": ""}, False),
    "eta-inf": ({**good_hash("X"), "stockout_eta_minutes": "inf"}, False),
    "missing-fields": ({"sku": "X", "location": "DC-01", "version": "3"}, False),
    "sku-not-utf8": ({**good_hash("X"), "sku": b"\xff\xfe"}, False),
    # Served: a newer layout's extra fields are ignored, an older layout's missing optional
    # fields take their defaults, a key that only got a safety-stock control has no as_of.
    "newer-layout": ({**good_hash("X"), "channel_split": "{\"web\": 3}", b"\xffodd": b"\xfe", "zone": "A"}, True),
    "older-layout": ({k: v for k, v in good_hash("X").items()
                      if k not in ("formula_version", "demand_per_min_5m", "demand_per_min_60m",
                                   "stockout_eta_minutes")}, True),
    "controls-only": ({**good_hash("X", available=0, reserved=0, safety_stock=4, shortfall=4), "as_of": "0"}, True),
}


def alert(kind="DRIFT", severity="warning", as_of=1_767_225_600_000, **kw) -> dict:
    t = as_of if isinstance(as_of, int) else 1_767_225_600_000
    a = {"alert_id": f"a-{kind}", "kind": kind, "severity": severity, "sku": "S", "location": "DC-01",
         "as_of": as_of, "detected_at": t + 10, "expected": 5, "observed": 3, "difference": -2,
         "source_system": "ERP", "snapshot_id": "s1", "action": "alert", "corrected": False, "version": 4,
         "moved_by": [{"event_id": "e1", "event_type": "SHIP", "effective_at": t - 5, "change": "delta",
                       "available": -1, "non_sellable": 0}]}
    a.update(kw)
    return a


# name -> (the stored alert body, whether the API can serve it)
HOSTILE_ALERTS: dict[str, tuple[bytes, bool]] = {
    "malformed-json": (b'{"alert_id": "a", "kind": "DRIFT", ', False),
    "not-utf8": (b'{"alert_id": "\xff"}', False),
    "not-an-object": (b"[1, 2, 3]", False),
    "as-of-year-10000": (json.dumps(alert(as_of=YEAR_10000_MS)).encode(), False),
    "as-of-negative": (json.dumps(alert(as_of=-10**20)).encode(), False),
    "as-of-text": (json.dumps(alert(as_of="yesterday")).encode(), False),
    "effective-at-huge": (json.dumps(alert(moved_by=[{**alert()["moved_by"][0], "effective_at": 10**40}])).encode(),
                          False),
    "difference-beyond-2-53": (json.dumps(alert(difference=2**53 + 1)).encode(), False),
    "unknown-severity": (json.dumps(alert(severity="apocalyptic")).encode(), False),
    "missing-fields": (json.dumps({"kind": "DRIFT", "moved_by": []}).encode(), False),
    "deep-nesting": (b"[" * 100_000 + b"]" * 100_000, False),
    "newer-layout": (json.dumps(alert(confidence=0.9, tags=["x"])).encode(), True),
}


def check(r, *, allowed_503: set[str] = DOCUMENTED_503) -> dict:
    """Never a 5xx but the documented 503s, and always JSON; an error is the project's error body."""
    assert r.headers["content-type"].startswith("application/json"), (r.status_code, r.text[:200])
    body = r.json()
    assert r.status_code < 500 or (r.status_code == 503 and body["error"]["code"] in allowed_503), \
        (r.status_code, body)
    if r.status_code >= 400:
        assert set(body) == {"error"} and isinstance(body["error"]["code"], str), body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


@pytest.fixture
def hostile(settings: Settings, rclient):
    """Every hostile position as sku ``P-<case>`` at DC-01 beside a good DC-02, and as group EAST's
    position of ``G-<case>``; every hostile alert as ``A-<case>``'s DRIFT beside a good OVERSOLD."""
    ks = KeySpace(settings.redis_key_prefix)
    write_meta(rclient, ks, "test-run", READY)
    now = int(time.time() * 1000)
    for name, (stored, _) in HOSTILE_POSITIONS.items():
        for sku in (f"P-{name}", f"G-{name}"):
            rclient.hset(ks.position(sku, "DC-01"), mapping=stored)
            rclient.hset(ks.position(sku, "DC-02"), mapping=good_hash(sku, "DC-02", version=2))
            rclient.sadd(ks.locations(sku), "DC-01", "DC-02")
        rclient.hset(ks.group(f"G-{name}", "EAST"),
                     mapping={**stored, "location": "EAST", "members": '[["DC-01",1],["DC-02",2]]'})
        rclient.sadd(ks.groups(f"G-{name}"), "EAST")
    for name, (stored, _) in HOSTILE_ALERTS.items():
        sku = f"A-{name}"
        good = json.dumps(alert("OVERSOLD", "critical", sku=sku, as_of=now - 1000)).encode()
        rclient.hset(ks.alert(sku, "DC-01"), mapping={"DRIFT": stored, "DRIFT:version": 4,
                                                      "OVERSOLD": good, "OVERSOLD:version": 4})
        for kind in ("DRIFT", "OVERSOLD"):
            for index in (ks.alerts(), ks.alerts("DC-01")):
                rclient.zadd(index, {alert_member(kind, sku, "DC-01"): now - 1000})
    # Index entries that name no alert properly, and one whose hash is gone.
    for index in (ks.alerts(), ks.alerts("DC-01")):
        rclient.zadd(index, {"garbage": now, "DRIFT|no-at-sign": now, b"OVERSOLD|\xff@DC-01": now,
                             "NOPE|S@DC-01": now, alert_member("DRIFT", "GONE", "DC-01"): now})
    # Keys of the wrong Redis type where a hash belongs.
    rclient.set(ks.position("WRONG-TYPE", "DC-01"), "not a hash")
    rclient.sadd(ks.locations("WRONG-TYPE"), "DC-01", "bad location!", b"\xff")
    rclient.set(ks.alert("WRONG-TYPE", "DC-01"), "not a hash")
    grouped = settings.model_copy(update={"location_groups": GROUPS})
    with TestClient(create_app(grouped), raise_server_exceptions=False) as client:
        yield client, ks


@pytest.mark.parametrize("name", HOSTILE_POSITIONS)
def test_a_hostile_position_never_fails_a_read(hostile, name):
    client, _ = hostile
    readable = HOSTILE_POSITIONS[name][1]
    sku = f"P-{name}"
    # Single key: the fast path and the route (?generation= goes to the route).
    for path in (f"/v1/availability/{sku}/DC-01", f"/v1/availability/{sku}/DC-01?generation=default"):
        r = client.get(path)
        body = check(r)
        if readable:
            assert r.status_code == 200, body
        else:
            assert r.status_code == 503 and body["error"]["code"] == "position_unreadable", body
            assert body["error"]["details"]["sku"] == sku and body["error"]["details"]["reason"]
            assert r.headers["Retry-After"]
    # The SKU: the good location served, the bad one flagged and left out of the total.
    body = check(r := client.get(f"/v1/availability/{sku}"))
    assert r.status_code == 200, body
    served = [loc["location"] for loc in body["locations"]]
    assert served == (["DC-01", "DC-02"] if readable else ["DC-02"])
    assert [u["location"] for u in body["unreadable"]] == ([] if readable else ["DC-01"])
    if not readable:
        assert body["total"]["available_qty"] == body["locations"][0]["available_qty"]
    # A batch: the bad key flagged, the others answered.
    items = [{"sku": sku, "location": "DC-01"}, {"sku": sku, "location": "DC-02"}, {"sku": "NONE", "location": "X"}]
    body = check(r := client.post("/v1/availability/query", json={"items": items}))
    assert r.status_code == 200, body
    first, second, third = body["results"]
    assert (first["found"], first["availability"] is not None) == (readable, readable)
    assert (first["error"] is None) == readable and (readable or first["error"]["code"] == "position_unreadable")
    assert second["found"] and second["availability"]["location"] == "DC-02"
    assert not third["found"] and third["error"] is None
    # The same record as a group's position: the group read answers 503 for it; as a member, flagged.
    gsku = f"G-{name}"
    body = check(r := client.get(f"/v1/availability/{gsku}?group=EAST"))
    if readable:
        assert r.status_code == 200 and body["group"]["location"] == "EAST", body
        assert [loc["location"] for loc in body["locations"]] == ["DC-01", "DC-02"]
    else:
        assert r.status_code == 503 and body["error"]["code"] == "position_unreadable", body
    # Drift routes on a key with a hostile position: no alert, 404.
    assert check(client.get(f"/v1/drift/{sku}/DC-01"))["error"]["code"] == "not_found"


def test_a_key_with_only_safety_stock_has_no_1970_as_of_and_no_lag(hostile):
    client, _ = hostile
    for path in ("/v1/availability/P-controls-only/DC-01", "/v1/availability/P-controls-only/DC-01?generation=default"):
        body = check(client.get(path))
        assert (body["as_of"], body["lag_ms"], body["safety_stock"], body["shortfall"]) == (None, None, 4, 4)
        assert body["updated_at"] == "2026-01-01T00:00:00.050000Z"
    body = check(client.post("/v1/availability/query", json={"items": [{"sku": "P-controls-only", "location": "DC-01"}]}))
    assert (body["results"][0]["availability"]["as_of"], body["results"][0]["availability"]["lag_ms"]) == (None, None)
    body = check(client.get("/v1/availability/P-controls-only"))
    assert [(loc["location"], loc["as_of"] is None) for loc in body["locations"]] == [("DC-01", True), ("DC-02", False)]


def test_a_group_whose_members_field_is_corrupt_is_unreadable(hostile, rclient):
    client, ks = hostile
    for members in ("not json", '{"DC-01": 1}', '[["DC-01"]]', '[["DC-01", 99999999999999999999]]', "[[1, 2]]"):
        rclient.hset(ks.group("P-newer-layout", "EAST"), mapping={**good_hash("P-newer-layout", "EAST"),
                                                                  "members": members})
        body = check(r := client.get("/v1/availability/P-newer-layout?group=EAST"))
        assert r.status_code == 503 and body["error"]["code"] == "position_unreadable", (members, body)


def test_a_position_key_of_the_wrong_type_fails_only_itself(hostile):
    client, _ = hostile
    for path in ("/v1/availability/WRONG-TYPE/DC-01", "/v1/availability/WRONG-TYPE/DC-01?generation=default"):
        body = check(r := client.get(path))
        assert r.status_code == 503 and body["error"]["code"] == "position_unreadable", body
    items = [{"sku": "WRONG-TYPE", "location": "DC-01"}, {"sku": "P-newer-layout", "location": "DC-02"}]
    results = check(client.post("/v1/availability/query", json={"items": items}))["results"]
    assert results[0]["error"]["code"] == "position_unreadable" and results[1]["found"]
    body = check(r := client.get("/v1/availability/WRONG-TYPE"))  # its location set also names garbage
    assert r.status_code == 200 and body["locations"] == []
    assert sorted(u["location"] for u in body["unreadable"]) == sorted(["DC-01", "bad location!", "\ufffd"])
    body = check(r := client.get("/v1/drift/WRONG-TYPE/DC-01"))
    assert r.status_code == 200 and body["alerts"] == [] and len(body["unreadable"]) == 1


@pytest.mark.parametrize("name", HOSTILE_ALERTS)
def test_a_hostile_alert_never_fails_the_drift_routes(hostile, name):
    client, _ = hostile
    readable = HOSTILE_ALERTS[name][1]
    sku = f"A-{name}"
    body = check(r := client.get(f"/v1/drift/{sku}/DC-01"))
    assert r.status_code == 200, body
    assert [a["kind"] for a in body["alerts"]] == (["DRIFT", "OVERSOLD"] if readable else ["OVERSOLD"])
    assert [u["entry"] for u in body["unreadable"]] == ([] if readable else ["DRIFT"])
    assert all(u["code"] == "alert_unreadable" and u["message"] for u in body["unreadable"])
    # The listing: the bad alert is skipped and flagged, every other alert still listed.
    for query in ("", "?location=DC-01", "?kind=DRIFT", "?min_severity=critical", "?limit=1000"):
        body = check(r := client.get(f"/v1/drift{query}"))
        assert r.status_code == 200, (query, body)
        listed = {(a["sku"], a["kind"]) for a in body["alerts"]}
        flagged = {u["entry"] for u in body["unreadable"]}
        if query != "?kind=DRIFT":
            assert (sku, "OVERSOLD") in listed, query
        if readable and query in ("", "?kind=DRIFT"):
            assert ("S", "DRIFT") in listed  # the newer-layout alert is stored with sku "S"
        if not readable:
            assert alert_member("DRIFT", sku, "DC-01") in flagged, query
        assert {"garbage", "DRIFT|no-at-sign", "NOPE|S@DC-01"} <= flagged, query


def test_the_listing_limit_counts_served_alerts_and_bounds_the_flagged(hostile):
    client, _ = hostile
    body = check(client.get("/v1/drift?limit=3"))
    assert len(body["alerts"]) == 3 and len(body["unreadable"]) <= 3
    assert [a["as_of"] for a in body["alerts"]] == sorted((a["as_of"] for a in body["alerts"]), reverse=True)


def test_a_meta_with_a_garbage_retire_at_still_serves_its_generation(hostile, rclient):
    client, ks = hostile
    rclient.hset(ks.meta, "retire_at", "soon")
    r = client.get("/v1/availability/P-newer-layout/DC-02?generation=default")
    assert check(r)["location"] == "DC-02"


# --- Hostile requests -----------------------------------------------------------------------


@pytest.fixture
def client(settings: Settings, rclient):
    write_meta(rclient, KeySpace(settings.redis_key_prefix), "test-run", READY)
    with TestClient(create_app(settings, max_body_bytes=4096), raise_server_exceptions=False) as c:
        yield c


def test_a_wrong_method_gets_405_with_allow(client):
    for method, path, allowed in (("DELETE", "/healthz", {"GET", "HEAD"}), ("POST", "/readyz", {"GET", "HEAD"}),
                                  ("PUT", "/v1/availability/query", {"GET", "POST"}),  # GET: the SKU "query"
                                  ("DELETE", "/v1/availability/S/L", {"GET"})):
        r = client.request(method, path)
        assert r.status_code == 405 and check(r)["error"]["code"] == "method_not_allowed"
        assert {m.strip() for m in r.headers["Allow"].split(",")} == allowed, (path, r.headers.get("Allow"))


def test_head_works_on_the_health_routes(client, rclient, settings):
    for path in ("/healthz", "/readyz"):
        r = client.head(path)
        assert r.status_code == 200 and r.content == b"", path
    rclient.hset(KeySpace(settings.redis_key_prefix).meta, "flow", "stopped")
    assert client.head("/readyz").status_code == 503


def test_a_body_that_is_not_json_or_not_utf8_is_400_with_the_error_body(client):
    for content in (b'{"items": [', b"\xff\xfe\xfa{}", b'{"items": [{"sku": "\xff", "location": "A"}]}'):
        r = client.post("/v1/availability/query", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 400 and check(r)["error"]["code"] == "malformed_body", (content, r.text)
    spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/v1/availability/query"]["post"]["responses"]
    assert {"400", "413", "422", "503"} <= set(responses)
    assert responses["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


def test_a_body_over_the_limit_is_413_without_being_read(client):
    big = json.dumps({"items": [{"sku": "S", "location": "L"}] * 200}).encode()  # > 4096 bytes
    assert len(big) > 4096
    r = client.post("/v1/availability/query", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and check(r)["error"]["code"] == "body_too_large"
    assert r.json()["error"]["details"] == {"limit_bytes": 4096}

    def chunks():  # no Content-Length: counted as it streams, refused once past the limit
        for _ in range(1000):
            yield b" " * 1024

    r = client.post("/v1/availability/query", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and check(r)["error"]["code"] == "body_too_large"
    small = json.dumps({"items": [{"sku": "S", "location": "L"}]}).encode()
    ok = client.post("/v1/availability/query", content=iter([small[:10], small[10:]]),
                     headers={"content-type": "application/json"})
    assert ok.status_code == 200 and ok.json()["results"][0]["found"] is False


# --- Readiness and the dataflow's liveness ---------------------------------------------------


def test_readyz_follows_the_dataflows_liveness(client, rclient, settings):
    meta = KeySpace(settings.redis_key_prefix).meta
    assert client.get("/readyz").json() == {"status": "ready", "generation": "default"}  # no flow field: as before
    now = int(time.time() * 1000)
    cases = [
        ({"flow": "running", "heartbeat": now}, 200, None),
        ({"flow": "running", "heartbeat": now - 14_000}, 200, None),
        ({"flow": "running", "heartbeat": now - 16_000}, 503, "dataflow_stale"),
        ({"flow": "running", "heartbeat": "garbage"}, 503, "dataflow_stale"),
        ({"flow": "stopped", "heartbeat": now}, 503, "dataflow_stopped"),
        ({"flow": "crash_loop", "heartbeat": now}, 503, "dataflow_crash_loop"),
        ({"flow": "starting", "heartbeat": now}, 200, None),  # a value a newer dataflow adds: by its heartbeat
    ]
    for fields, status, code in cases:
        rclient.hset(meta, mapping=fields)
        r = client.get("/readyz")
        body = check(r)
        assert r.status_code == status, (fields, body)
        if code:
            assert body["error"]["code"] == code and body["error"]["details"]["flow"] == fields["flow"]
            assert r.headers["Retry-After"]
        else:
            assert body == {"status": "ready", "generation": "default"}
    rclient.hdel(meta, "heartbeat")
    rclient.hset(meta, "flow", "running")
    assert check(client.get("/readyz"))["error"]["code"] == "dataflow_stale"  # running, never heard from
    rclient.hdel(meta, "flow", "heartbeat")
    assert client.get("/readyz").status_code == 200
    rclient.hset(meta, "state", "rebuilding")  # the keyspace's state still comes first
    rclient.hset(meta, "flow", "stopped")
    assert check(client.get("/readyz"))["error"]["code"] == "rebuilding"


def test_the_heartbeat_age_is_a_setting(settings, rclient):
    meta = KeySpace(settings.redis_key_prefix).meta
    write_meta(rclient, KeySpace(settings.redis_key_prefix), "test-run", READY)
    rclient.hset(meta, mapping={"flow": "running", "heartbeat": int(time.time() * 1000) - 5_000})
    with TestClient(create_app(settings.model_copy(update={"ready_heartbeat_s": 2.0}))) as client:
        assert check(client.get("/readyz"))["error"]["code"] == "dataflow_stale"
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200


def test_an_unexpected_error_is_still_the_json_error_body(client, monkeypatch):
    from serving.store import PositionStore

    async def broken(self) -> str:
        raise RuntimeError("a defect")

    monkeypatch.setattr(PositionStore, "check_ready", broken)
    r = client.get("/readyz")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "internal_error"


def test_a_generation_pointer_that_is_not_a_name_is_keyspace_missing_not_500(client, rclient, settings):
    """The defect: a pointer holding bytes that are not UTF-8 made every read answer 500."""
    from projection.keys import Generations

    pointer = Generations(settings.redis_key_prefix).pointer
    for raw in (b"\xff\xfe", b"", b"no such generation"):
        rclient.set(pointer, raw)
        for path in ("/v1/availability/S/DC-01", "/v1/availability/S", "/v1/drift"):
            body = check(r := client.get(path))
            assert r.status_code == 503 and body["error"]["code"] == "keyspace_missing", (raw, path, body)
    rclient.delete(pointer)
    assert client.get("/v1/availability/S/DC-01").status_code == 404  # served again


def test_an_index_of_the_wrong_type_is_index_unreadable_not_store_unavailable(client, rclient, settings):
    """The defect: a SKU's location set or the alert index holding another Redis type answered 503
    store_unavailable, which sends the operator after a Redis outage that is not there."""
    ks = KeySpace(settings.redis_key_prefix)
    rclient.set(ks.locations("S"), "not a set")
    rclient.set(ks.alerts(), "not a sorted set")
    for path in ("/v1/availability/S", "/v1/drift"):
        body = check(r := client.get(path))
        assert r.status_code == 503 and body["error"]["code"] == "index_unreadable", (path, body)
        assert "atp generation" in body["error"]["message"] or "rebuild" in body["error"]["message"]
    assert check(client.get("/v1/availability/T/DC-01")).get("error", {}).get("code") == "not_found"


def test_a_meta_the_api_tolerates_does_not_stop_the_dataflow_or_the_cli(rclient, settings):
    """The defect: a meta value that is not UTF-8, or a retire_at that is not a number (both served
    by the API), made the dataflow's start, its keyspace watch and `atp generation list` raise."""
    from dataflows.runtime.continuity import plan_start
    from projection.generations import read_meta, retire_due

    ks = KeySpace(settings.redis_key_prefix)
    write_meta(rclient, ks, "test-run", READY)
    rclient.hset(ks.meta, mapping={"note": b"\xff", "retire_at": "soon"})
    assert read_meta(rclient, ks)["note"] == "\ufffd"
    assert retire_due({"retire_at": "soon"}) is False
    from dataflows.runtime.recovery import RecoveryError

    with pytest.raises(RecoveryError, match="no recovery store"):  # past the meta: the usual refusal, with what to do
        plan_start(settings, rclient)
