"""Refusals at start, and re-publishing a keyspace Redis lost: the recovery store and Redis must
describe the same run, and a lost keyspace is rebuilt without serving numbers that are wrong."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest

from dataflows.kafka.producer import EventProducer
from dataflows.runtime.continuity import plan_start, read_meta, reset, write_meta
from dataflows.runtime.recovery import RecoveryError, RecoveryStore
from projection.codec import from_hash
from projection.keys import READY, REBUILDING, KeySpace
from sandbox.scrape import scrape, total
from sandbox.simulator import Simulator
from tests.conftest import processed, wait_until
from tests.reference import oracle_of

pytestmark = pytest.mark.integration


def with_workers(settings, n):
    return settings.model_copy(update={"workers": n})


def test_first_start_creates_a_stamped_store_and_a_ready_keyspace(settings, rclient):
    first = plan_start(settings, rclient)
    assert not first.republish and RecoveryStore(settings.recovery_dir).validate() == first.run_id
    assert read_meta(rclient, KeySpace(settings.redis_key_prefix))["state"] == READY
    again = plan_start(settings, rclient)
    assert (again.run_id, again.republish) == (first.run_id, False)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing", "mixed", "count"])
def test_a_damaged_store_is_refused_with_what_to_do(settings, rclient, tmp_path, damage):
    s = with_workers(settings, 2)
    plan_start(s, rclient)
    parts = RecoveryStore(s.recovery_dir).partitions()
    if damage == "garbage":
        parts[1].write_bytes(b"not a database" * 100)
        expected = "part-1.sqlite3 is damaged"
    elif damage == "truncated":
        data = parts[0].read_bytes()
        parts[0].write_bytes(data[: len(data) // 3])
        expected = "is damaged"
    elif damage == "missing":
        parts[1].unlink()
        expected = r"partition\(s\) 1 of 2 are missing"
    elif damage == "mixed":
        other = RecoveryStore(tmp_path / "other")
        other.create(2)
        shutil.copy(other.partitions()[1], parts[1])
        expected = "come from different runs"
    else:
        RecoveryStore(tmp_path / "three").create(3)
        shutil.copy(tmp_path / "three" / "part-2.sqlite3", s.recovery_dir / "part-2.sqlite3")
        expected = "disagree on their count"
    with pytest.raises(RecoveryError, match=expected) as info:
        plan_start(s, rclient)
    assert "`atp reset`" in str(info.value)


def test_a_keyspace_of_another_run_or_without_its_store_is_refused(settings, rclient):
    ks = KeySpace(settings.redis_key_prefix)
    plan_start(settings, rclient)
    write_meta(rclient, ks, "someone-else", READY)
    with pytest.raises(RecoveryError, match="belongs to run someone-else"):
        plan_start(settings, rclient)
    shutil.rmtree(settings.recovery_dir)  # state lost, keyspace kept: never start over silently
    with pytest.raises(RecoveryError, match="there is no recovery store"):
        plan_start(settings, rclient)
    deleted, existed = reset(settings, rclient)
    assert deleted == 1 and not existed and read_meta(rclient, ks) is None
    assert not plan_start(settings, rclient).republish


def test_a_lost_keyspace_plans_a_republish_to_the_end_offsets(settings, rclient):
    first = plan_start(settings, rclient)
    producer = EventProducer(settings)
    sim = Simulator(seed=3, skus=5, locations=2)
    for _ in range(50):
        producer.send(*sim.next())
    assert producer.flush() == 0
    rclient.delete(KeySpace(settings.redis_key_prefix).meta)
    plan = plan_start(settings, rclient)
    assert plan.republish and plan.run_id == first.run_id
    assert sum(plan.targets.values()) == 50
    assert read_meta(rclient, KeySpace(settings.redis_key_prefix))["state"] == REBUILDING
    assert plan_start(settings, rclient).republish  # still rebuilding: an interrupted re-publish resumes


def test_atp_run_refuses_a_damaged_store_within_seconds(settings, rclient, start):
    plan_start(settings, rclient)
    RecoveryStore(settings.recovery_dir).partitions()[0].write_bytes(b"\0" * 4096)
    started = time.monotonic()
    flow = start("run")
    assert flow.p.wait(30) == 2
    assert time.monotonic() - started < 20
    assert "is damaged" in flow.tail() and "atp reset" in flow.tail()


def read_all(rclient, ks, expected):
    pipe = rclient.pipeline(transaction=False)
    for key in expected:
        sku, loc = key.split("@")
        pipe.hgetall(ks.position(sku, loc))
    return [from_hash(raw) for raw in pipe.execute()]


def test_a_flushed_keyspace_is_republished_and_never_served_half_built(settings, rclient, start):
    sim = Simulator(seed=11, skus=40, locations=3)
    items = [sim.next() for _ in range(3000)]
    producer = EventProducer(settings)
    for alias, rec in items:
        producer.send(alias, rec)
    assert producer.flush() == 0
    flow = start("run")
    api = start("serve")
    ks = KeySpace(settings.redis_key_prefix)
    expected = {k: e.fields() for k, e in oracle_of(items).positions().items()}

    def converged():
        stored = read_all(rclient, ks, expected)
        return all(s is not None and s["version"] == e["version"] for s, e in zip(stored, expected.values()))

    wait_until(converged, 60, "the first pass", flow)
    wait_until(lambda: processed(settings) >= len(items), 30, "metrics", flow)
    time.sleep(2 * settings.snapshot_interval_s)  # let a snapshot cover everything
    url = f"http://{settings.api_host}:{settings.api_port}/v1/availability/SKU-00001/DC-01"
    wait_until(lambda: _status(url) == 200, 30, "the API", api)

    deleted = sum(rclient.delete(k) for k in rclient.scan_iter(match=f"{ks.prefix}:*"))
    assert deleted > len(expected)  # every position, location set and the meta key
    assert _status(url) == 503  # no meta: the API refuses at once rather than answering 404s
    statuses = []

    def republished():
        statuses.append(_status(url))
        meta = read_meta(rclient, ks)
        return meta is not None and meta["state"] == READY and converged()

    wait_until(republished, 60, "the keyspace to be re-published", flow, interval=0.05)
    assert flow.p.poll() is None, "the dataflow restarts itself in-process"
    assert 503 in statuses and _status(url) == 200  # 503 while rebuilding, 200 once ready
    for s, (key, e) in zip(read_all(rclient, ks, expected), expected.items()):
        assert {f: s[f] for f in e} == e, key
    log = flow.tail()
    assert "was lost" in log and "re-published" in log
    # No traffic revealed the loss: the watch did. The restart resumed from a snapshot that covered
    # every event, so nothing was applied twice; the counters live on in the same process.
    samples = scrape(f"http://{settings.metrics_host}:{settings.metrics_port}/metrics")
    assert total(samples, "atp_keyspace_lost_total") == 1
    assert total(samples, "atp_events_total") == len(items)


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return -1
