"""Peer: the hand-rolled integration. One confluent-kafka consumer loop keeps the positions in a
dict and writes each event's position to Redis at once (one round trip per event), as a
point-to-point integration typically does. ``python -m loadtest.peer_loop ENDS``."""

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
    logic = AtpLogic(settings)
    consumer, parts = assign_all(settings, ends, "peer-loop")
    client = redis.Redis.from_url(settings.redis_url)
    ks = settings.keyspace
    states: dict[str, KeyState] = {}
    n, first, last = 0, None, None
    open_parts = set(parts)
    while open_parts:
        for m in consumer.consume(1000, 0.05):
            if m.error() is not None:
                continue
            if first is None:
                first = time.perf_counter()
            n += 1
            if m.offset() + 1 >= parts[(m.topic(), m.partition())]:
                open_parts.discard((m.topic(), m.partition()))
            record = logic.record(m.topic(), m.key(), m.value())
            if record is None:
                continue
            for key, event in logic.route(m.topic(), record):
                st = states[key] = logic.fold(states.get(key), event)
                p = logic.position(st)
                client.hset(ks.position(p.sku, p.location), mapping=hash_fields(p))
            last = time.perf_counter()
    consumer.close()
    report(n, first, last, keys=len(states), invalid=logic.invalid)


if __name__ == "__main__":
    main()
