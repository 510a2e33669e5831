"""Errors are data after decode too: what turns a refused event, or a failing step, into a dead letter.

Taken from Kafka Streams' exception handlers (a record that fails is handed to a handler that
logs it and continues, instead of stopping the application) and Kafka Connect's
``errors.tolerance=all`` with a dead-letter queue whose headers say which stage failed
(``__connect.errors.stage``): the dead letter here carries ``atp.error.step``.

Two places use it: the fold (``dataflows.logic.PositionLogic`` refuses an event whose figures
would leave the contract's range, or that raises, and keeps the key as it was) and the steps that
encode outputs (``guarded``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from operator import attrgetter
from typing import Any, Generic, TypeVar

from dataflows import metrics
from dataflows.kafka import DeadLetter
from state.drift import Alert
from state.events import Event, InventorySnapshot, kafka_key
from state.limits import ALERT_FIGURES, JS_MAX, MAX_FIGURE, POSITION_FIGURES
from state.position import Position

log = logging.getLogger(__name__)

OUT_OF_RANGE = "out_of_range"
STEP_ERROR = "step_error"

_position_figures = attrgetter(*POSITION_FIGURES)
_alert_figures = attrgetter(*ALERT_FIGURES)


class OutOfRange(Exception):
    """A key's figures would leave the contract's range (``state.limits``)."""


class SourceRecord:
    """Stands in for the input record of an event that has none (built in a test, or kept in a
    key's state across a restart), or for an output that failed to encode: the dead letter then
    carries the key and a description instead of the original bytes."""

    __slots__ = ("key", "value", "topic", "headers", "offset", "partition")

    def __init__(self, key: str, value: str, topic: str = "") -> None:
        self.key: bytes | None = key.encode()
        self.value: bytes | None = value.encode("utf-8", "replace")
        self.topic = topic
        self.headers: list[tuple[str, bytes]] | None = None
        self.offset = -1
        self.partition = -1


def out_of_range(outputs: list[Any]) -> str | None:
    """Why one of the fold's outputs cannot be published (a figure beyond the contract's range), or None."""
    for item in outputs:
        t = type(item)
        if t is Position:
            figures = _position_figures(item)
            if min(figures) < -MAX_FIGURE or max(figures) > MAX_FIGURE:
                bad = next(f"{n}={v}" for n, v in zip(POSITION_FIGURES, figures) if not -MAX_FIGURE <= v <= MAX_FIGURE)
                return f"{item.key}: {bad} would leave the range ±{MAX_FIGURE:.0e}"
        elif t is Alert:
            figures = _alert_figures(item)
            if min(figures) < -JS_MAX or max(figures) > JS_MAX:
                return f"{item.key}: the {item.kind} alert's figures {figures} leave the range ±{JS_MAX}"
    return None


def refused(event: Event, reason: str, message: str, error_class: str, step: str, topic: str | None,
            effects: list[tuple[Callable[[Any], Any], Any]] | None = None) -> DeadLetter:
    """The dead letter of an event the fold refused (read from ``topic``; None for the far side of
    a transfer, which is not an input event); counted like every dead letter.

    With ``effects`` the counting and the log line are added there instead of done now: the fold
    applies them only when the batch or timer that refused the event is accepted (the same refusal
    is made again when a key's journal is replayed, and must not count twice)."""
    src = event.src
    if src is None:
        src = SourceRecord(kafka_key(event.sku, event.location), repr(event), topic or "")
    labels = None
    if topic is not None:
        labels = (topic, getattr(event, "event_type", None) or (
            "SNAPSHOT" if type(event) is InventorySnapshot else "SAFETY_STOCK_SET"), "dead_letter")
    line = (step, src.topic, src.partition, src.offset, src.key, event.event_id, getattr(event, "correlation_id", None),
            reason, message)

    def count(_: object = None) -> None:
        if labels is not None:
            metrics.EVENTS.inc(labels)
        metrics.DEAD_LETTER.labels(reason).inc()
        log.warning("dead letter step=%s topic=%s partition=%s offset=%s key=%r event_id=%s correlation_id=%r "
                    "reason=%s error=%s", *line)

    if effects is None:
        count()
    else:
        effects.append((count, None))
    return DeadLetter(src, reason, error_class, message, step)


In = TypeVar("In")
Out = TypeVar("Out")


class guarded(Generic[In, Out]):
    """A ``flat_map`` step around ``fn``: its result, or, when it raises, the item as a dead letter
    (``as_dead``) so the flow goes on."""

    def __init__(self, step: str, fn: Callable[[In], Out], as_dead: Callable[[DeadLetter], Out]) -> None:
        self._step, self._fn, self._as_dead = step, fn, as_dead

    def __call__(self, item: In) -> list[Out]:
        try:
            return [self._fn(item)]
        except Exception as exc:  # noqa: BLE001 - any error of one item is that item's, not the flow's
            key = getattr(item, "key", "?")
            metrics.DEAD_LETTER.labels(STEP_ERROR).inc()
            log.error("dead letter step=%s key=%s reason=%s error=%s: %s", self._step, key, STEP_ERROR,
                      type(exc).__name__, exc)
            as_dict = getattr(item, "as_dict", None)
            body = repr(as_dict() if as_dict is not None else item)
            dl = DeadLetter(SourceRecord(str(key), body), STEP_ERROR, type(exc).__name__, str(exc), self._step)
            return [self._as_dead(dl)]
