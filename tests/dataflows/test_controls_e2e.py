"""Safety-stock controls and location groups end to end: the `atp safety-stock` command, the real
broker, the dataflow, Redis, HTTP, and a replay that rebuilds the same keyspace."""

from __future__ import annotations

import httpx
import pytest

from loadtest.truth.verify import read_truth
from projection.codec import from_hash
from projection.keys import generations_of, keyspace_of
from projection.verify import compare
from tests.builders import wms
from tests.conftest import get_json, processed, wait_until
from tests.dataflows.test_replay import assert_equals_oracle, produce

pytestmark = pytest.mark.integration


def _groups(rclient, ks):
    out = {}
    for key in rclient.scan_iter(match=f"{ks.prefix}:grp:*"):
        g = from_hash(rclient.hgetall(key))
        g.pop("updated_at")
        out[key.decode().removeprefix(ks.prefix)] = g
    return out


def test_controls_set_safety_stock_live_groups_sum_it_and_a_replay_rebuilds_both(settings, rclient, start):
    settings = settings.model_copy(update={"location_groups": {"EAST": ["DC-01", "DC-02"]}})
    produce(settings, [wms("RECEIPT", qty=20, t=0), wms("RECEIPT", qty=10, location="DC-02", t=0),
                       wms("RECEIPT", qty=30, sku="SKU-2", t=0)])
    cmd = start("safety-stock", "DC-01", "--units", "5", "--reason", "peak season", s=settings)
    assert cmd.p.wait(60) == 0, cmd.tail()
    assert "every item at DC-01: 5 units" in cmd.tail()
    flow = start("run", s=settings)
    api = start("serve", s=settings)
    base = f"http://{settings.api_host}:{settings.api_port}"
    wait_until(lambda: processed(settings) >= 4, 60, "every event processed", flow)

    east = wait_until(lambda: (b := get_json(f"{base}/v1/availability/SKU-1?group=EAST")) and b["total"]["atp"] == 25
                      and b, 30, "the EAST group with DC-01's safety stock", api)
    assert [(p["location"], p["safety_stock"], p["atp"]) for p in east["locations"]] == [
        ("DC-01", 5, 15), ("DC-02", 0, 10)]
    assert east["group"]["members"] == [{"location": "DC-01", "version": 2}, {"location": "DC-02", "version": 1}]
    assert get_json(f"{base}/v1/availability/SKU-2/DC-01")["safety_stock"] == 5  # every item at the location

    # Live: one item's own control beats the location's; the group follows.
    item = start("safety-stock", "DC-01", "--sku", "SKU-1", "--units", "8", s=settings)
    assert item.p.wait(60) == 0, item.tail()
    wait_until(lambda: (b := get_json(f"{base}/v1/availability/SKU-1?group=EAST")) and b["total"]["atp"] == 22,
               30, "the item control in the group", api)
    assert get_json(f"{base}/v1/availability/SKU-2/DC-01")["atp"] == 25
    bad = start("safety-stock", "DC-01", s=settings)
    assert bad.p.wait(60) == 2 and "--units N or --clear" in bad.tail()
    metrics = httpx.get(f"http://{settings.metrics_host}:{settings.metrics_port}/metrics").text
    assert f'atp_events_total{{event_type="SAFETY_STOCK_SET",outcome="applied",topic="{settings.topic_controls}"}} 2.0' \
        in metrics

    # The controls are in the log: a replay rebuilds the same positions and group positions,
    # versions included, and the independent oracle agrees.
    replay = start("replay", "rebuilt", "--metrics-port", "0", s=settings)
    assert replay.p.wait(90) == 0, replay.tail()
    gens = generations_of(settings)
    diff = compare(rclient, keyspace_of(settings), gens.keyspace("rebuilt"))
    assert diff.passed and diff.equal == 3
    assert_equals_oracle(rclient, gens.keyspace("rebuilt"), read_truth(settings))
    live, rebuilt = _groups(rclient, keyspace_of(settings)), _groups(rclient, gens.keyspace("rebuilt"))
    assert live == rebuilt and live[":grp:{SKU-1}:EAST"]["atp"] == 22
