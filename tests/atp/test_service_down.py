"""Every command that needs the broker or Redis ends, with that service down, within seconds: one line
that names the service, its address (password hidden) and what to do, exit code 2, never a traceback.

The other service stays up (the session's real broker and redis-server); the one that is "down" is a
free loopback port where nothing listens."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sandbox.stack import free_port
from tests.builders import wms
from tests.conftest import run_atp

pytestmark = pytest.mark.integration

HANG_GUARD_S = 30  # not a speed figure: a command that waits out a 30 s timeout, or hangs, fails
SECRET = "pw-not-for-output"


def run_all(s, commands):
    """Each command's (exit code, stdout + stderr, seconds), three at a time (most of each is waiting)."""

    def one(args):
        started = time.monotonic()
        out = run_atp(s, *args, timeout=120)
        return out.returncode, out.stdout + out.stderr, time.monotonic() - started

    with ThreadPoolExecutor(3) as pool:
        return dict(zip(commands, pool.map(one, commands)))


def check(results, says, *, code=2):
    failures = []
    for args, (rc, text, seconds) in results.items():
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        why = []
        if rc != code:
            why.append(f"exit {rc}")
        if code == 2 and (len(errors) != 1 or not all(part in errors[0] for part in says)):
            why.append(f"no one line with {says}")
        if "Traceback" in text or SECRET in text:
            why.append("a traceback or the password")
        if seconds > HANG_GUARD_S:
            why.append(f"{seconds:.0f} s")
        if why:
            failures.append(f"atp {' '.join(args)}: {', '.join(why)}\n{text[-2000:]}")
    assert not failures, "\n\n".join(failures)


def test_commands_that_need_the_broker_fail_cleanly_when_it_is_down(settings, tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"topic": "wms", "event": wms("RECEIPT", qty=3)[1]}) + "\n")
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"topic": "wms", "key": None, "value_hex": "00"}) + "\n")
    port = free_port()
    down = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
    commands = [("dlq", "list"), ("dlq", "show", f"{settings.topic_wms}:0:0"), ("dlq", "redrive", "--dry-run"),
                ("topics", "create"), ("produce", str(events)), ("produce", "--raw", str(raw)),
                ("safety-stock", "DC-01", "--units", "3"), ("replay", "r1", "--dry-run", "--metrics-port", "0"),
                ("run",)]
    check(run_all(down, commands), [f"Kafka at 127.0.0.1:{port}", "ATP_KAFKA_BOOTSTRAP", "atp stack up"])


def test_commands_that_need_redis_fail_cleanly_when_it_is_down(settings, tmp_path):
    port = free_port()
    down = settings.model_copy(update={"redis_url": f"redis://:{SECRET}@127.0.0.1:{port}/0"})
    created = run_atp(down, "keys", "create", "shop", "--scope", "availability:read")
    assert created.returncode == 0, created.stderr
    commands = [("generation", "list"), ("generation", "drop", "r1", "--yes"), ("replay", "r1", "--dry-run"),
                ("reset", "--yes"), ("run",)]
    check(run_all(down, commands), [f"Redis at redis://:***@127.0.0.1:{port}/0", "ATP_REDIS_URL", "atp stack up"])
    listed = run_all(down, [("keys", "list")])
    check(listed, [], code=0)
    text = listed[("keys", "list")][1]
    assert "shop  scopes=availability:read" in text and "Redis unreachable" in text
