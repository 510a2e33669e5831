"""Cluster mode: two `atp run` processes share the input partitions and end equal to the fold:
through a kill -9 of both and a restart from process 0's recovery store, through the loss of the
Redis keyspace (re-published by both, declared ready by process 0), and one stops the other."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from core.config import load_settings
from dataflows.kafka.producer import EventProducer
from dataflows.runtime.recovery import RecoveryStore
from projection.codec import from_hash
from projection.generations import delete_matching, read_meta
from projection.keys import READY, KeySpace
from sandbox.simulator import Simulator
from sandbox.stack import free_port
from tests.conftest import processed, send_events, wait_until
from tests.reference import fold_all

pytestmark = pytest.mark.integration


def _matches(client, expected, ks):
    pipe = client.pipeline(transaction=False)
    for p in expected.values():
        pipe.hgetall(ks.position(p.sku, p.location))
    stored = [from_hash(raw) for raw in pipe.execute()]
    ok = all(s is not None and s["version"] == p.version and s["atp"] == p.atp and s["on_hand"] == p.on_hand
             and s["reserved"] == p.reserved for s, p in zip(stored, expected.values()))
    return ok and stored


def test_two_processes_share_the_work_and_survive_a_kill(settings, start, rclient, tmp_path):
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    base = settings.model_dump(exclude_none=True)
    s0 = load_settings({}, **{**base, "cluster_addresses": addresses, "process_id": 0})
    # Its own state dir, as on another machine: process 0 keeps the whole recovery store.
    s1 = load_settings({}, **{**base, "cluster_addresses": addresses, "process_id": 1,
                              "state_dir": tmp_path / "state-1", "metrics_port": free_port()})
    sim = Simulator(seed=7, skus=80, locations=4)
    items = [sim.next() for _ in range(20_000)]
    producer = EventProducer(settings)
    ks = KeySpace(settings.redis_key_prefix)

    send_events(producer, items[:8000])
    p1 = start("run", s=s1)  # the follower first: it waits for process 0's start
    time.sleep(1.0)
    assert p1.alive(), p1.tail()
    p0 = start("run", s=s0)
    first = fold_all(items[:8000])
    wait_until(lambda: _matches(rclient, first, ks), 120, "the cluster to fold the first part", p0, interval=0.5)
    done0, done1 = processed(s0), processed(s1)
    assert done0 > 0 and done1 > 0 and done0 + done1 >= 8000, (done0, done1)

    sender = threading.Thread(target=send_events, args=(producer, items[8000:], 6000))
    sender.start()
    time.sleep(1.0)
    p0.stop(signal.SIGKILL)
    p1.stop(signal.SIGKILL)
    sender.join()

    store = RecoveryStore(s0.recovery_dir)
    assert len(store.partitions()) == 2  # one per worker of the cluster, all at process 0
    assert not RecoveryStore(s1.recovery_dir).exists()

    p1b = start("run", s=s1)
    p0b = start("run", s=s0)
    expected = fold_all(items)
    stored = wait_until(lambda: _matches(rclient, expected, ks), 120, "the cluster to converge after the kill",
                        p0b, interval=0.5)
    assert p1b.alive(), p1b.tail()
    for s, p in zip(stored, expected.values()):
        for field in ("available_qty", "non_sellable", "inbound", "shortfall", "as_of"):
            assert s[field] == getattr(p, field), (p.key, field)
    # The restart resumed from a snapshot: together the two processes re-read less than everything.
    again = processed(s0) + processed(s1)
    assert 0 < again < len(items), again

    # Redis loses the keyspace: both processes restart from the snapshot and re-publish their keys;
    # process 0 marks the keyspace ready once the statuses of both say nothing is left.
    assert delete_matching(rclient, f"{settings.redis_key_prefix}:*") > 0
    wait_until(lambda: (read_meta(rclient, ks) or {}).get("state") == READY and _matches(rclient, expected, ks),
               120, "the re-published keyspace to be ready and complete", p0b, interval=0.5)
    assert p1b.alive(), p1b.tail()
    assert "re-publishing every position" in p0b.tail(20_000)

    # A process stopped alone leaves the cluster after its grace; the other one stops with a message.
    assert p1b.stop(signal.SIGTERM) == 0
    p0b.p.wait(40)
    assert p0b.p.returncode == 2 and "all of them stop" in p0b.tail(), p0b.tail()
