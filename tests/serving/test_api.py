"""The availability API and the version-guarded Redis projection, against the real Redis."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from dataflows.redis_sink import RedisPositionSink
from dataflows.republish import REPUBLISH
from dataflows.runtime.continuity import write_meta
from projection.keys import READY, REBUILDING, KeySpace, generations_of
from sandbox.stack import free_port
from serving.main import create_app
from state.position import Position

pytestmark = [pytest.mark.integration, pytest.mark.one_broker]


def pos(sku="SKU-1", location="DC-01", version=1, available=10, reserved=2, **kw):
    fields = dict(atp=max(0, available - reserved), available_qty=available, on_hand=available, reserved=reserved,
                  non_sellable=0, inbound=0, safety_stock=0, shortfall=max(0, reserved - available),
                  as_of=1_767_225_600_000, updated_at=1_767_225_600_050)
    fields.update(kw)
    return Position(sku=sku, location=location, version=version, **fields)


@pytest.fixture
def sink(settings: Settings, rclient):
    write_meta(rclient, KeySpace(settings.redis_key_prefix), "test-run", READY)  # as `atp run` does at start
    part = RedisPositionSink(settings.redis_url, KeySpace(settings.redis_key_prefix)).build("t", 0, 1)
    yield part
    part.close()


@pytest.fixture
def client(settings: Settings, rclient):
    write_meta(rclient, KeySpace(settings.redis_key_prefix), "test-run", READY)
    with TestClient(create_app(settings)) as c:
        yield c


def test_version_guard_and_in_batch_coalescing(sink, rclient, settings):
    ks = KeySpace(settings.redis_key_prefix)
    sink.write_batch([pos(version=3, available=30), pos(version=5, available=50), pos(version=4, available=40)])
    assert rclient.hget(ks.position("SKU-1", "DC-01"), "available_qty") == b"50"
    sink.write_batch([pos(version=2, available=20), pos(version=5, available=55)])  # replayed: older or equal
    assert rclient.hget(ks.position("SKU-1", "DC-01"), "available_qty") == b"50"
    sink.write_batch([pos(version=6, available=60)])
    assert rclient.hget(ks.position("SKU-1", "DC-01"), "available_qty") == b"60"
    assert rclient.smembers(ks.locations("SKU-1")) == {b"DC-01"}


def test_the_packed_write_stores_every_field_as_it_reads_back(sink, rclient, settings):
    from projection.codec import from_hash
    from state.groups import GroupPosition

    ks = KeySpace(settings.redis_key_prefix)
    p = pos(version=9, available=-3, reserved=4, shortfall=7, demand_per_min_5m=0.4, demand_per_min_60m=1.25,
            stockout_eta_minutes=12.5, formula_version=2)
    quiet = pos(sku="SKU-2", version=1)  # no demand: the estimate is stored empty and reads back None
    sink.write_batch([p, quiet, GroupPosition("EAST", pos(location="EAST", version=4), (("DC-01", 2), ("DC-02", 2)))])
    assert from_hash(rclient.hgetall(ks.position("SKU-1", "DC-01"))) == p.as_dict()
    assert from_hash(rclient.hgetall(ks.position("SKU-2", "DC-01"))) == quiet.as_dict()
    group = from_hash(rclient.hgetall(ks.group("SKU-1", "EAST")))
    assert group.pop("members") == '[["DC-01",2],["DC-02",2]]'
    assert group == pos(location="EAST", version=4).as_dict()


def test_a_batch_larger_than_one_call_guards_each_item_on_its_own(sink, rclient, settings):
    from projection.scripts import WRITE_CHUNK

    ks = KeySpace(settings.redis_key_prefix)
    n = 2 * WRITE_CHUNK + 37  # three calls, the last one partial
    sink.write_batch([pos(sku=f"SKU-{i}", version=5, available=50) for i in range(n)])
    # Every third key now gets an older version, the others a newer one, in the same calls.
    sink.write_batch([pos(sku=f"SKU-{i}", version=4 if i % 3 == 0 else 6, available=i) for i in range(n)])
    stored = [rclient.hmget(ks.position(f"SKU-{i}", "DC-01"), "version", "available_qty") for i in range(n)]
    assert stored == [[b"5", b"50"] if i % 3 == 0 else [b"6", str(i).encode()] for i in range(n)]
    assert all(rclient.smembers(ks.locations(f"SKU-{i}")) == {b"DC-01"} for i in range(n))


def test_the_sink_reloads_its_script_after_redis_forgets_it(sink, rclient, settings):
    rclient.script_flush()  # as after a Redis restart
    sink.write_batch([pos(version=1, available=7)])
    assert rclient.hget(KeySpace(settings.redis_key_prefix).position("SKU-1", "DC-01"), "available_qty") == b"7"


def test_one_key(sink, client, settings, rclient):
    sink.write_batch([pos(version=7, available=12, reserved=5)])
    r = client.get("/v1/availability/SKU-1/DC-01")
    assert r.json()["watermark"] is None and r.json()["lag_ms"] is None  # no dataflow has worked one out
    rclient.hset(KeySpace(settings.redis_key_prefix).meta, "watermark", 1_767_225_660_000)  # 1 min after as_of
    before = int(time.time() * 1000)
    r = client.get("/v1/availability/SKU-1/DC-01")
    after = int(time.time() * 1000)
    assert r.status_code == 200
    body = r.json()
    assert (body["atp"], body["reserved"], body["version"]) == (7, 5, 7)
    assert body["as_of"] == "2026-01-01T00:00:00Z" and body["updated_at"] == "2026-01-01T00:00:00.050000Z"
    assert body["watermark"] == "2026-01-01T00:01:00Z"
    assert before - 1_767_225_660_000 - 1 <= body["lag_ms"] <= after - 1_767_225_660_000 + 1  # now - watermark
    assert set(body) == {"sku", "location", "atp", "available_qty", "on_hand", "reserved", "non_sellable", "inbound",
                         "safety_stock", "shortfall", "version", "as_of", "updated_at", "watermark", "lag_ms",
                         "formula_version",
                         "demand_per_min_5m", "demand_per_min_60m", "stockout_eta_minutes"}
    assert body["formula_version"] == 1 and r.headers["ATP-Generation"] == "default"
    assert (body["demand_per_min_5m"], body["stockout_eta_minutes"]) == (0.0, None)


def test_the_single_key_fast_path_answers_as_the_fastapi_route_does(sink, client, settings, rclient):
    from serving import fastpath

    sink.write_batch([pos(version=7, available=12, reserved=5, demand_per_min_5m=0.5, stockout_eta_minutes=14.0),
                      pos(sku="SKU-2", version=1)])
    rclient.hset(KeySpace(settings.redis_key_prefix).meta, "watermark", int(time.time() * 1000))
    answered = []
    real_read = fastpath._read

    async def counting(*args):
        result = await real_read(*args)
        answered.append(result is not None)
        return result

    fastpath._read = counting
    try:
        with TestClient(create_app(settings, fast_path=False)) as reference:
            for path in ("/v1/availability/SKU-1/DC-01", "/v1/availability/SKU-2/DC-01",  # found
                         "/v1/availability/SKU-404/DC-01",  # unknown: 404
                         "/v1/availability/-bad/DC-01", "/v1/availability/SKU-1/" + "x" * 65):  # invalid: 422
                fast, slow = client.get(path), reference.get(path)
                assert fast.status_code == slow.status_code, path
                a, b = fast.json(), slow.json()
                if fast.status_code == 200:
                    assert abs(a.pop("lag_ms") - b.pop("lag_ms")) < 5000
                    assert list(a) == list(b)  # same fields in the same order
                assert a == b, path
                assert {k: v for k, v in fast.headers.items() if k != "content-length"} == \
                       {k: v for k, v in slow.headers.items() if k != "content-length"}
                assert int(fast.headers["content-length"]) == len(fast.content)
            rclient.delete(KeySpace(settings.redis_key_prefix).meta)  # not ready: 503 from the route
            fast, slow = client.get("/v1/availability/SKU-1/DC-01"), reference.get("/v1/availability/SKU-1/DC-01")
            assert fast.status_code == slow.status_code == 503 and fast.json() == slow.json()
    finally:
        fastpath._read = real_read
    # The fast path answered the two found keys; the invalid ids never reached it, the rest fell through.
    assert answered == [True, True, False, False]
    text = client.get("/metrics").text
    assert 'atp_api_requests_total{route="/v1/availability/{sku}/{location}",status="200"}' in text


def test_concurrent_single_key_reads_go_to_redis_as_one_command_and_each_gets_its_own(sink, settings, rclient):
    import asyncio

    import redis.asyncio as aioredis

    from serving.store import MAX_COALESCED, PositionStore

    sink.write_batch([pos(sku=f"SKU-{i}", version=i + 1, available=i) for i in range(300)])

    async def reads() -> tuple[list, list, dict]:
        client = aioredis.Redis.from_url(settings.redis_url)
        store = PositionStore(client, generations_of(settings))
        try:
            await store.get_one("SKU-0", "DC-01")  # loads the script
            rclient.config_resetstat()
            together = await asyncio.gather(*(store.get_one(f"SKU-{i}", "DC-01") for i in [*range(300), 404]))
            stats = rclient.info("commandstats")
            # A request cancelled while its read waits (its client left) is skipped; the others are answered.
            tasks = [asyncio.create_task(store.get_one(f"SKU-{i}", "DC-01")) for i in (1, 2, 3)]
            await asyncio.sleep(0)  # each has queued its read
            tasks[1].cancel()
            rest = await asyncio.gather(*tasks, return_exceptions=True)
            return together, rest, stats
        finally:
            await client.aclose()

    together, rest, stats = asyncio.run(reads())
    assert [r.results[0]["version"] for r in together[:300]] == list(range(1, 301))
    assert [r.results[0]["available_qty"] for r in together[:300]] == list(range(300))
    assert together[300].results[0] is None and {r.generation for r in together} == {"default"}
    # 301 reads of one turn: one script call per MAX_COALESCED keys (the commands it runs count too).
    calls = {name.removeprefix("cmdstat_"): s["calls"] for name, s in stats.items()}
    assert MAX_COALESCED == 256 and (calls["evalsha"], calls["hgetall"], calls["hmget"]) == (2, 301, 2)
    assert rest[0].results[0]["version"] == 2 and rest[2].results[0]["version"] == 4
    assert isinstance(rest[1], asyncio.CancelledError)


def test_unknown_key_is_404_and_invalid_id_is_422(client):
    r = client.get("/v1/availability/SKU-404/DC-01")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get("/v1/availability/-bad/DC-01")
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and "sku" in err["message"]


def test_network_view_sums_locations(sink, client):
    sink.write_batch([pos(location="DC-01", available=10, reserved=2), pos(location="DC-02", available=5, reserved=7)])
    body = client.get("/v1/availability/SKU-1").json()
    assert [loc["location"] for loc in body["locations"]] == ["DC-01", "DC-02"]
    assert body["total"]["atp"] == 8 and body["total"]["shortfall"] == 2 and body["total"]["available_qty"] == 15
    assert client.get("/v1/availability/SKU-NONE").status_code == 404


def test_a_group_is_served_with_its_members_and_the_dataflows_sums(sink, settings, rclient):
    from state.groups import group_position

    members = {"DC-01": pos(location="DC-01", version=3, available=10, reserved=2),
               "DC-02": pos(location="DC-02", version=4, available=5, reserved=7)}
    newer = group_position("SKU-1", "EAST", members, 1_767_225_600_100)
    older = group_position("SKU-1", "EAST", {"DC-01": pos(location="DC-01", version=2, available=99)}, 0)
    sink.write_batch([*members.values(), newer, older])  # the older group position never wins
    sink.write_batch([older])
    grouped = settings.model_copy(update={"location_groups": {"EAST": ["DC-01", "DC-02"], "WEST": ["DC-09"]}})
    write_meta(rclient, KeySpace(settings.redis_key_prefix), "test-run", READY)
    with TestClient(create_app(grouped)) as client:
        body = client.get("/v1/availability/SKU-1?group=EAST").json()
        assert [loc["location"] for loc in body["locations"]] == ["DC-01", "DC-02"]
        assert (body["total"]["atp"], body["total"]["available_qty"], body["total"]["shortfall"]) == (8, 15, 2)
        g = body["group"]
        assert (g["location"], g["version"], g["atp"]) == ("EAST", 7, 8)
        assert g["members"] == [{"location": "DC-01", "version": 3}, {"location": "DC-02", "version": 4}]
        assert client.get("/v1/availability/SKU-1").json()["group"] is None
        missing = client.get("/v1/availability/SKU-1?group=WEST")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        unknown = client.get("/v1/availability/SKU-1?group=NORTH")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_group"
        assert "EAST, WEST" in unknown.json()["error"]["message"]
        assert client.get("/v1/availability/SKU-1?group=-x").status_code == 422


def test_batch_query_keeps_request_order_and_limits_size(sink, client):
    sink.write_batch([pos(sku="A", available=1, reserved=0), pos(sku="B", available=2, reserved=0)])
    items = [{"sku": "B", "location": "DC-01"}, {"sku": "X", "location": "DC-01"}, {"sku": "A", "location": "DC-01"}]
    results = client.post("/v1/availability/query", json={"items": items}).json()["results"]
    assert [(r["sku"], r["found"]) for r in results] == [("B", True), ("X", False), ("A", True)]
    assert results[0]["availability"]["atp"] == 2
    too_many = client.post("/v1/availability/query", json={"items": [items[0]] * 1001})
    assert too_many.status_code == 422 and "1000" in too_many.json()["error"]["message"]
    empty = client.post("/v1/availability/query", json={"items": []})
    assert empty.status_code == 422
    bad = client.post("/v1/availability/query", json={"items": [{"sku": "a b", "location": "DC-01"}]})
    assert bad.status_code == 422


def test_health_readiness_metrics_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "generation": "default"}
    client.get("/v1/availability/SKU-9/DC-01")
    text = client.get("/metrics").text
    assert 'atp_api_requests_total{route="/v1/availability/{sku}/{location}",status="404"}' in text
    assert "SKU-9" not in text  # never a label per SKU
    spec = client.get("/openapi.json").json()
    assert {"/v1/availability/{sku}/{location}", "/v1/availability/{sku}", "/v1/availability/query",
            "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])


def test_redis_down_gives_503_with_the_error_body(settings):
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(down)) as client:
        r = client.get("/v1/availability/SKU-1/DC-01")
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        assert client.get("/readyz").status_code == 503
        assert client.post("/v1/availability/query", json={"items": [{"sku": "A", "location": "B"}]}).status_code == 503
        assert client.get("/healthz").status_code == 200


def test_a_lost_keyspace_is_reported_once_and_the_api_answers_503(sink, client, rclient, settings):
    ks = KeySpace(settings.redis_key_prefix)
    sink.write_batch([pos(version=1, available=7)])
    assert client.get("/v1/availability/SKU-1/DC-01").status_code == 200
    rclient.delete(ks.meta)  # what FLUSHALL or a restart without persistence leaves
    REPUBLISH.reset(active=False)
    calls = []
    REPUBLISH.on_lost = lambda: calls.append(1)  # `atp run` stops the flow here, to restart it
    try:
        sink.write_batch([pos(version=2, available=8)])
        sink.write_batch([pos(version=3, available=8)])
    finally:
        REPUBLISH.on_lost = lambda: None
    assert REPUBLISH.lost.is_set() and calls == [1]  # reported once, however many writes notice
    for path in ("/v1/availability/SKU-1/DC-01", "/v1/availability/SKU-1", "/readyz"):
        r = client.get(path)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "keyspace_missing", path
    r = client.post("/v1/availability/query", json={"items": [{"sku": "SKU-1", "location": "DC-01"}]})
    assert r.status_code == 503
    write_meta(rclient, ks, "test-run", REBUILDING)
    r = client.get("/v1/availability/SKU-1/DC-01")
    assert r.status_code == 503 and r.json()["error"] == {
        "code": "rebuilding", "message": r.json()["error"]["message"], "details": {"keyspace_state": "rebuilding"}}
    write_meta(rclient, ks, "test-run", READY)
    assert client.get("/v1/availability/SKU-1/DC-01").json()["available_qty"] == 8
    REPUBLISH.reset(active=False)
