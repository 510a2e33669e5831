"""The identifiers and bounds of the event contract that settings are validated against.

They live here, below everything, so that settings can check a location id or a group's size
without importing the domain; ``state/`` enforces the same figures on every event
(docs/contract-limits.md).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a SKU, location, group or event id

JS_MAX = 2**53 - 1  # the largest integer exact in a JavaScript number (and a float64)
MAX_FIGURE = 10**13  # a key's published figures, and the levels an event sets (counted_qty, a snapshot's on_hand)
MAX_SUMMED_KEYS = JS_MAX // MAX_FIGURE  # 900: keys a group or network sum may add up exactly

# Event time. The past bound is about absurd dates, not age: replays of old logs must still work.
EARLIEST_MS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
DEFAULT_SKEW_MS = 5 * 60_000  # how far ahead of the wall clock an event time may be

FORMULA_VERSIONS = (1, 2)  # the ATP formulas state.position implements

DEFAULT_GENERATION = "default"  # the keyspace generation a dataflow writes unless told otherwise
GENERATION_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
