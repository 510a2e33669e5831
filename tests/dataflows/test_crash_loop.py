"""A record that aborts the process is quarantined after ATP_CRASH_LOOP_RESTARTS crashes at the same
input position, and the stream moves past it (real broker, real Redis, the real `atp run` path)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.config import child_environ, load_settings
from dataflows.kafka.producer import EventProducer
from dataflows.runtime import deadletters as dlq
from dataflows.runtime.continuity import beat
from projection.generations import read_meta, write_meta
from projection.keys import READY, KeySpace, keyspace_of
from sandbox.child import ROOT
from tests.builders import wms
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

# `atp run`, with the fold crashing the process on one event: os.abort() (no Python exception, no
# cleanup) or a BaseException no step catches (CRASH=base).
CRASHING_RUN = """
import os, resource
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
import dataflows.logic as logic
class Poisoned(BaseException):
    pass
_apply = logic.PositionLogic.on_batch
def on_batch(self, values):
    if any(getattr(v, "event_id", None) == "poison" for v in values):
        if os.environ.get("CRASH") == "base":
            raise Poisoned("a bug nobody imagined")
        os.abort()
    return _apply(self, values)
logic.PositionLogic.on_batch = on_batch
from core import logs
from core.config import load_settings
from dataflows.runtime.run import run
logs.setup()
run(load_settings())
"""


class Supervised:
    """Restarts the crashing dataflow whenever it exits, as `restart: unless-stopped` does."""

    def __init__(self, settings, log: Path, crash: str) -> None:
        self.settings, self.log, self.crash = settings, log, crash
        self.p: subprocess.Popen[bytes] | None = None
        self.exits: list[int] = []

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.p = subprocess.Popen([sys.executable, "-c", CRASHING_RUN], cwd=ROOT, stdout=fh,
                                      stderr=subprocess.STDOUT,
                                      env={**child_environ(self.settings, os.environ), "CRASH": self.crash})

    def keep_up(self) -> None:
        assert self.p is not None
        code = self.p.poll()
        if code is not None:
            self.exits.append(code)
            assert len(self.exits) <= 6, f"still crashing after {self.exits}:\n{self.tail()}"
            self.start()

    def stop(self) -> int | None:
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode if self.p is not None else None

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]


@pytest.mark.parametrize("crash, restarts, ahead", [("abort", 2, 8), ("base", 3, 400)])
def test_a_crashing_record_is_quarantined_and_the_stream_moves_on(settings, rclient, tmp_path, crash, restarts, ahead):
    """``ahead`` records before the poison (over every partition) are in flight with it when the
    careful run reads one at a time: the note must still name the poison, not a neighbour."""
    s = load_settings({}, **{**settings.model_dump(exclude_none=True), "crash_loop_restarts": restarts})
    producer = EventProducer(s)
    before = [wms("RECEIPT", sku=f"SKU-B{i}", qty=10 + i, event_id=f"before-{i}") for i in range(ahead)]
    poison = wms("RECEIPT", sku="SKU-P", qty=1, event_id="poison")
    after = [wms("RECEIPT", sku=f"SKU-A{i}", qty=20 + i, event_id=f"after-{i}") for i in range(8)]
    for alias, rec in [*before, poison, *after]:
        producer.send(alias, rec)
    assert producer.flush() == 0
    ks = KeySpace(s.redis_key_prefix)

    flow = Supervised(s, tmp_path / "run.log", crash)
    started = time.monotonic()
    flow.start()
    try:
        def past_the_poison():
            flow.keep_up()
            stored = [rclient.hget(ks.position(rec["sku"], "DC-01"), "available_qty") for _, rec in before + after]
            return all(v is not None for v in stored) and stored

        stored = wait_until(past_the_poison, 120, "every record but the poison in Redis", interval=0.2)
        took = time.monotonic() - started
        assert stored == [str(rec["qty"]).encode() for _, rec in before + after]
        assert rclient.exists(ks.position("SKU-P", "DC-01")) == 0  # never applied

        dead = wait_until(lambda: dlq.read_dead_letters(s) or None, 30, "the quarantined record")
        assert [e.reason for e in dead.values()] == ["crash_loop"], dead
        entry = next(iter(dead.values()))
        assert entry.topic == s.topic_wms and entry.error_class == "CrashLoop"
        assert entry.headers["atp.error.reason"] == "crash_loop"
        assert b"poison" in (entry.value or b"")
        # ``restarts`` crashes (the last one in careful mode), then past it
        assert flow.exits == [-signal.SIGABRT if crash == "abort" else 1] * restarts, flow.exits

        metrics = httpx.get(f"http://{s.metrics_host}:{s.metrics_port}/metrics", timeout=5).text
        assert 'atp_dead_letter_total{reason="crash_loop"} 1.0' in metrics
        meta = wait_until(lambda: (m := rclient.hgetall(ks.meta)).get(b"flow") == b"running" and m,
                          30, "flow=running once past the crash position")
        beat = int(meta[b"heartbeat"])
        wait_until(lambda: int(rclient.hget(ks.meta, "heartbeat")) > beat, 5, "a newer heartbeat")
        log = flow.tail(200_000)
        assert "careful mode" in log and f"quarantined {entry.source}" in log
        print(f"{crash}: {len(flow.exits)} crashes, quarantined {entry.source} and past it after {took:.1f} s")
    finally:
        code = flow.stop()
    assert code == 0
    assert rclient.hget(ks.meta, "flow") == b"stopped"


def test_the_heartbeat_never_recreates_a_lost_meta(settings, rclient):
    """A lost meta is how the dataflow and the API see a lost keyspace: a heartbeat must not bring it back."""
    ks = keyspace_of(settings)
    assert beat(rclient, ks, "running") is False
    assert rclient.exists(ks.meta) == 0
    write_meta(rclient, ks, "run-1", READY)
    assert beat(rclient, ks, "crash_loop") is True
    meta = read_meta(rclient, ks)
    assert meta["run_id"] == "run-1" and meta["state"] == READY and meta["flow"] == "crash_loop"
    assert abs(int(meta["heartbeat"]) - time.time() * 1000) < 5000
