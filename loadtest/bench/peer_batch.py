"""Peer: the periodic batch sync. One pass reads the whole log, folds it and writes every position
(pipelined); a deployment repeats it every N minutes. Its freshness is the wait for the next pass
plus the pass itself. ``python -m loadtest.bench.peer_batch ENDS``."""

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
    started = time.perf_counter()
    logic = AtpLogic(settings)
    states: dict[str, KeyState] = {}
    n = 0
    for m in read_input(settings, load_ends(sys.argv[1]), "peer-batch"):
        n += 1
        checked = logic.check(m.topic(), m.key(), m.value())
        if checked is not None:
            for key, event in logic.route(checked[1]):
                states[key] = logic.fold(states.get(key), event)
    client = redis.Redis.from_url(settings.redis_url)
    ks = keyspace_of(settings)
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
