"""Hand the heap's free pages back to the OS now and then (glibc's ``malloc_trim``).

glibc returns freed memory to the OS only from the top of its heaps. The dataflow allocates and
frees a lot in between: each epoch's unpacked key states, Bytewax's snapshot buffers, librdkafka's
fetched message sets (freed by another thread than the one that made them). The holes stay part of
the RSS, so a live dataflow's RSS climbs long after its state stopped growing: reading 1,000,000
keys (``python -m loadtest.bench.memory``), its heaps held 400 MB free beside 560 MB in use (glibc's
``mallinfo2``) and its peak RSS reached 1,162 MiB; trimming once a second kept the peak at 895 MiB,
at 5 to 15 ms a call. ``malloc_trim(0)`` releases every whole free page, those in the middle of a
heap too (glibc 2.8 and later), and a ``ctypes`` call releases the GIL while it runs.

Elsewhere (musl, macOS) there is nothing to call and nothing is started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Trim = Callable[[], object]


def malloc_trim() -> Trim | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        fn = None
    if fn is None:
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: fn(0)


class Trimmer:
    """A daemon thread that trims every ``interval_s`` seconds and reports each call's duration."""

    def __init__(self, interval_s: float, trim: Trim, on_trim: Callable[[float], None]) -> None:
        self.interval_s, self._trim, self._on_trim = interval_s, trim, on_trim
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="atp-malloc-trim", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            started = time.perf_counter()
            self._trim()
            self._on_trim(time.perf_counter() - started)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()
        if _running and _running[0] is self:
            _running.clear()


_running: list[Trimmer] = []


def start(interval_s: float, on_trim: Callable[[float], None] = lambda seconds: None,
          trim: Trim | None = None) -> Trimmer | None:
    """Start trimming every ``interval_s`` seconds (0 disables), once per process: `atp run` calls
    this again when it restarts the flow. None when nothing runs."""
    if interval_s <= 0:
        return None
    if _running:
        return _running[0]
    trim = trim or malloc_trim()
    if trim is None:
        log.info("malloc_trim is not available here (not glibc): freed heap memory stays with the process")
        return None
    trimmer = Trimmer(interval_s, trim, on_trim)
    _running.append(trimmer)
    trimmer.thread.start()
    return trimmer
