"""The embedded stack: clear errors on busy ports, and `down` stops only what it started."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from core.config import load_settings
from core.errors import StackError
from sandbox.stack import Stack, free_port

pytestmark = pytest.mark.integration


def test_a_busy_port_is_named_in_the_error(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        s = load_settings({}, state_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{busy}",
                          redis_url=f"redis://127.0.0.1:{free_port()}/0")
        with pytest.raises(StackError, match=f"port {busy} on 127.0.0.1 is already in use"):
            Stack(s).up()
    assert Stack(s).status() == {"broker": None, "redis": None, "dataflow": None, "api": None}


def test_the_stack_refuses_non_loopback_addresses(tmp_path):
    s = load_settings({}, state_dir=tmp_path, kafka_bootstrap="kafka.example:9092")
    with pytest.raises(StackError, match="not on loopback"):
        Stack(s).up()


def test_down_stops_only_recorded_processes(stack_settings, tmp_path):
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other = Stack(load_settings({}, state_dir=tmp_path))
        other.pid_dir.mkdir(parents=True)
        # A record whose PID now belongs to a different program is stale, not a target.
        (other.pid_dir / "redis.json").write_text(f'{{"pid": {stranger.pid}, "exe": "/usr/bin/redis-server"}}')
        assert other.pid("redis") is None
        assert other.down() == []
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
    status = Stack(stack_settings).status()
    assert status["broker"] and status["redis"]  # the session's stack is untouched
