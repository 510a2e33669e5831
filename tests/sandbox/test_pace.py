"""`atp simulate` waits for a running dataflow to catch up before it reads the positions it starts
from, tells the user once, and gives up with what to do; with no dataflow to ask it does not wait.
(The lag itself is proven against the real stack in test_status.py; here it is a stand-in.)"""

from __future__ import annotations

import httpx
import pytest

from core.config import load_settings
from core.errors import StackError
from sandbox import pace, status
from sandbox.status import Lag


@pytest.fixture
def lags(monkeypatch):
    """The lag ``input_lag`` reports, one per call (the last one repeats)."""
    seen: list[int] = []

    def install(*values: int, metrics: bool = True):
        def samples(_settings):
            if not metrics:
                raise httpx.ConnectError("refused")
            return {}

        def lag(_settings, _samples, _committed):
            seen.append(values[min(len(seen), len(values) - 1)])
            return Lag({"wms": seen[-1]}, "the dataflow's metrics")

        monkeypatch.setattr(status, "metrics_samples", samples)
        monkeypatch.setattr(status, "committed_offsets", lambda _settings: None)
        monkeypatch.setattr(status, "input_lag", lag)
        return seen

    return install


def test_it_waits_until_the_dataflow_has_read_everything_and_says_so_once(lags, tmp_path):
    seen = lags(120, 40, 0)
    told: list[int] = []
    pace._wait_caught_up(load_settings({}, state_dir=tmp_path), 30, told.append)
    assert seen == [120, 40, 0] and told == [120]


def test_it_gives_up_with_what_to_do(lags, tmp_path):
    lags(7)
    with pytest.raises(StackError, match="still 7 records behind after 0 s.*`atp status` shows no lag"):
        pace._wait_caught_up(load_settings({}, state_dir=tmp_path), 0, None)


def test_without_a_dataflow_to_ask_it_does_not_wait(lags, tmp_path):
    seen = lags(7, metrics=False)
    pace._wait_caught_up(load_settings({}, state_dir=tmp_path), 30, None)
    assert seen == []
