"""The statuses the processes of a cluster exchange through Redis (a real redis-server)."""

from __future__ import annotations

import time

import redis

from core.config import load_settings
from dataflows.runtime.cluster import Board, Status
from dataflows.runtime.continuity import follow_start, write_meta
from projection.generations import Spec
from projection.keys import REBUILDING, keyspace_of


def _boards(settings, n=2):
    addresses = ";".join(f"127.0.0.1:{7000 + i}" for i in range(n))
    return [Board(redis.Redis.from_url(settings.redis_url),
                  load_settings({}, **{**settings.model_dump(exclude_none=True),
                                       "cluster_addresses": addresses, "process_id": i})) for i in range(n)]


def test_a_republish_is_complete_when_every_process_says_so(settings):
    b0, b1 = _boards(settings)
    b0.clear()
    b0.publish(Status(built=30, pending=0))
    assert not b0.republished(50)  # process 1 has not reported
    b1.publish(Status(built=20, pending=3))
    assert not b0.republished(50)  # ... and still has keys to write
    b1.publish(Status(built=20, pending=0))
    assert b0.republished(50)
    b0.clear()
    assert not b0.republished(50)  # a new start voids what earlier starts reported


def test_a_peer_whose_status_stops_changing_is_silent(settings):
    b0, b1 = _boards(settings)
    b0.clear()
    b1.publish(Status())
    b0.read()
    assert b0.silent(0.2) == []
    time.sleep(0.3)
    b0.read()
    assert b0.silent(0.2) == [1]
    b1.publish(Status())  # a new beat
    b0.read()
    assert b0.silent(0.2) == []
    time.sleep(0.3)
    b0.forget()  # Redis was unreachable: nobody could write, so nobody is judged on that time
    b0.read()
    assert b0.silent(0.2) == []


def test_a_follower_waits_for_process_0s_meta_and_takes_its_decisions(settings, rclient):
    s1 = load_settings({}, **{**settings.model_dump(exclude_none=True),
                              "cluster_addresses": "127.0.0.1:7000;127.0.0.1:7001", "process_id": 1})
    naps = []

    def sleep(s):
        naps.append(s)
        if len(naps) == 3:
            write_meta(rclient, keyspace_of(s1), "run-1", REBUILDING, Spec(s1.generation, formula_version=2))

    plan = follow_start(s1, rclient, interval_s=0.01, sleep=sleep)
    assert len(naps) == 3
    assert (plan.run_id, plan.republish, plan.spec.formula_version) == ("run-1", True, 2)
