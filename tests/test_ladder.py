"""The benchmark ladder's machinery on a small input (the figures themselves come from real runs of
``python -m loadtest.ladder``, never from a timed test)."""

from __future__ import annotations

import json

import pytest

from loadtest import ladder
from loadtest.ladder_stage import STAGES

pytestmark = pytest.mark.integration


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
