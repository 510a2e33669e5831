"""The skip list (`atp dlq skip`, crash-loop quarantine) and the crash ledger, without a broker."""

from __future__ import annotations

import faulthandler
import json
import sys
import time

import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from atp.cli import app
from core.config import load_settings
from dataflows import metrics
from dataflows.decode import DecodeStep
from dataflows.kafka.careful import CAREFUL
from dataflows.kafka.output import DeadLetterMessage
from dataflows.runtime.crashguard import (
    FATAL_FILE,
    LEDGER_FILE,
    NOTE_FILE,
    CrashGuard,
    Ledger,
    release_fatal_file,
    unread,
)
from dataflows.runtime.storeread import RecoveryError
from dataflows.skiplist import CRASH_LOOP, SKIP_FILE, SKIPPED, Skip, SkipList, add_skip, read_skips
from schemas import Decoder, Encoder, default_store
from state.events import kafka_key
from tests.builders import wms

SETTINGS = load_settings({})
WMS = SETTINGS.topic_wms


def message(offset: int, event_id: str) -> KafkaSourceMessage:
    _, rec = wms("RECEIPT", qty=3, event_id=event_id)
    return KafkaSourceMessage(key=kafka_key(rec["sku"], rec["location"]).encode(),
                              value=Encoder(default_store()).encode("WarehouseEvent", rec),
                              topic=WMS, partition=1, offset=offset, headers=[("trace", b"abc")])


def decode(skip: SkipList, batch: list) -> list:
    return DecodeStep(Decoder(default_store()), SETTINGS.input_topics, skip=skip)(batch)


def test_a_listed_offset_is_dead_lettered_unread_and_the_rest_decode():
    skip = SkipList({(WMS, 1, 7): Skip(SKIPPED, "skipped by an operator (atp dlq skip)"),
                     (WMS, 1, 9): Skip(CRASH_LOOP, "crash loop: quarantined")})
    before = metrics.DEAD_LETTER.labels(SKIPPED)._value.get()
    out = decode(skip, [message(6, "a"), message(7, "b"), message(8, "c"), message(9, "d")])
    dead = [o for o in out if not isinstance(o, tuple)]
    assert [(d.msg.offset, d.reason, d.error_class) for d in dead] == [(7, SKIPPED, "Skipped"), (9, CRASH_LOOP, "CrashLoop")]
    assert [e.event_id for _, e in (o for o in out if isinstance(o, tuple))] == ["a", "c"]
    assert metrics.DEAD_LETTER.labels(SKIPPED)._value.get() == before + 1
    # The dead letter carries the original bytes and the usual headers.
    sent = DeadLetterMessage("dlq")(dead[1])
    headers = dict(sent.headers)
    assert sent.value == message(9, "d").value and headers["trace"] == b"abc"
    assert headers["atp.error.reason"] == b"crash_loop" and headers["atp.source.offset"] == b"9"


def test_an_empty_skip_list_changes_nothing():
    batch = [message(6, "a"), message(7, "b")]
    assert [e.event_id for _, e in decode(SkipList(), batch)] == ["a", "b"]


def test_the_skip_file_is_reloaded_when_it_changes(tmp_path):
    path = tmp_path / SKIP_FILE
    skip = SkipList()
    skip.load(path)
    assert not skip
    assert add_skip(path, (WMS, 1, 7), SKIPPED, "by hand")
    assert not add_skip(path, (WMS, 1, 7), CRASH_LOOP, "again")  # the first entry is kept
    skip.refresh()
    assert skip.entries == {(WMS, 1, 7): read_skips(path)[f"{WMS}:1:7"]}
    assert skip.entries[(WMS, 1, 7)].reason == SKIPPED


def run_cli(monkeypatch, tmp_path, *args):
    monkeypatch.setenv("ATP_STATE_DIR", str(tmp_path))
    return CliRunner().invoke(app, ["dlq", "skip", *args])


@pytest.mark.parametrize("arg, says", [
    ("nope", "is not topic:partition:offset"),
    (f"{WMS}:x:5", "is not topic:partition:offset"),
    (f"{WMS}:1:-5", "is not topic:partition:offset"),
    (f"{WMS}:1", "is not topic:partition:offset"),
    ("some.other.topic:0:5", "is not an input topic"),
])
def test_dlq_skip_refuses_a_bad_argument_in_one_line(monkeypatch, tmp_path, arg, says):
    result = run_cli(monkeypatch, tmp_path, arg)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], result.output
    assert not (tmp_path / SKIP_FILE).exists()


def test_dlq_skip_lists_the_offset_once(monkeypatch, tmp_path):
    result = run_cli(monkeypatch, tmp_path, f"{WMS}:2:41")
    assert result.exit_code == 0 and f"skipping {WMS}:2:41" in result.output, result.output
    assert {k: v.reason for k, v in read_skips(tmp_path / SKIP_FILE).items()} == {f"{WMS}:2:41": SKIPPED}
    again = run_cli(monkeypatch, tmp_path, f"{WMS}:2:41")
    assert again.exit_code == 0 and "already on the skip list" in again.output


# ---- the crash ledger ----------------------------------------------------------------------------

class Store:
    """Committed offsets as the recovery store would report them."""

    def __init__(self) -> None:
        self.committed: dict[str, int] = {f"0-{WMS}": 10, f"1-{WMS}": -2}


def guard(tmp_path, store: Store, restarts: int = 3) -> CrashGuard:
    return CrashGuard(tmp_path / "gen", tmp_path / SKIP_FILE, restarts, committed=lambda: dict(store.committed),
                      unread=lambda resume: unread(resume, {f"0-{WMS}": 20, f"1-{WMS}": 0}, {}))


