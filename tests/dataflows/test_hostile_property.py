"""Property: no record a producer can send stops the flow, and the valid ones agree with the oracle.

Records are drawn from the input schemas' full value ranges (every long from -2^63 to 2^63 - 1
with the edges of the contract's ranges weighted in, times before 2000 and after 9999, empty,
maximal and control-character strings, every enum symbol, nulls), mixed with the simulator's
valid sequences, encoded as real Avro, and run through the real flow on TestingSource. Then:
- the flow finishes;
- every record is accounted for: dead-lettered, or taken by the oracle (applied or a duplicate),
  and the flow dead-letters exactly the records the independent oracle rejects;
- every key's final position equals the oracle's.

The fold's clock and the decode step's clock are fixed at NOW, and the oracle reads at NOW.
Snapshots alert without rebasing (the oracle does not model rebase), and an ``expires_at`` is
either out of range or a day ahead (the oracle does not model expiry either).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflows.decode import TimeRules
from dataflows.flow import FlowDeps, FlowIO, build_flow, deps_from_settings
from dataflows.kafka.producer import RECORD_OF_ALIAS
from loadtest.truth.oracle import Oracle
from sandbox.simulator import Simulator
from schemas import Encoder, default_store
from state import drift, limits
from state.events import kafka_key
from state.position import Position
from tests.builders import control, order, wms
from tests.dataflows.test_flow import SETTINGS
from tests.reference import quantities

NOW = 1_795_000_000_000  # 2026-11-18T...Z: fixed, so a run does not depend on the wall clock
DAY = 86_400_000
ENC = Encoder(default_store())
AVRO = Path(__file__).resolve().parents[2] / "schemas" / "avro"
SKUS, LOCATIONS = ["SKU-00001", "SKU-00002"], ["DC-01", "DC-02"]  # the simulator's names: shared keys
I64 = 2**63 - 1

LONG_EDGES = [0, 1, -1, I64, -I64 - 1, limits.MAX_QTY, limits.MAX_QTY + 1, -limits.MAX_QTY, -limits.MAX_QTY - 1,
              limits.MAX_FIGURE, limits.MAX_FIGURE + 1, -limits.MAX_FIGURE - 1, limits.JS_MAX, limits.JS_MAX + 1]
TIME_EDGES = [NOW, NOW - 1000, NOW - 2 * DAY, NOW + limits.DEFAULT_SKEW_MS, NOW + limits.DEFAULT_SKEW_MS + 1,
              NOW + DAY, limits.EARLIEST_MS, limits.EARLIEST_MS - 1, 0, 1, -1, 253_402_300_800_000, I64, -I64 - 1]
TIME_FIELDS = {"occurred_at", "as_of"}
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)
strings = st.one_of(text, st.sampled_from(["", "x" * 64, "x" * 65, "e" * 200, "e" * 201, "a\x1fb", "a\x00", " "]))
ids = st.one_of(st.sampled_from(SKUS + LOCATIONS), strings)


def _latest_schema(name: str) -> dict[str, Any]:
    path = max(AVRO.glob(f"{name}.*.avsc"), key=lambda p: int(p.name.split(".")[1]))
    return json.loads(path.read_text())


def _field(name: str, schema: Any, named: dict[str, Any], full: bool = True) -> st.SearchStrategy[Any]:
    """A strategy for one Avro value of ``schema``: from its full range (``full``), weighted toward
    the field's hostile values, or a plausible one (the quantities still at the range's edges)."""
    if isinstance(schema, list):  # a union
        options = [_field(name, s, named, full) for s in schema]
        return st.one_of(*options) if full or len(options) == 1 else st.one_of(options[1], options[0])
    if isinstance(schema, str):
        if schema == "null":
            return st.none()
        if schema in named:
            return _field(name, named[schema], named, full)
        if not full:
            return _plausible(name, schema)
        if schema == "string":
            if name in ("sku", "location", "to_location", "from_location"):
                return st.one_of(st.sampled_from(SKUS if name == "sku" else LOCATIONS), ids)
            if name == "event_id":
                return st.one_of(st.uuids().map(str), st.sampled_from(["shared-1", "shared-2"]), strings)
            if name == "order_line_id":
                return st.one_of(st.sampled_from(["L1", "L2"]), strings)
            return st.one_of(st.sampled_from(["r", "T1", "c"]), strings)
        if schema == "long":
            if name == "expires_at":
                return st.sampled_from([NOW + DAY, -1, 253_402_300_800_000, I64, -I64 - 1])
            if name in TIME_FIELDS:
                return st.one_of(st.sampled_from(TIME_EDGES), st.integers(NOW - DAY, NOW), st.integers(-I64 - 1, I64))
            return st.one_of(st.sampled_from(LONG_EDGES), st.integers(-50, 50), st.integers(-I64 - 1, I64))
        raise AssertionError(f"no strategy for {schema}")
    kind = schema["type"]
    if kind == "enum":
        named[schema["name"]] = schema
        return st.sampled_from(schema["symbols"])
    if kind == "record":
        named[schema["name"]] = schema
        return st.fixed_dictionaries({f["name"]: _field(f["name"], f["type"], named, full) for f in schema["fields"]})
    return _field(name, kind, named, full)  # {"type": "long", "logicalType": ...}


def _plausible(name: str, schema: str) -> st.SearchStrategy[Any]:
    if schema == "string":
        pools = {"sku": SKUS, "location": LOCATIONS, "to_location": LOCATIONS, "from_location": LOCATIONS,
                 "order_line_id": ["L1", "L2"], "event_id": ["shared-1", "shared-2"]}
        if name == "event_id":
            return st.one_of(st.uuids().map(str), st.sampled_from(pools[name]))
        return st.sampled_from(pools.get(name, ["r", "T1", "T2"]))
    if name == "expires_at":
        return st.just(NOW + DAY)
    if name in TIME_FIELDS:
        return st.integers(NOW - DAY, NOW)
    return st.one_of(st.integers(-5, 50), st.sampled_from(LONG_EDGES))


@st.composite
def _record_of(draw: st.DrawFn, alias: str, fields: list[tuple[str, Any]], named: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A plausible record with up to three fields drawn from their full range instead."""
    rec = {n: draw(_field(n, t, named, full=False)) for n, t in fields}
    for n in draw(st.lists(st.sampled_from([n for n, _ in fields]), max_size=3, unique=True)):
        rec[n] = draw(_field(n, dict(fields)[n], named, full=True))
    if alias == "snapshots" and isinstance(rec["as_of"], int) and draw(st.booleans()):
        rec["as_of"] = min(rec["as_of"], rec["occurred_at"])  # as_of after occurred_at is refused: keep some
    return alias, rec


