"""core.memtrim: the thread that hands the heap's free pages back to the OS, and what glibc does."""

from __future__ import annotations

import threading

import pytest

from core import memtrim
from core.procinfo import own_rss_mib as _rss_mib


@pytest.mark.skipif(memtrim.malloc_trim() is None, reason="glibc only")
def test_trimming_gives_back_the_free_pages_between_live_allocations():
    # 2,000-byte objects come from malloc (above pymalloc's 512), one after another on the heap.
    # Keeping every 16th leaves ~30 KB holes that free() keeps; only malloc_trim returns them.
    trim = memtrim.malloc_trim()
    assert trim is not None
    trim()
    blocks = [bytes(2000) for _ in range(100_000)]
    kept = blocks[::16]
    before_free = _rss_mib()
    del blocks
    freed = before_free - _rss_mib()  # what free() alone gave back (the top of the heap, at most)
    held = _rss_mib()
    trim()
    returned = held - _rss_mib()
    # ~190 MB became free: most of it sits in holes until the trim.
    assert returned > 100, (freed, returned)
    assert len(kept) == 6250


def test_the_trimmer_trims_at_its_interval_and_reports_each_call_until_stopped():
    calls, durations = [], []
    three = threading.Event()

    def fake_trim() -> int:
        calls.append(1)
        if len(calls) >= 3:
            three.set()
        return 1

    trimmer = memtrim.start(0.01, durations.append, trim=fake_trim)
    assert trimmer is not None
    try:
        assert memtrim.start(0.5, trim=fake_trim) is trimmer  # once per process
        assert three.wait(5)
    finally:
        trimmer.stop()
    n = len(calls)
    assert len(durations) == n and all(d >= 0 for d in durations)
    assert not trimmer.thread.is_alive()
    assert memtrim.start(0) is None  # 0 disables


def test_without_malloc_trim_nothing_is_started(monkeypatch):
    monkeypatch.setattr(memtrim, "malloc_trim", lambda: None)
    assert memtrim.start(1.0) is None