@pytest.fixture(autouse=True)
def _faulthandler_back_to_stderr():
    """The guard points faulthandler at its file; give it back to the test run's stderr after."""
    yield
    release_fatal_file()
    faulthandler.enable(file=sys.__stderr__, all_threads=True)


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def crash_then_start(tmp_path, store: Store, how: str = "fatal") -> CrashGuard:
    """A run that died without cleaning up (its marker stays) of a fatal signal that faulthandler
    wrote down (``fatal``), or killed from outside (``killed``: nothing written), then the next start."""
    fatal = tmp_path / "gen" / FATAL_FILE
    if how == "fatal" and fatal.parent.exists():
        fatal.write_text("Fatal Python error: Aborted\n")
    g = guard(tmp_path, store)
    g.begin()
    return g


def test_a_run_killed_from_outside_is_not_a_crash(tmp_path):
    """Two quick kill -9 at one position (the chaos run does that) are not a crash loop: the
    next start reads normally. A fatal signal written down by faulthandler is one."""
    store = Store()
    crash_then_start(tmp_path, store)
    for _ in range(3):
        g = crash_then_start(tmp_path, store, how="killed")
        assert not g.recovering and not g.careful
    g = crash_then_start(tmp_path, store, how="fatal")
    assert g.recovering and Ledger.load(tmp_path / "gen" / LEDGER_FILE).crashes == 1
    assert (tmp_path / "gen" / FATAL_FILE).read_text() == ""  # emptied for this run


def test_crashes_at_one_position_turn_careful_then_pin_the_noted_record(tmp_path):
    store = Store()
    try:
        g = crash_then_start(tmp_path, store)  # the first start: nothing to count
        assert not g.recovering and not g.careful and g.flow == "running"
        g = crash_then_start(tmp_path, store)
        assert g.recovering and not g.careful and g.flow == "crash_loop"
        assert _gauge("atp_dataflow_crashes") == 1 and _gauge("atp_dataflow_careful_mode") == 0
        g = crash_then_start(tmp_path, store)
        assert g.careful and CAREFUL.on  # 2 crashes: the third run reads one record at a time
        assert _gauge("atp_dataflow_crashes") == 2 and _gauge("atp_dataflow_careful_mode") == 1
        ledger = Ledger.load(tmp_path / "gen" / LEDGER_FILE)
        assert ledger.crashes == 2 and ledger.until == {f"0-{WMS}": 20}  # partition 1 is empty
        # The careful run notes a record, then crashes on it.
        note = json.dumps([WMS, 0, 13, int(time.time() * 1000)]).encode().ljust(512)
        (tmp_path / "gen" / NOTE_FILE).write_bytes(note)
        g = crash_then_start(tmp_path, store)
        assert {k: v.reason for k, v in read_skips(tmp_path / SKIP_FILE).items()} == {f"{WMS}:0:13": CRASH_LOOP}
        assert g.careful  # until the pinned record is committed
        store.committed[f"0-{WMS}"] = 14
        g.tick()
        assert not g.recovering and not g.careful and not CAREFUL.on and g.flow == "running"
        assert _gauge("atp_dataflow_crashes") == 0 and _gauge("atp_dataflow_careful_mode") == 0
        g.end()
        g = guard(tmp_path, store)
        g.begin()
        assert not g.recovering  # a clean end counts nothing
    finally:
        CAREFUL.arm(False)


def test_a_failed_read_of_the_store_keeps_the_careful_run_alive_and_careful(tmp_path):
    """The committed offsets are read in a child process; when that read fails, the tick still keeps
    the careful run's sign of life (else its next crash would not be pinned) and ends nothing."""
    store = Store()
    for _ in range(3):
        g = crash_then_start(tmp_path, store)
    assert g.careful
    led = tmp_path / "gen" / LEDGER_FILE
    before = Ledger.load(led).running["alive_ms"]

    def unreadable() -> dict[str, int]:
        raise RecoveryError("cannot read the recovery store (exit code -9)")

    g._committed = unreadable
    time.sleep(0.01)
    try:
        g.tick()
        assert g.careful and g.recovering
        assert Ledger.load(led).running["alive_ms"] > before
    finally:
        CAREFUL.arm(False)


def test_progress_or_an_infrastructure_error_is_not_a_crash_loop(tmp_path):
    store = Store()
    g = crash_then_start(tmp_path, store)
    g = crash_then_start(tmp_path, store)
    assert Ledger.load(tmp_path / "gen" / LEDGER_FILE).crashes == 1
    store.committed[f"0-{WMS}"] = 12  # a snapshot moved on before the next crash: the count starts again
    g = crash_then_start(tmp_path, store)
    assert Ledger.load(tmp_path / "gen" / LEDGER_FILE).crashes == 1 and not g.careful
    try:
        raise RuntimeError("write_batch failed") from RuntimeError("Redis unreachable for 120 s (Connection refused)")
    except RuntimeError as exc:
        assert g.crashed(exc) is False
    g = guard(tmp_path, store)
    g.begin()
    assert Ledger.load(tmp_path / "gen" / LEDGER_FILE).crashes == 1  # not counted
    assert g.crashed(BaseException("a bug")) is True and g.flow == "crash_loop"


def test_a_careful_crash_long_after_its_last_record_pins_nothing(tmp_path):
    store = Store()
    try:
        for _ in range(3):
            g = crash_then_start(tmp_path, store)
        assert g.careful
        old = int(time.time() * 1000) - 60_000  # noted a minute before the process was last seen alive
        (tmp_path / "gen" / NOTE_FILE).write_bytes(json.dumps([WMS, 0, 13, old]).encode())
        crash_then_start(tmp_path, store)
        assert read_skips(tmp_path / SKIP_FILE) == {}
    finally:
        CAREFUL.arm(False)
