"""Peer: the hand-rolled integration. One confluent-kafka consumer loop keeps the positions in a
dict and writes each event's position to Redis at once (one round trip per event), as a
point-to-point integration typically does. ``python -m loadtest.bench.peer_loop ENDS``."""

from __future__ import annotations

import sys
import time

import redis

from loadtest.bench.peer_logic import AtpLogic, load_ends, read_input, report, start_process
from projection.codec import hash_fields
from projection.keys import keyspace_of
from state.fold import KeyState


def main() -> None:
    settings = start_process()
    logic = AtpLogic(settings)
    client = redis.Redis.from_url(settings.redis_url)
    ks = keyspace_of(settings)
    states: dict[str, KeyState] = {}
    n, first, last = 0, None, None
    for m in read_input(settings, load_ends(sys.argv[1]), "peer-loop", batch=1000):
        if first is None:
            first = time.perf_counter()
        n += 1
        checked = logic.check(m.topic(), m.key(), m.value())
        if checked is None:
            continue
        for key, event in logic.route(checked[1]):
            st = states[key] = logic.fold(states.get(key), event)
            p = logic.position(st)
            client.hset(ks.position(p.sku, p.location), mapping=hash_fields(p))
        last = time.perf_counter()
    report(n, first, last, keys=len(states), invalid=logic.invalid)


if __name__ == "__main__":
    main()
