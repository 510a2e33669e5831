"""Dead letters through the real broker: list and show them, redrive a fixed one exactly once."""

from __future__ import annotations

import json
import time

import pytest

from dataflows.kafka.producer import EventProducer
from dataflows.runtime import deadletters as dlq
from projection.keys import KeySpace
from tests.builders import wms
from tests.conftest import run_atp, wait_until

pytestmark = pytest.mark.integration



def test_list_show_and_redrive_a_fixed_record_once(settings, start, rclient, tmp_path):
    producer = EventProducer(settings)
    good = wms("RECEIPT", qty=10, event_id="good-1")[1]
    bad = wms("RECEIPT", qty=-5, event_id="bad-1")[1]
    producer.send("wms", good)
    producer.send("wms", bad)
    producer.send_raw(settings.topic_wms, b"SKU-1@DC-01", b"\x01\x02garbage")
    assert producer.flush() == 0
    flow = start("run")
    entries = wait_until(lambda: len(dlq.read_dead_letters(settings)) == 2 and dlq.read_dead_letters(settings),
                         60, "two dead letters", flow)
    by_reason = {e.reason: e for e in entries.values()}
    assert set(by_reason) == {"invalid_quantity", "bad_magic"}
    bad_source = by_reason["invalid_quantity"].source

    listed = run_atp(settings, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert "2 dead letters" in listed.stdout and bad_source in listed.stdout
    shown = run_atp(settings, "dlq", "show", bad_source)
    assert shown.returncode == 0 and "RECEIPT needs qty > 0, got -5" in shown.stdout
    assert run_atp(settings, "dlq", "show", "nope").returncode == 2

    fixes = tmp_path / "fixes.jsonl"
    fixed = {k: v for k, v in bad.items() if v is not None} | {"qty": 5}
    fixes.write_text(json.dumps({"source": bad_source, "event": fixed}) + "\n")
    dry = run_atp(settings, "dlq", "redrive", "--fix", str(fixes), "--dry-run")
    assert "would redrive 1" in dry.stdout, dry.stdout + dry.stderr
    everything = run_atp(settings, "dlq", "redrive", "--fix", str(fixes))  # the fix, plus all still-invalid ones
    assert everything.returncode == 0, everything.stderr
    assert "redrove 1" in everything.stdout
    everything = run_atp(settings, "dlq", "redrive")
    assert "redrove 0; 1 still invalid, 1 already redriven" in everything.stdout, everything.stdout

    key = KeySpace(settings.redis_key_prefix).position("SKU-1", "DC-01")
    wait_until(lambda: rclient.hget(key, "available_qty") == b"15", 60, "the redriven receipt", flow)
    again = run_atp(settings, "dlq", "redrive", "--fix", str(fixes))
    assert "redrove 0" in again.stdout and "already redriven" in again.stdout
    time.sleep(2)
    assert rclient.hget(key, "available_qty") == b"15" and rclient.hget(key, "version") == b"2"
