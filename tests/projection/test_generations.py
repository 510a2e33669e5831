"""Generations: the pointer the API follows, switching and its refusals, start checks, verification
and the formula versions, against the real Redis."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient

from core.config import load_settings
from core.errors import ConfigError
from dataflows.redis_sink import RedisPositionSink
from dataflows.runtime.continuity import KeyspaceWatch, plan_start
from projection.generations import (
    PIT,
    GenerationError,
    Spec,
    drop,
    for_generation,
    list_all,
    now_ms,
    read_meta,
    switch,
    write_meta,
)
from projection.keys import READY, REBUILDING, generations_of, keyspace_of
from projection.verify import compare
from serving.main import create_app
from state.fold import AVAILABLE, KeyState
from state.position import Position, position

pytestmark = pytest.mark.integration


def pos(version: int, available: int, sku: str = "SKU-1", location: str = "DC-01", formula: int = 1) -> Position:
    return Position(sku=sku, location=location, atp=available, available_qty=available, on_hand=available,
                    reserved=0, non_sellable=0, inbound=0, safety_stock=0, shortfall=0, version=version,
                    as_of=1_767_225_600_000, updated_at=now_ms(), formula_version=formula)


def publish(settings, name: str, positions: list[Position], state: str = READY, spec: Spec | None = None) -> None:
    """A generation as its dataflow leaves it: meta, then positions through the production sink."""
    ks = generations_of(settings).keyspace(name)
    client = redis.Redis.from_url(settings.redis_url)
    write_meta(client, ks, f"run-{name}", state, spec)
    client.close()
    part = RedisPositionSink(settings.redis_url, ks).build("t", 0, 1)
    part.write_batch(positions)
    part.close()


@pytest.fixture
def api(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def test_the_api_follows_the_pointer_and_reads_a_named_generation(settings, rclient, api):
    publish(settings, "default", [pos(5, 50)])
    publish(settings, "g2", [pos(5, 55, formula=2)], spec=Spec("g2", "replay", 2))
    r = api.get("/v1/availability/SKU-1/DC-01")
    assert (r.json()["available_qty"], r.headers["ATP-Generation"]) == (50, "default")

    assert switch(settings, rclient, "g2", grace_s=60) == "default"
    r = api.get("/v1/availability/SKU-1/DC-01")  # the cached pointer is stale: the read is redone on g2
    assert (r.json()["available_qty"], r.json()["formula_version"], r.headers["ATP-Generation"]) == (55, 2, "g2")
    r = api.post("/v1/availability/query", json={"items": [{"sku": "SKU-1", "location": "DC-01"}]})
    assert r.headers["ATP-Generation"] == "g2"
    assert api.get("/v1/availability/SKU-1").headers["ATP-Generation"] == "g2"
    assert api.get("/readyz").json() == {"status": "ready", "generation": "g2"}

    old = api.get("/v1/availability/SKU-1/DC-01?generation=default")  # readable during its grace period
    assert (old.status_code, old.json()["available_qty"], old.headers["ATP-Generation"]) == (200, 50, "default")
    rclient.hset(generations_of(settings).keyspace("default").meta, "retire_at", now_ms() - 1)
    gone = api.get("/v1/availability/SKU-1/DC-01?generation=default")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "generation_retired"
    unknown = api.get("/v1/availability/SKU-1?generation=nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "generation_not_found"
    bad = api.get("/v1/availability/SKU-1/DC-01?generation=Not-Valid!")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


def test_a_rebuilding_generation_is_never_served_even_by_name(settings, api):
    publish(settings, "default", [pos(1, 10)])
    publish(settings, "half", [pos(1, 10)], state=REBUILDING)
    r = api.get("/v1/availability/SKU-1/DC-01?generation=half")
    assert r.status_code == 503 and r.json()["error"]["code"] == "rebuilding"


def test_switch_refuses_what_must_not_become_current(settings, rclient):
    publish(settings, "default", [pos(1, 10)])
    with pytest.raises(GenerationError, match="no keyspace"):
        switch(settings, rclient, "absent", 0)
    publish(settings, "half", [pos(1, 10)], state=REBUILDING)
    with pytest.raises(GenerationError, match="is rebuilding"):
        switch(settings, rclient, "half", 0)
    publish(settings, "frozen", [pos(1, 10)], spec=Spec("frozen", PIT, 1, until_ms=1))
    with pytest.raises(GenerationError, match="never becomes current"):
        switch(settings, rclient, "frozen", 0)
    with pytest.raises(GenerationError, match="already current"):
        switch(settings, rclient, "default", 0)
    assert rclient.get(generations_of(settings).pointer) is None  # nothing moved
    with pytest.raises(GenerationError, match="is current"):
        drop(settings, rclient, "default")
    assert drop(settings, rclient, "half") == 3  # position, location set, meta
    assert {g.name for g in list_all(settings, rclient)} == {"default", "frozen"}


def test_start_checks_formula_point_in_time_and_retirement(settings, rclient):
    g = for_generation(settings, "g3")
    Spec("g3", "replay", 2).save(g.generation_dir)
    assert plan_start(g, rclient).spec.formula_version == 2  # the generation's own formula
    assert read_meta(rclient, keyspace_of(g))["formula_version"] == "2"
    with pytest.raises(GenerationError, match="formula 2, but ATP_FORMULA_VERSION=1"):
        plan_start(g.model_copy(update={"formula_version": 1}), rclient)
    p = for_generation(settings, "frozen")
    Spec("frozen", PIT, 1, until_ms=1).save(p.generation_dir)
    with pytest.raises(GenerationError, match="point-in-time"):
        plan_start(p, rclient)
    rclient.hset(keyspace_of(g).meta, "retire_at", now_ms() - 1)
    with pytest.raises(GenerationError, match="was retired"):
        plan_start(g, rclient)


def test_a_lost_pointer_is_restored_by_the_generation_that_was_current(settings, rclient):
    pointer = generations_of(settings).pointer
    g2, g3 = for_generation(settings, "g2"), for_generation(settings, "g3")
    w2 = KeyspaceWatch(rclient, g2, plan_start(g2, rclient), None)
    w3 = KeyspaceWatch(rclient, g3, plan_start(g3, rclient), None)
    rclient.set(pointer, "g2")
    w2.remember_pointer()
    w3.remember_pointer()
    for key in rclient.scan_iter(match=f"{settings.redis_key_prefix}:*"):  # Redis loses it all, pointer too
        rclient.delete(key)
    w3.restore_pointer()
    assert rclient.get(pointer) is None  # g3 was never current: it does not claim the pointer
    w2.restore_pointer()
    assert rclient.get(pointer) == b"g2"


def test_verification_lists_every_kind_of_difference(settings, rclient):
    publish(settings, "default", [pos(3, 30, "A"), pos(3, 30, "B"), pos(4, 40, "C"), pos(1, 1, "D")])
    publish(settings, "new", [pos(3, 30, "A"), pos(3, 31, "B"), pos(5, 50, "C"), pos(1, 1, "E")])
    gens = generations_of(settings)
    diff = compare(rclient, gens.keyspace("new"), gens.keyspace("default"))
    assert not diff.passed and diff.equal == 1
    assert [k for k, _ in diff.different] == ["{B}:DC-01"]
    assert diff.different[0][1]["available_qty"] == (31, 30)
    assert diff.version_apart == [("{C}:DC-01", 5, 4)]
    assert (diff.only_new, diff.only_current) == (["{E}:DC-01"], ["{D}:DC-01"])
    same = compare(rclient, gens.keyspace("default"), gens.keyspace("default"))
    assert same.passed and same.equal == 4


def test_formula_two_also_promises_inbound_stock():
    st = KeyState("SKU-1", "DC-01")
    st.buckets[AVAILABLE], st.inbound, st.reserved = 10, 7, 4
    assert position(st, 2, 0, formula=1).atp == 4
    assert position(st, 2, 0, formula=2).atp == 11
    assert position(st, 2, 0, formula=2).formula_version == 2


def test_settings_reject_unknown_formulas_and_bad_generation_names():
    with pytest.raises(ConfigError, match="ATP_FORMULA_VERSION='3': .*known versions: 1, 2"):
        load_settings({"ATP_FORMULA_VERSION": "3"})
    with pytest.raises(ConfigError, match="ATP_GENERATION"):
        load_settings({"ATP_GENERATION": "Has Space"})


def test_a_replay_refuses_a_log_whose_start_retention_deleted(settings, rclient, monkeypatch):
    from dataflows.runtime import replay as rp

    wms0 = (settings.topic_wms, 0)
    lows = {(t, p): 0 for t in settings.input_topics for p in range(settings.topic_partitions)} | {wms0: 10}
    monkeypatch.setattr(rp.kafka_admin, "low_offsets", lambda s: lows)  # the local broker never deletes records
    with pytest.raises(GenerationError, match=rf"{settings.topic_wms}:0 starts at 10.*--allow-truncated"):
        rp.prepare(settings, rclient, rp.Request("rebuild"))
    _, spec = rp.prepare(settings, rclient, rp.Request("rebuild", allow_truncated=True))
    assert spec.starts == {f"{settings.topic_wms}:0": 10}
    _, spec = rp.prepare(settings, rclient, rp.Request("rebuild", starts={f"{settings.topic_wms}:0": 12}))
    assert spec.starts == {f"{settings.topic_wms}:0": 12}  # a chosen start past the deleted records is fine
