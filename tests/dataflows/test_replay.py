"""`atp replay` and generations, end to end through the real broker, Redis, dataflow and API."""

from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime

import httpx
import pytest

from dataflows.kafka.producer import EventProducer
from loadtest.truth.verify import read_truth
from projection.codec import from_hash
from projection.generations import for_generation, read_meta
from projection.keys import READY, generations_of, keyspace_of
from projection.verify import compare
from sandbox.scrape import scrape, total
from sandbox.simulator import Simulator
from sandbox.stack import free_port
from tests.conftest import processed, wait_until

pytestmark = pytest.mark.integration


def produce(settings, items) -> None:
    producer = EventProducer(settings)
    for alias, rec in items:
        producer.send(alias, rec)
    assert producer.flush() == 0


def positions(rclient, ks) -> dict[str, dict]:
    """Every position of a generation, keyed sku@location, without the processing time."""
    keys = [k.decode() for k in rclient.scan_iter(match=f"{ks.prefix}:pos:*", count=1000)]
    pipe = rclient.pipeline(transaction=False)
    for k in keys:
        pipe.hgetall(k)
    out = {}
    for raw in pipe.execute():
        p = from_hash(raw)
        p.pop("updated_at")
        out[f"{p.pop('sku')}@{p.pop('location')}"] = p
    return out


def assert_equals_oracle(rclient, ks, truth) -> None:
    got = positions(rclient, ks)
    assert set(got) == set(truth.expected)
    for key, e in truth.expected.items():
        assert got[key] == e.fields(), key


def test_replaying_twice_gives_identical_keyspaces_equal_to_the_oracle(settings, rclient, start):
    sim = Simulator(seed=21, skus=60, locations=4)
    produce(settings, [sim.next() for _ in range(4000)])
    a = start("replay", "first", "--metrics-port", "0")
    assert a.p.wait(90) == 0, a.tail()
    assert "replayed" in a.tail() and "next: run it live" in a.tail()
    b = start("replay", "second", "--metrics-port", "0")
    assert b.p.wait(90) == 0, b.tail()
    gens = generations_of(settings)
    for name in ("first", "second"):
        meta = read_meta(rclient, gens.keyspace(name))
        assert (meta["state"], meta["kind"], meta["formula_version"]) == (READY, "replay", "1")
    diff = compare(rclient, gens.keyspace("first"), gens.keyspace("second"))
    assert diff.passed and diff.equal == diff.keys_new > 100
    assert_equals_oracle(rclient, gens.keyspace("first"), read_truth(settings))
    # A replay rebuilds Redis only: nothing went to the availability feed.
    from dataflows.kafka.topicread import read_topics
    assert not list(read_topics(settings.kafka_bootstrap, [settings.topic_availability], timeout_s=5))
    again = start("replay", "first", "--metrics-port", "0")
    assert again.p.wait(30) == 2 and "already built" in again.tail()

    # A dry run against the current generation lists the differences and leaves nothing behind.
    made_current = start("generation", "switch", "first", "--force", "--settle", "0", "--grace", "3600")
    assert made_current.p.wait(30) == 0, made_current.tail()
    dry = start("replay", "third", "--dry-run", "--metrics-port", "0")
    assert dry.p.wait(90) == 0, dry.tail()
    assert f"equal {diff.equal}, different 0, version apart 0, only in new 0, only in current 0" in dry.tail()
    assert read_meta(rclient, gens.keyspace("third")) is None
    assert not list(rclient.scan_iter(match=f"{gens.keyspace('third').prefix}:*"))


