"""Reading the recovery store while Bytewax writes it, in the same process, must not kill the process.

Bytewax carries its own SQLite; Python's is another copy, and closing a Python connection dropped
Bytewax's POSIX locks on the partition: the next read truncated the WAL index under Bytewax's
mapping and the process died of SIGBUS (dataflows/runtime/storeread.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from sandbox.child import ROOT

COUNT = 400_000

# A flow whose snapshots land every few milliseconds, and, in a thread of the same process, the reads
# the crash-loop guard and the restart watch make while the dataflow runs.
READ_WHILE_RUNNING = """
import json, sys, threading, time
from datetime import timedelta
from pathlib import Path
import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main
from bytewax.testing import TestingSource
from dataflows.runtime.recovery import RecoveryStore

directory, count = Path(sys.argv[1]), int(sys.argv[2])
store = RecoveryStore(directory)
store.create(1)
flow = Dataflow("atp")
keyed = op.key_on("key", op.input("kafka_in", flow, TestingSource(range(count), batch_size=50)), lambda x: str(x % 50))
op.inspect("drop", op.stateful_map("atp_fold", keyed, lambda state, x: ((state or 0) + x, x)), lambda *_: None)
seen, done = [], threading.Event()
def reader():
    while not done.is_set():
        seen.append(store.committed_offsets()[1].get("iterable", 0))
        time.sleep(0.01)
thread = threading.Thread(target=reader, daemon=True)
thread.start()
cli_main(flow, epoch_interval=timedelta(milliseconds=5),
         recovery_config=RecoveryConfig(str(directory), backup_interval=timedelta(0)))
done.set()
thread.join()
print(json.dumps({"during": seen, "after": store.committed_offsets()[1], "keys": store.state_keys("atp.atp_fold.stateful_flat_map.stateful.stateful_batch")}))
"""


def test_reading_the_committed_offsets_while_bytewax_writes_them_is_safe(tmp_path):
    run = subprocess.run([sys.executable, "-c", READ_WHILE_RUNNING, str(tmp_path / "recovery"), str(COUNT)],
                         cwd=ROOT, capture_output=True, timeout=300, check=False)
    assert run.returncode != -signal.SIGBUS, "the process died of SIGBUS while reading the recovery store"
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-3000:]
    out = json.loads(run.stdout.decode().strip().splitlines()[-1])
    during = out["during"]
    assert len(during) >= 3, during  # the reads overlapped the run
    assert during == sorted(during), during  # committed offsets only move forward
    assert out["after"] == {"iterable": COUNT}
    assert out["keys"] == 50


def test_a_damaged_partition_says_so_and_a_failed_read_does_not_advise_a_reset(tmp_path):
    from dataflows.runtime.recovery import RecoveryError, RecoveryStore
    from dataflows.runtime.storeread import read

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "part-0.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(RecoveryError, match=r"is damaged \(DatabaseError: file is not a database\).*atp reset"):
        RecoveryStore(damaged).committed_offsets()
    with pytest.raises(RecoveryError, match="cannot read the recovery store") as failed:
        read(tmp_path, "atp.kafka_in", "everything")
    assert "atp reset" not in str(failed.value)
    assert RecoveryStore(tmp_path / "none").committed_offsets() == (0, {})
