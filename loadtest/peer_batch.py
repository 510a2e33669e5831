"""Peer: the periodic batch sync. One pass reads the whole log, folds it and writes every position
(pipelined); a deployment repeats it every N minutes. Its freshness is the wait for the next pass
plus the pass itself. ``python -m loadtest.peer_batch ENDS``."""

from __future__ import annotations

import sys
import time

import redis

from atp.config import load_settings
from loadtest.peer_logic import AtpLogic, assign_all, hash_fields, load_ends, report
from state.fold import KeyState


def main() -> None:
    settings = load_settings()
    ends = load_ends(sys.argv[1])
    started = time.perf_counter()
    logic = AtpLogic(settings)
    consumer, parts = assign_all(settings, ends, "peer-batch")
    states: dict[str, KeyState] = {}
    n = 0
    open_parts = set(parts)
    while open_parts:
        for m in consumer.consume(10_000, 0.05):
            if m.error() is not None:
                continue
            n += 1
            if m.offset() + 1 >= parts[(m.topic(), m.partition())]:
                open_parts.discard((m.topic(), m.partition()))
            record = logic.record(m.topic(), m.key(), m.value())
            if record is not None:
                for key, event in logic.route(m.topic(), record):
                    states[key] = logic.fold(states.get(key), event)
    consumer.close()
    client = redis.Redis.from_url(settings.redis_url)
    ks = settings.keyspace
    pipe = client.pipeline(transaction=False)
    for i, st in enumerate(states.values()):
        p = logic.position(st)
        pipe.hset(ks.position(p.sku, p.location), mapping=hash_fields(p))
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    report(n, started, time.perf_counter(), keys=len(states), invalid=logic.invalid)


if __name__ == "__main__":
    main()
