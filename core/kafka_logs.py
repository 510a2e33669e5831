"""librdkafka's log lines through the project's logging, each message at most once per window.

Every Kafka client gets ``LOGGER`` as its ``logger`` property (``core.kafka_config``), so librdkafka
writes nothing to stderr itself: its lines reach the ``librdkafka`` logger when the client is polled
(confluent-kafka serves them from ``poll``, ``consume`` and ``flush``), and go wherever the process's
logging goes, with its timestamps and levels. A client that is never polled (an admin client that
only creates topics) keeps its lines to itself.

A broker that is down makes every client say the same thing again and again (`atp run` wrote 4,438
lines in 20 s; 8 to 11 with this). ``Repeats`` lets a message through once per ``WINDOW_S``,
whichever client says it (the same text from another client is the same news), and counts the rest;
the next time the message gets through it says how many were held back and from how many clients (a
message that stops repeating never reports its last count: what matters is that it stopped).
Numbers that change from one repeat to the next (``after 12ms``, ``timeout #3``, ``2 in-flight``) do
not make a message new; addresses, ports and broker ids do.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_S = 30.0
MAX_MESSAGES = 1000  # distinct messages remembered; the oldest are forgotten first

# A count or a duration standing alone: "after 12ms", "timeout #3", "2 in-flight". Not part of an
# address, a port, a broker id or a client name ("127.0.0.1:9092/1", "ipv4#127.0.0.1", "consumer-7").
_VOLATILE = re.compile(r"(?<![\w.:/#-])#?\d+(?:ms|s)?(?![\w.:/-])")
_THREAD = re.compile(r"^\[thrd:[^\]]*\]: ")


def _shape(text: str) -> str:
    return _VOLATILE.sub("N", text)


@dataclass
class _Seen:
    shown_at: float
    held: int = 0
    clients: set[str] = field(default_factory=set)


class Repeats(logging.Filter):
    """Lets a librdkafka message through once per ``window_s`` (per level, facility and text, across
    clients), counting what it holds back. Thread-safe: clients are polled from many threads."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic,
                 max_messages: int = MAX_MESSAGES) -> None:
        super().__init__()
        self.window_s, self._clock, self._max = window_s, clock, max_messages
        self._seen: OrderedDict[tuple[int, str, str], _Seen] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (isinstance(args, tuple) and len(args) == 3):
            return True  # not confluent-kafka's (facility, client, text) call: leave it alone
        facility, client, text = (str(a) for a in args)
        key = (record.levelno, facility, _shape(_THREAD.sub("", text)))
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.shown_at < self.window_s:
                seen.held += 1
                seen.clients.add(client)
                return False
            held, clients = (seen.held, len(seen.clients)) if seen is not None else (0, 0)
            self._seen[key] = _Seen(now)
            self._seen.move_to_end(key)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
        if held:
            record.msg = "%s [%s] %s (said %d more time(s) by %d client(s) since it was last logged)"
            record.args = (facility, client, text, held, clients)
        return True


LOGGER = logging.getLogger("librdkafka")
REPEATS = Repeats()
LOGGER.addFilter(REPEATS)
