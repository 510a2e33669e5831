"""A planned stop or restart of the dataflow (SIGTERM, a Redis loss) prints no Rust panic backtrace,
even under RUST_BACKTRACE=1; a real crash afterwards, in the same process, still prints one (real
broker, real Redis, the real `atp run` path)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from core.config import child_environ
from dataflows.kafka.producer import EventProducer
from projection.keys import KeySpace
from sandbox.child import ROOT
from tests.builders import wms
from tests.conftest import processed, send_events, wait_until

pytestmark = pytest.mark.integration

PANIC = ("panicked at", "stack backtrace:")

# `atp run` with the fold raising an exception no step catches on the event "poison": a real crash.
POISONED_RUN = """
import faulthandler
faulthandler.enable()
import dataflows.logic as logic
class Poisoned(BaseException):
    pass
_apply = logic.PositionLogic.on_batch
def on_batch(self, values):
    if any(getattr(v, "event_id", None) == "poison" for v in values):
        raise Poisoned("a bug nobody imagined")
    return _apply(self, values)
logic.PositionLogic.on_batch = on_batch
from core import logs
from core.config import load_settings
from dataflows.runtime.run import run
logs.setup()
run(load_settings())
"""


def test_sigterm_stops_the_dataflow_without_a_panic_backtrace(settings, start, monkeypatch):
    monkeypatch.setenv("RUST_BACKTRACE", "1")  # the child inherits it: Rust would print every frame
    send_events(EventProducer(settings), [wms("RECEIPT", qty=3)])
    flow = start("run")
    wait_until(lambda: processed(settings) >= 1, 60, "one event processed", flow)
    assert flow.stop(signal.SIGTERM) == 0, flow.tail()
    log = flow.tail(100_000)
    assert "dataflow stopped by SIGTERM" in log
    assert not [p for p in PANIC if p in log], log


def test_a_restart_after_a_redis_loss_is_quiet_and_a_real_crash_after_it_still_shows_its_backtrace(
        settings, rclient, tmp_path):
    producer = EventProducer(settings)
    send_events(producer, [wms("RECEIPT", qty=3, t=i) for i in range(5)])
    log = tmp_path / "run.log"
    with log.open("ab") as fh:
        p = subprocess.Popen([sys.executable, "-c", POISONED_RUN], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                             env={**child_environ(settings, os.environ), "RUST_BACKTRACE": "1"})
    try:
        def alive_and(check):
            assert p.poll() is None, f"the dataflow exited {p.returncode}:\n{log.read_text()[-3000:]}"
            return check()

        wait_until(lambda: alive_and(lambda: processed(settings) >= 5), 60, "five events processed")
        ks = KeySpace(settings.redis_key_prefix)
        assert sum(rclient.delete(k) for k in rclient.scan_iter(match=f"{ks.prefix}:*")) > 0  # Redis lost it
        wait_until(lambda: alive_and(lambda: "re-published" in log.read_text()), 60, "the planned restart")
        restarted = log.read_text()
        assert "was lost" in restarted and not [x for x in PANIC if x in restarted], restarted

        send_events(producer, [wms("RECEIPT", qty=1, event_id="poison")])
        assert p.wait(60) != 0
        crashed = log.read_text()
        assert "a bug nobody imagined" in crashed and "Traceback" in crashed
        assert all(x in crashed for x in PANIC), crashed  # the real crash keeps Rust's backtrace too
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
