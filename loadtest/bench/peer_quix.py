"""Peer: Quix Streams running the same ATP logic with its RocksDB state (changelog topics on, the
default). ``python -m loadtest.bench.peer_quix ENDS STATE_DIR``; needs ``pip install -e '.[peers]'``.

The four input topics are concatenated; decoding and validation happen first, then ``group_by``
re-keys each event by sku@location through a repartition topic (a transfer also reaches its
destination key), as the dataflow's keyed steps do; a stateful ``apply`` folds each key's state,
and a batching sink writes the positions to Redis at each checkpoint, one pipeline per batch.

The embedded broker answers DescribeConfigs with nothing, so the topic configuration Quix copies
to its changelog and repartition topics is given explicitly.
"""

from __future__ import annotations

import pickle
import sys
import time
from typing import Any

import redis
from quixstreams import Application, State
from quixstreams.models import TopicConfig
from quixstreams.sinks import BatchingSink, SinkBatch
from quixstreams.state.rocksdb import RocksDBOptions
from redis.typing import FieldT

from core.kafka_config import security_config
from loadtest.bench.peer_logic import AtpLogic, load_ends, report, start_process
from projection.codec import hash_fields
from projection.keys import keyspace_of

# first record, last fold, and the time spent writing after the last fold (the final checkpoint's
# flush): a run ends with the app idling out, which must not count as work.
CLOCK: dict[str, Any] = {"first": None, "last": None, "tail": 0.0, "records": 0}


class RedisPositions(BatchingSink):
    def __init__(self, url: str, settings: Any) -> None:
        super().__init__()
        self._client = redis.Redis.from_url(url)
        self._ks = keyspace_of(settings)

    def write(self, batch: SinkBatch) -> None:
        latest: dict[str, dict[FieldT, Any]] = {}
        for item in batch:
            latest[item.value["k"]] = item.value["h"]  # the newest position of each key in the batch
        pipe = self._client.pipeline(transaction=False)
        for fields in latest.values():
            pipe.hset(self._ks.position(fields["sku"], fields["location"]), mapping=fields)
        started = time.perf_counter()
        pipe.execute()
        if CLOCK["last"] is not None and started >= CLOCK["last"]:
            CLOCK["tail"] += time.perf_counter() - started


def main() -> None:
    settings = start_process()
    ends = load_ends(sys.argv[1])
    partitions = max(int(k.split("-", 1)[0]) for k in ends) + 1
    logic = AtpLogic(settings)
    app = Application(
        broker_address=settings.kafka_bootstrap, consumer_group=f"peer-quix-{int(time.time())}",
        auto_offset_reset="earliest", state_dir=sys.argv[2], loglevel="WARNING",
        rocksdb_options=RocksDBOptions(dumps=pickle.dumps, loads=pickle.loads),
        consumer_extra_config={**security_config(settings), "session.timeout.ms": 6000, "max.poll.interval.ms": 30000,
                               "fetch.wait.max.ms": settings.kafka_fetch_wait_ms},
        producer_extra_config=security_config(settings),
    )
    config = TopicConfig(num_partitions=partitions, replication_factor=1)
    sdf = None
    for topic in settings.input_topics:
        t = app.dataframe(app.topic(topic, key_deserializer="bytes", value_deserializer="bytes", config=config))
        t = t.apply(_decoder(logic, topic), metadata=True, expand=True)
        sdf = t if sdf is None else sdf.concat(t)
    assert sdf is not None
    sdf = sdf.group_by(lambda v: v["k"], name="atp_key")
    sdf = sdf.apply(_folder(logic), stateful=True)
    sdf.sink(RedisPositions(settings.redis_url, settings))
    app.run(timeout=8.0)
    last = CLOCK["last"] + CLOCK["tail"] if CLOCK["last"] is not None else None
    report(CLOCK["records"], CLOCK["first"], last, invalid=logic.invalid)


def _decoder(logic: AtpLogic, topic: str) -> Any:
    def decode(value: bytes, key: bytes, timestamp: int, headers: Any) -> list[dict[str, Any]]:
        if CLOCK["first"] is None:
            CLOCK["first"] = time.perf_counter()
        CLOCK["records"] += 1
        checked = logic.check(topic, key, value)
        if checked is None:
            return []
        record, event = checked
        return [{"k": k, "t": topic, "r": record, "i": i} for i, (k, _) in enumerate(logic.route(event))]
    return decode


def _folder(logic: AtpLogic) -> Any:
    def fold(value: dict[str, Any], state: State) -> dict[str, Any]:
        # The repartition topic carries the record as JSON: parse it again and take this key's part.
        event = logic.route(logic.parse(value["t"], value["r"]))[value["i"]][1]
        st = logic.fold(state.get("s"), event)
        state.set("s", st)
        CLOCK["last"] = time.perf_counter()
        return {"k": value["k"], "h": hash_fields(logic.position(st))}
    return fold


if __name__ == "__main__":
    main()
