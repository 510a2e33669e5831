"""Garbage-collector thresholds for our long-running processes: the dataflow and the API.

The state is millions of long-lived objects (a ``KeyState`` per key with its dicts, lists and
tuples) and none of them forms a reference cycle. CPython's cyclic collector still walks all of
them whenever it collects the oldest generation, and with the default thresholds (700, 10, 10)
that took 20 % of the fold's CPU (``py-spy --native``: ``gc_collect_main``, 200,000 events).
Raising the thresholds makes the full collections rare; reference counting frees everything else
at once as before, and a cycle made somewhere (an exception with its traceback) is still collected,
later. On the same input: the fold rung 8.7 -> 7.0 s, the full pipeline 12.5 -> 9.9 s; ``gc.disable()``
was no faster than these thresholds.

The API holds no such state, but a full collection there walks every object of FastAPI, pydantic
and the imported modules, and the request that triggers it waits: with ``tune(freeze=True)`` after
start-up (those objects are moved out of the collector's sight) the p99 of 100-key batch reads at
~90 requests/s went from 26 and 28 ms to 13 and 20 ms in two runs each.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)


def tune(freeze: bool = False) -> None:
    """``freeze``: also exempt every object alive now from all later collections (call it once
    start-up has made its long-lived objects)."""
    if freeze:
        gc.freeze()
    gc.set_threshold(*THRESHOLDS)
