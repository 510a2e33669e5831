"""ATP_REDIS_CLUSTER against a real three-node Redis Cluster started here: the dataflow's sink
writes (version guard included), the API reads one key, a SKU and a batch across slots, and the
SCAN-based delete reaches every node."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from core.config import load_settings
from core.errors import ConfigError
from dataflows.redis_sink import RedisPositionSink
from projection.client import connect
from projection.generations import delete_matching, write_meta
from projection.keys import READY, keyspace_of
from sandbox.stack import Endpoint, free_port, port_free
from serving.main import create_app
from state.position import Position

pytestmark = [pytest.mark.integration, pytest.mark.one_broker]


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-cli") is None:
        pytest.fail("redis-cli is missing: it comes with Debian's redis-server package (redis-tools)")
    work = tmp_path_factory.mktemp("redis-cluster")
    ports = _cluster_ports(3)
    procs = [subprocess.Popen(
        ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
         "--cluster-config-file", f"nodes-{p}.conf", "--save", "", "--appendonly", "no", "--dir", str(work),
         "--logfile", str(work / f"{p}.log")]) for p in ports]
    try:
        for p in ports:
            _wait(lambda p=p: _node(p), "a node to start")
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for p in ports:
            _wait(lambda p=p: _node(p)["cluster_state"] == "ok", "the cluster")
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def _cluster_ports(n: int) -> list[int]:
    """Free ports whose cluster bus port (port + 10000) exists and is free too."""
    out: list[int] = []
    while len(out) < n:
        p = free_port()
        if p + 10_000 <= 65_535 and p not in out and port_free(Endpoint("127.0.0.1", p + 10_000)):
            out.append(p)
    return out


def _wait(check, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def _node(port: int):
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2) as node:
        return node.ping() and node.cluster("info")


def _pos(sku: str, loc: str, version: int, qty: int) -> Position:
    return Position(sku, loc, atp=qty, available_qty=qty, on_hand=qty, reserved=0, non_sellable=0, inbound=0,
                    safety_stock=0, shortfall=0, version=version, as_of=1_767_225_600_000 + version,
                    updated_at=1_767_225_600_000)


def test_sink_and_api_work_against_a_redis_cluster(cluster_url: str, tmp_path: Path):
    s = load_settings({}, redis_url=cluster_url, redis_cluster=True, redis_key_prefix="clu", state_dir=tmp_path,
                      api_auth="disabled")
    client = connect(s)
    assert len({n.port for n in client.get_primaries()}) == 3
    skus = [f"SKU-{i}" for i in range(60)]  # spread over the slots of all three nodes
    part = RedisPositionSink(s.redis_url, keyspace_of(s), cluster=True).build("out", 0, 1)
    part.write_batch([_pos(sku, loc, 5, 10 + i) for i, sku in enumerate(skus) for loc in ("DC-01", "DC-02")])
    part.write_batch([_pos("SKU-7", "DC-01", 4, 999)])  # an older version: refused on its node
    slots = {client.keyslot(keyspace_of(s).position(sku, "DC-01")) for sku in skus}
    nodes = {client.nodes_manager.get_node_from_slot(slot).port for slot in slots}
    assert len(nodes) == 3
    write_meta(client, keyspace_of(s), "t", READY)

    with TestClient(create_app(s)) as api:
        one = api.get("/v1/availability/SKU-7/DC-01")
        assert one.status_code == 200 and (one.json()["available_qty"], one.json()["version"]) == (17, 5)
        sku = api.get("/v1/availability/SKU-42").json()
        assert [p["location"] for p in sku["locations"]] == ["DC-01", "DC-02"] and sku["total"]["atp"] == 2 * 52
        batch = api.post("/v1/availability/query",
                         json={"items": [{"sku": k, "location": "DC-02"} for k in skus] + [{"sku": "NOPE", "location": "DC-01"}]})
        results = batch.json()["results"]
        assert [r["availability"]["atp"] for r in results[:-1]] == [10 + i for i in range(60)]
        assert results[-1]["found"] is False
        assert api.get("/readyz").status_code == 200

    assert delete_matching(client, "clu:*") == 60 * 2 + 60 + 1  # positions, location sets, meta
    assert not any(True for _ in client.scan_iter(match="clu:*"))


def test_a_cluster_url_must_be_a_node_with_db_0():
    with pytest.raises(ConfigError, match="db 0"):
        load_settings({}, redis_url="redis://127.0.0.1:7000/3", redis_cluster=True)
