"""The ranges of the contract: how large a quantity and how odd a time an event may carry, and
how large a figure a key may publish.

Every figure the flow publishes goes into an Avro ``long``, a Redis hash and JSON read by
JavaScript clients, and the narrowest of those is JavaScript's exact integers (|x| <= 2^53 - 1).
The bounds are chosen so that everything derived stays inside it with room to spare:

- one event moves at most ``MAX_QTY`` (10^12) units;
- one key's published figures (available, on-hand, reserved, inbound, ATP, shortfall, ...) stay
  within ``MAX_FIGURE`` (10^13): an event that would take one outside is refused whole (dead letter
  ``out_of_range``, the key unchanged), never wrapped;
- so a sum over up to ``MAX_SUMMED_KEYS`` (900) keys, a location group or a SKU's network total,
  stays within 9 * 10^15 < 2^53 - 1, and a drift difference (snapshot minus stream) within 2 * 10^13.

Pure: no clock, no I/O. The dataflow checks events as it decodes them (``check_event``) and
positions as the fold produces them (``figures_out_of_range``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from core.contract import DEFAULT_SKEW_MS as DEFAULT_SKEW_MS
from core.contract import EARLIEST_MS as EARLIEST_MS
from core.contract import JS_MAX as JS_MAX
from core.contract import MAX_FIGURE as MAX_FIGURE
from core.contract import MAX_SUMMED_KEYS as MAX_SUMMED_KEYS
from state.errors import InvalidEvent

MAX_QTY = 10**12  # units one event may move or hold (qty, a RESERVE's qty, a safety stock)

# Event time. The past bound is about absurd dates, not age: replays of old logs must still work.
# The latest time Python's datetime (and so every reader of ISO-8601 times) can represent.
LATEST_MS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() * 1000)

POSITION_FIGURES = ("atp", "available_qty", "on_hand", "reserved", "non_sellable", "inbound", "safety_stock",
                    "shortfall")
ALERT_FIGURES = ("expected", "observed", "difference")


def quantity(name: str, value: int, limit: int = MAX_QTY) -> int:
    """``value`` when |value| <= ``limit``; else ``InvalidEvent('out_of_range')``."""
    if -limit <= value <= limit:
        return value
    raise InvalidEvent("out_of_range", f"{name}={value} is out of range: |{name}| must be at most {limit:.0e}")


def times(event_type: str, occurred_ms: int, now_ms: int, skew_ms: int, earliest_ms: int = EARLIEST_MS,
          as_of_ms: int | None = None) -> None:
    """Refuse an event time (and a snapshot's ``as_of``) that no clock could have written: before
    ``earliest_ms``, or more than ``skew_ms`` ahead of ``now_ms`` (the wall clock when the record
    is read); a snapshot's ``as_of`` may not be later than its own ``occurred_at`` plus the skew
    either (a WMS sending local time as UTC). Reason ``clock_skew``."""
    latest = now_ms + skew_ms
    for name, t in (("occurred_at", occurred_ms), ("as_of", as_of_ms)):
        if t is None:
            continue
        if t < earliest_ms:
            raise InvalidEvent("clock_skew", f"{event_type} {name}={_iso(t)} is before {_iso(earliest_ms)}; "
                                             "no event of this contract is that old (ATP_EARLIEST_EVENT_TIME)")
        if t > latest:
            raise InvalidEvent("clock_skew", f"{event_type} {name}={_iso(t)} is more than {skew_ms / 1000:g} s ahead "
                                             f"of the clock ({_iso(now_ms)}); fix the producer's clock "
                                             "(ATP_MAX_CLOCK_SKEW_S)")
    if as_of_ms is not None and as_of_ms > occurred_ms + skew_ms:
        raise InvalidEvent("clock_skew", f"snapshot as_of={_iso(as_of_ms)} is after its own occurred_at="
                                         f"{_iso(occurred_ms)} (+{skew_ms / 1000:g} s): a snapshot cannot describe "
                                         "the future; is the sender's clock in local time?")


def expiry(value: int) -> int:
    """A reservation's ``expires_at``: any time a date can hold (an old one has simply lapsed)."""
    if 0 <= value <= LATEST_MS:
        return value
    raise InvalidEvent("out_of_range", f"expires_at={value} is not a time between 1970 and 9999 (epoch ms)")


def figures_out_of_range(values: dict[str, int | None], names: tuple[str, ...], limit: int) -> str | None:
    """The first of ``names`` whose value is beyond ±``limit``, as a message; None when all fit."""
    for name in names:
        v = values[name]
        if v is not None and not -limit <= v <= limit:
            return f"{name}={v} would leave the range ±{limit:.0e}"
    return None


def _iso(ms: int) -> str:
    """A time for a message: ISO-8601 where a date can hold it, else the raw epoch milliseconds."""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return f"{ms} ms"
