"""Redis refusing writes (a failover to a read-only replica, maxmemory, a failed RDB save, an ACL
change) is an outage of Redis, not an error of a record.

The defect: only connection errors and timeouts were retried; a ``READONLY`` or ``OOM`` answer
escaped the sink, stopped the flow, and counted as a crash of the records being read, so after
``ATP_CRASH_LOOP_RESTARTS`` such stops innocent records went to the dead-letter topic.
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest
import redis

from dataflows.redis_sink import RedisPositionSink
from dataflows.runtime.crashguard import is_infrastructure
from projection.keys import KeySpace
from sandbox.stack import free_port
from state.position import Position
from tests.builders import T0

pytestmark = pytest.mark.integration


@pytest.fixture
def own_redis(tmp_path):
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0", client
    client.close()
    proc.terminate()
    proc.wait(10)


def position(version: int) -> Position:
    return Position("SKU-1", "DC-01", 5, 5, 5, 0, 0, 0, 0, 0, version, T0, T0)


def test_a_read_only_redis_is_waited_for_not_a_crash(own_redis):
    url, client = own_redis
    part = RedisPositionSink(url, KeySpace("t"), retry_for_s=30).build("redis", 0, 1)
    part.write_batch([position(1)])
    client.replicaof("127.0.0.1", free_port())  # a failover made this node a replica: READONLY
    threading.Timer(1.0, client.replicaof, args=("NO", "ONE")).start()  # ...and it is promoted again
    part.write_batch([position(2)])  # waits, then writes
    assert client.hget(KeySpace("t").position("SKU-1", "DC-01"), "version") == b"2"


def test_a_redis_that_keeps_refusing_stops_the_flow_as_infrastructure(own_redis):
    url, client = own_redis
    part = RedisPositionSink(url, KeySpace("t"), retry_for_s=1).build("redis", 0, 1)
    client.config_set("maxmemory", 1)  # every write: OOM command not allowed
    with pytest.raises(Exception) as err:
        part.write_batch([position(1)])
    assert is_infrastructure(err.value), err.value  # not counted as a crash of the records read


@pytest.mark.parametrize("exc", [redis.exceptions.ReadOnlyError("READONLY"),
                                 redis.exceptions.ResponseError("OOM command not allowed"),
                                 redis.exceptions.AuthenticationError("invalid password")])
def test_every_redis_error_is_infrastructure(exc):
    assert is_infrastructure(exc)


def test_a_corrupt_key_is_named_not_waited_for_as_an_outage(own_redis):
    """Redis refusing one key (another type there) does not pass by waiting: the sink says which
    repair is needed at once, and it is still not a crash of the records being read."""
    url, client = own_redis
    ks = KeySpace("t")
    client.set(ks.position("SKU-1", "DC-01"), "not a hash")
    part = RedisPositionSink(url, ks, retry_for_s=60).build("redis", 0, 1)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="corrupt; delete it") as err:
        part.write_batch([position(1)])
    assert time.monotonic() - started < 10  # not the 60 s an outage is waited for
    assert is_infrastructure(err.value)
