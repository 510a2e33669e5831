"""The pipeline's watermark: every input event logged before it is reflected in the keyspace.

The rule (docs/http-api.md, "Freshness"): for each input partition, take the offset the decode step
had read one tick (``INTERVAL_S``) earlier (``atp_input_offset``; a record read reaches Redis within
the same worker step, well inside a tick), or where the run resumed for a partition not read since.
A partition read to its end counts as read up to the moment its end was read; any other one, up to
the log time of the oldest record not yet read (the record at that offset, or the first one
retention kept: nothing logged before it is missing, as long as a partition's log times do not go
back, which holds for LogAppendTime topics and for producers whose clocks agree; a producer that
writes older timestamps after newer ones makes the watermark early by that much). The watermark is
the minimum over every partition of every input topic. Process 0 works it out every ``INTERVAL_S``
and writes it, in epoch ms, into the keyspace's meta (``watermark``), where every API answer reads
it in the round trip it already makes; ``atp_watermark_lag_seconds`` is now minus it.

Bytewax's recovery store is read once, before the flow starts (in a child process:
``dataflows.runtime.storeread`` says why). Without a recovery store
(``ATP_RECOVERY=false``) or with several processes (cluster mode: process 0 sees only its own
partitions move) there is no watermark, and answers say so (null).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import Gauge

from core.config import Settings
from core.kafka_config import client_config
from dataflows.kafka import poll
from dataflows.kafka.admin import end_offsets, low_offsets
from dataflows.runtime.continuity import read_offsets
from projection.keys import KeySpace

log = logging.getLogger(__name__)

INTERVAL_S = 2.0
WATERMARK_LAG = Gauge("atp_watermark_lag_seconds",
                      "Now minus the pipeline watermark: every input event logged before it is in Redis.")
_SET_IF_META = "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], unpack(ARGV)) end return -1"

LogTime = Callable[[str, int, int], int | None]  # (topic, partition, offset) -> that record's log time (ms)


def watermark(committed: dict[str, int], ends: dict[str, int], log_time: LogTime, now_ms: int,
              lows: dict[str, int] | None = None) -> int | None:
    """The rule above, for ``{index}-{topic}`` -> offset maps; None when a partition's time is unknown.
    ``lows``: each partition's first retained offset (records before it were deleted by retention)."""
    out = now_ms
    for part, end in ends.items():
        index, _, topic = part.partition("-")
        # Bytewax keeps OFFSET_BEGINNING (-2) for a partition never read; retention may have deleted
        # the records before the low offset, so the oldest one not yet reflected is at least there.
        at = max(committed.get(part, 0), 0, (lows or {}).get(part, 0))
        if at >= end:
            continue  # read to its end just now
        t = log_time(topic, int(index), at)
        if t is None:
            return None
        out = min(out, t)
    return out


class LogTimes:
    """The log time of the record at an offset, read with one consumer and remembered per offset."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = Consumer(client_config(settings, {"group.id": "atp-watermark", "enable.auto.commit": False,
                                                           "enable.partition.eof": True,
                                                           "auto.offset.reset": "earliest"}))
        self._known: dict[tuple[str, int, int], int] = {}

    def __call__(self, topic: str, partition: int, offset: int) -> int | None:
        key = (topic, partition, offset)
        if key not in self._known:
            self._consumer.assign([TopicPartition(topic, partition, offset)])
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                msg = poll(self._consumer, 0.5)
                if msg is None or msg.error() is not None:
                    continue
                if (msg.topic(), msg.partition()) == (topic, partition):
                    _, ts = msg.timestamp()
                    self._known = {k: v for k, v in self._known.items() if k[:2] != (topic, partition)}
                    self._known[key] = ts
                    break
            else:
                return None
        return self._known[key]

    def close(self) -> None:
        self._consumer.close()


class WatermarkWriter(threading.Thread):
    """Works the watermark out every ``interval_s`` and writes it into the keyspace's meta."""

    def __init__(self, settings: Settings, client: redis.Redis, keyspace: KeySpace, resumed: dict[str, int],
                 interval_s: float = INTERVAL_S) -> None:
        """``resumed``: where the run resumes (``resumed_offsets``, read before Bytewax starts; see ``tick``)."""
        super().__init__(name="atp-watermark", daemon=True)
        self._settings, self._client, self._ks = settings, client, keyspace
        self._resumed = resumed
        self._before: dict[str, int] = self._resumed  # the offsets read one tick ago
        self._interval = interval_s
        self.stopped = threading.Event()
        self._last: int | None = None

    def run(self) -> None:
        times: LogTimes | None = None
        said: set[str] = set()
        while not self.stopped.wait(self._interval):
            try:
                times = times or LogTimes(self._settings)
                self.tick(times)
            except Exception as exc:  # noqa: BLE001 - the next round tries again; said once per kind of failure
                kind = type(exc).__name__
                if kind not in said:
                    said.add(kind)
                    log.warning("the pipeline watermark was not updated (%s: %s); retrying every %g s",
                                kind, exc, self._interval)
        if times is not None:
            times.close()

    def latest(self) -> int | None:
        """The last watermark worked out (epoch ms), for the availability feed; None before the first."""
        return self._last

    def tick(self, times: LogTime) -> int | None:
        """The records the decode step had read one tick ago count as reflected: a record read reaches
        Redis within the same worker step, well inside a tick. (A first version read Bytewax's committed
        offsets from the recovery store instead, in this process, and crashed it with SIGBUS:
        ``dataflows.runtime.storeread``.)"""
        now = int(time.time() * 1000)  # before the ends: a record logged after them is not counted as read
        committed, self._before = self._before, read_offsets(self._resumed)
        ends = end_offsets(self._settings, timeout_s=5.0)
        lows = {f"{i}-{t}": low for (t, i), low in low_offsets(self._settings, timeout_s=5.0).items()}
        mark = watermark(committed, ends, times, now, lows)
        if mark is not None:
            self._client.eval(_SET_IF_META, 1, self._ks.meta, "watermark", str(mark))
            self._last = mark
        if self._last is not None:  # grows while no new mark can be worked out: a stuck watermark shows
            WATERMARK_LAG.set(max(0.0, (now - self._last) / 1000))
        return mark
