"""The benchmark ladder's machinery on a small input (the figures themselves come from real runs of
``python -m loadtest.bench.ladder``, never from a timed test)."""

from __future__ import annotations

import json

import pytest

from loadtest.bench import ladder
from loadtest.bench.ladder_stage import STAGES

pytestmark = [pytest.mark.integration, pytest.mark.one_broker]


def test_every_rung_reads_the_whole_input_and_the_report_renders(tmp_path):
    report = ladder.run(3000, 1, 50, 4, 7, tmp_path)
    records = report["input"]["records"]
    assert records == 3000 and [r["stage"] for r in report["rungs"]] == list(STAGES)
    for rung in report["rungs"]:
        (run,) = rung["runs"]
        assert run["records"] == records, rung["stage"]
        assert run["records_per_s"] > 0 and run["cpu_s"] > 0
    assert 0 < report["ratios"]["full_vs_bytewax_passthrough"]
    text = ladder.markdown(report)
    assert "| raw consume() |" in text and "+ recovery (default)" in text and report["reproduce"] in text
    assert ladder.plot(report, tmp_path / "ladder.png") and (tmp_path / "ladder.png").stat().st_size > 10_000
    json.dumps(report)  # machine-readable as written


def test_the_memory_benchmark_takes_the_peak_before_and_after_the_end_of_input(tmp_path):
    from loadtest.bench import memory

    report = memory.run(4000, 1000, tmp_path)
    for run, keys in ((report["small"], 1000), (report["large"], 4000)):
        assert run["records"] == 2 * keys
        # Noted when the last partition's range was read, so not above the whole run's peak, give
        # or take the kernel's RSS counting (per-CPU counters, read approximately: 89.9 then 89.7).
        assert 0 < run["input_read_peak_rss_mib"] <= run["peak_rss_mib"] + 1
    assert report["redis_bytes_per_key"] > 0
    text = memory.markdown(report)
    assert f"**{report['dataflow_bytes_per_key']:,} bytes per key**" in text
    assert f"**{report['dataflow_bytes_per_key_with_end']:,} bytes per key**" in text
    json.dumps(report)


def test_the_profile_of_the_full_rung_puts_each_sample_under_one_step(tmp_path):
    from loadtest.bench import hotspots

    report = hotspots.run(3000, 50, 4, 7, tmp_path, rate=500)
    assert report["records"] == report["input"]["records"] == 3000 and report["cpu_s"] > 0
    steps = {x["name"]: x for x in report["steps"]}
    assert sum(x["samples"] for x in report["steps"]) == report["samples"] > 0
    assert abs(sum(x["us_per_record"] for x in report["steps"]) - report["us_per_record"]) < 0.1 * len(steps)
    assert "decode and validation" in steps and "the ATP fold" in steps  # the real rung was sampled
    text = hotspots.markdown(report)
    assert f"**{report['us_per_record']:.1f} µs per record**" in text and report["reproduce"] in text
    json.dumps(report)