def _record(alias: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    schema = _latest_schema(RECORD_OF_ALIAS[alias])
    named: dict[str, Any] = {}
    _field("", schema, named)  # registers the named types: later fields refer to them by name
    return _record_of(alias, [(f["name"], f["type"]) for f in schema["fields"]], named)


hostile = st.one_of(*[_record(a) for a in ("wms", "orders", "snapshots", "controls")])


def _pressure() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """Valid records at the largest quantities on one key: sums that reach the range's edge."""
    big, level = limits.MAX_QTY, limits.MAX_FIGURE
    sku = SKUS[0]
    made = [
        lambda: wms("RECEIPT", sku=sku, qty=big), lambda: wms("ADJUST", sku=sku, qty=-big, reason="r"),
        lambda: wms("COUNT", sku=sku, counted_qty=level), lambda: wms("SHIP", sku=sku, qty=big, order_line_id="L1"),
        lambda: wms("TRANSFER_OUT", sku=sku, qty=big, to_location="DC-02", transfer_id="T1"),
        lambda: order("RESERVE", "L2", big, sku=sku), lambda: control(big, sku=sku),
        lambda: wms("STATUS_MOVE", sku=sku, qty=big, from_status="AVAILABLE", to_status="HOLD"),
    ]
    return st.sampled_from(made).map(lambda make: _at_now(make()))


def _at_now(item: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    alias, rec = item
    rec["occurred_at"] = NOW - 1000
    return alias, rec


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[str, dict[str, Any], bool]]:
    """(alias, record, whether its Kafka key is the right one), hostile and valid mixed."""
    sim = Simulator(seed=draw(st.integers(0, 1000)), skus=3, locations=2)
    n_valid = draw(st.integers(0, 40))
    valid = [sim.next(NOW - DAY + i * 1000) for i in range(n_valid)]
    bad = draw(st.lists(hostile, max_size=40))
    heavy = draw(st.lists(_pressure(), max_size=25))
    merged = draw(st.permutations(valid + bad + heavy))
    return [(alias, rec, draw(st.integers(0, 9)) > 0) for alias, rec in merged]


def _message(alias: str, rec: dict[str, Any], offset: int, right_key: bool) -> KafkaSourceMessage:
    location = rec.get("location") if isinstance(rec.get("location"), str) else ""
    key = kafka_key(rec.get("sku"), location) if right_key else "SKU-00001@elsewhere"
    return KafkaSourceMessage(key=key.encode("utf-8", "replace"), value=ENC.encode(RECORD_OF_ALIAS[alias], rec),
                              topic=SETTINGS.topic_alias(alias), partition=0, offset=offset)


def _deps() -> FlowDeps:
    deps = deps_from_settings(SETTINGS)
    fixed = TimeRules(limits.DEFAULT_SKEW_MS, limits.EARLIEST_MS, clock=lambda: NOW / 1000)
    decode = type(deps.decode)(deps.decode._decoder, SETTINGS.input_topics, times=fixed)
    policy = drift.DriftPolicy(actions={"ERP": drift.ALERT, "WMS": drift.ALERT})
    return replace(deps, decode=decode, fold=replace(deps.fold, clock=lambda: NOW / 1000, drift=policy))


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_no_record_stops_the_flow_and_the_valid_ones_match_the_oracle(stream):
    msgs = [_message(alias, rec, i, right) for i, (alias, rec, right) in enumerate(stream)]
    redis, out = [], []
    run_main(build_flow(FlowIO(TestingSource(msgs), TestingSink(redis), TestingSink(out)), _deps()))

    dead = {int(dict(m.headers)["atp.source.offset"]): dict(m.headers)["atp.error.reason"].decode()
            for m in out if m.topic == SETTINGS.topic_dead_letter}
    oracle = Oracle(now_ms=NOW)
    rejected = {}
    for i, (alias, rec, _) in enumerate(stream):
        why = oracle.feed(alias, rec, msgs[i].key.decode("utf-8", "replace"))
        if why is not None:
            rejected[i] = why
    assert set(dead) == set(rejected), {i: (dead.get(i), rejected.get(i), stream[i][1]) for i in set(dead) ^ set(rejected)}
    assert oracle.accepted + oracle.duplicates + oracle.rejected == len(stream)

    final: dict[str, Position] = {}
    for p in redis:
        if type(p) is Position and (p.key not in final or p.version > final[p.key].version):
            final[p.key] = p
    expected = oracle.positions()
    assert set(final) == set(expected)
    for key, p in final.items():
        assert quantities(p) == expected[key].fields() | {"sku": p.sku, "location": p.location}, key