def test_a_point_in_time_rebuild_equals_the_oracle_up_to_that_time(settings, rclient, start):
    sim = Simulator(seed=22, skus=30, locations=3)
    produce(settings, [sim.next() for _ in range(2000)])
    time.sleep(0.05)
    cut = datetime.now(UTC)
    time.sleep(0.05)
    produce(settings, [sim.next() for _ in range(2000)])
    until_ms = int(cut.timestamp() * 1000)
    r = start("replay", "at-cut", "--until", cut.isoformat(), "--formula", "2", "--metrics-port", "0")
    assert r.p.wait(90) == 0, r.tail()
    ks = generations_of(settings).keyspace("at-cut")
    truth = read_truth(settings, until_ms=until_ms, formula=2)
    assert 0 < truth.log_records < 4000  # the cut fell between the two batches
    assert_equals_oracle(rclient, ks, truth)
    whole = read_truth(settings, formula=2)
    assert any(whole.expected[k].version != e.version for k, e in truth.expected.items())  # later events left out
    meta = read_meta(rclient, ks)
    assert (meta["kind"], meta["until"], meta["formula_version"]) == ("pit", str(until_ms), "2")

    api = start("serve")
    key = next(iter(truth.expected))
    sku, loc = key.split("@")
    base = f"http://{settings.api_host}:{settings.api_port}/v1/availability"
    wait_until(lambda: _get(f"{base}/{sku}/{loc}?generation=at-cut") is not None, 30, "the API", api)
    body, headers = _get(f"{base}/{sku}/{loc}?generation=at-cut")
    assert (body["version"], body["atp"], body["formula_version"]) == (
        truth.expected[key].version, truth.expected[key].atp, 2)
    assert headers["ATP-Generation"] == "at-cut"
    missing = httpx.get(f"{base}/{sku}/{loc}?generation=nope", timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "generation_not_found"

    # Frozen: it never runs live and never becomes current.
    live = start("run", s=for_generation(settings, "at-cut"))
    assert live.p.wait(30) == 2 and "point-in-time" in live.tail()
    switch = start("generation", "switch", "at-cut", "--force")
    assert switch.p.wait(30) == 2 and "never becomes current" in switch.tail()


def test_an_interrupted_replay_resumes_or_is_discarded(settings, rclient, start):
    sim = Simulator(seed=23, skus=200, locations=5)
    produce(settings, [sim.next() for _ in range(60_000)])
    truth = read_truth(settings)
    s = settings.model_copy(update={"snapshot_interval_s": 0.5, "kafka_batch_size": 200})
    r = start("replay", "half", "--metrics-port", str(settings.metrics_port), s=s)
    wait_until(lambda: processed(settings) > 5000, 60, "the replay to get going", r)
    time.sleep(1.0)  # a snapshot or two
    samples = scrape(f"http://{settings.metrics_host}:{settings.metrics_port}/metrics")
    read, left = total(samples, "atp_replay_events_total"), total(samples, "atp_replay_lag_events")
    assert read > 0 and left > 0 and read + left == 60_000
    code = r.stop(signal.SIGINT)
    assert code == 130, f"exit {code}:\n{r.tail()}"  # a native crash shows faulthandler's stacks here
    assert "`atp replay half --resume` continues it" in r.tail()
    assert read_meta(rclient, generations_of(settings).keyspace("half"))["state"] == "rebuilding"

    plain = start("replay", "half", "--metrics-port", "0", s=s)
    assert plain.p.wait(30) == 2 and "--resume continues it, --discard deletes it" in plain.tail()
    resumed = start("replay", "half", "--resume", "--metrics-port", "0", s=s)
    assert resumed.p.wait(120) == 0, resumed.tail()
    assert_equals_oracle(rclient, generations_of(settings).keyspace("half"), truth)

    redo = start("replay", "half", "--discard", "--metrics-port", "0", s=s)
    assert redo.p.wait(120) == 0, redo.tail()
    assert_equals_oracle(rclient, generations_of(settings).keyspace("half"), truth)


def _get(url: str):
    try:
        r = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None
    return (r.json(), r.headers) if r.status_code == 200 else None


class Poller(threading.Thread):
    """Reads a batch of keys over HTTP as fast as it can and records what it saw."""

    def __init__(self, url: str, keys: list[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.body = url, {"items": [dict(zip(("sku", "location"), k.split("@"))) for k in keys]}
        self.statuses: dict[int, int] = defaultdict(int)
        self.generations: list[str] = []
        self.regressions: list[tuple[str, str, int, int]] = []
        self.partial = 0
        self.stop = threading.Event()

    def run(self) -> None:
        newest: dict[tuple[str, str], int] = {}
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(self.url, json=self.body)
                except httpx.HTTPError:
                    self.statuses[-1] += 1  # counted as a failure: only 200s are expected
                    time.sleep(0.1)
                    continue
                self.statuses[r.status_code] += 1
                if r.status_code != 200:
                    continue
                gen = r.headers["ATP-Generation"]
                if not self.generations or self.generations[-1] != gen:
                    self.generations.append(gen)
                for res in r.json()["results"]:
                    if not res["found"]:
                        self.partial += 1
                        continue
                    k = (gen, f"{res['sku']}@{res['location']}")
                    v = res["availability"]["version"]
                    if v < newest.get(k, 0):
                        self.regressions.append((*k, newest[k], v))
                    newest[k] = max(v, newest.get(k, 0))
                time.sleep(0.02)


def test_replay_under_live_traffic_then_switch_without_serving_a_partial_generation(settings, rclient, start):
    sim = Simulator(seed=24, skus=100, locations=4)
    first = [sim.next() for _ in range(5000)]
    produce(settings, first)
    live = start("run")
    api = start("serve")
    wait_until(lambda: processed(settings) >= len(first), 60, "the live dataflow", live)
    keys = sorted({f"{rec['sku']}@{rec['location']}" for _, rec in first[:400]})[:100]
    url = f"http://{settings.api_host}:{settings.api_port}/v1/availability/query"
    wait_until(lambda: httpx.post(url, json={"items": [{"sku": "A", "location": "B"}]}).status_code == 200,
               30, "the API", api)
    poller = Poller(url, keys)
    poller.start()

    stop_traffic = threading.Event()

    def traffic() -> None:  # ~400 events/s until told to stop
        producer = EventProducer(settings)
        while not stop_traffic.is_set():
            for _ in range(20):
                producer.send(*sim.next())
            producer.flush()
            time.sleep(0.05)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        _replay_and_switch(settings, rclient, start, live, poller, stop_traffic, sender)
    finally:
        stop_traffic.set()
        poller.stop.set()


def _replay_and_switch(settings, rclient, start, live, poller, stop_traffic, sender) -> None:
    g2 = for_generation(settings, "g2")
    replay = start("replay", "g2", "--metrics-port", "0")
    assert replay.p.wait(120) == 0, replay.tail()
    follower = start("run", s=g2.model_copy(update={"metrics_port": free_port()}))
    switch = start("generation", "switch", "g2", "--grace", "3", "--settle", "60")
    assert switch.p.wait(90) == 0, switch.tail()
    assert "the API now serves 'g2'" in switch.tail()
    assert live.p.wait(30) == 0, "the old generation's dataflow retires itself after the grace period"
    assert "retired" in live.tail()
    assert not list(rclient.scan_iter(match=f"{keyspace_of(settings).prefix}:pos:*"))  # default's keys are gone
    stop_traffic.set()
    sender.join(10)
    time.sleep(1)
    poller.stop.set()
    poller.join(10)

    truth = read_truth(settings)
    wait_until(lambda: positions(rclient, keyspace_of(g2)) == {k: e.fields() for k, e in truth.expected.items()},
               60, "the new generation to catch up", follower)
    assert poller.generations == ["default", "g2"]  # switched once, never back
    assert dict(poller.statuses).keys() == {200}, poller.statuses  # never a 503 or 404 for a whole request
    assert poller.partial == 0  # never a missing key: no half-built generation was served
    assert poller.regressions == []
