"""Keeps the Rust panic of a planned stop of the dataflow off stderr (docs/operating.md, Logs)."""

from __future__ import annotations

import faulthandler
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from core.config import Settings


class PanicHush:
    """Keeps the Rust panic of a planned stop off stderr; a real crash's is left as it is.

    With one worker in one process Bytewax 0.21.1 runs the flow in this thread (``run_main``) and
    stops it by panicking with the KeyboardInterrupt raised above: Rust's default panic hook writes
    "thread panicked" and, under RUST_BACKTRACE, an 80-line backtrace before Bytewax turns the panic
    back into the exception. RUST_BACKTRACE cannot be turned off for that panic alone (Rust reads it
    once, at the first panic, and keeps it for the process), so a planned stop sends file descriptor
    2 to a temporary file from the moment it raises until ``cli_main`` returns, and copies back every
    line but the panic's (other threads' log lines among them). Several workers or processes
    (``cluster_main``) stop without a panic: nothing to hide."""

    _PANIC = re.compile(r"thread '.*' panicked at ")
    _PANIC_BODY = re.compile(r"Box<dyn Any>|stack backtrace:|\s+\d+: .*|\s+at .*|note: .*|\s*")

    def __init__(self) -> None:
        self.armed = False
        self._saved: int | None = None
        self._file: IO[bytes] | None = None

    @contextmanager
    def around(self, settings: Settings) -> Iterator[None]:
        self.armed = settings.workers == 1 and not settings.addresses
        try:
            yield
        finally:
            self.armed = False
            self.restore()

    def hush(self) -> None:
        if not self.armed or self._saved is not None:
            return
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        if faulthandler.is_enabled():  # a native crash while hushed still reaches the real stderr
            faulthandler.enable(self._saved)

    def restore(self) -> None:
        if self._saved is None or self._file is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        if faulthandler.is_enabled():
            faulthandler.enable(sys.stderr)
        os.close(self._saved)
        self._saved = None
        self._file.seek(0)
        kept, panicked = [], False
        for line in self._file.read().decode(errors="replace").splitlines(keepends=True):
            if self._PANIC.match(line):
                panicked = True
            elif not (panicked and self._PANIC_BODY.fullmatch(line.rstrip("\n"))):
                kept.append(line)  # another thread's line, written while the panic was hushed
        self._file.close()
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
