"""Settings fail fast with messages that name the variable and say what to do."""

from __future__ import annotations

import pytest

from core.config import load_settings
from core.errors import ConfigError
from state.safety import SafetyStock


def test_defaults_match_the_documented_addresses():
    s = load_settings({})
    assert (s.kafka_bootstrap, s.redis_url, s.api_port, s.metrics_port) == (
        "127.0.0.1:19092", "redis://127.0.0.1:16379/0", 8080, 9108)
    assert s.topic_partitions == 4 and s.snapshot_interval_s == 5.0 and s.recovery


def test_environment_and_config_file(tmp_path):
    cfg = tmp_path / "atp.toml"
    cfg.write_text('api_port = 9000\nworkers = 2\n')
    s = load_settings({"ATP_CONFIG": str(cfg), "ATP_WORKERS": "4"})
    assert (s.api_port, s.workers) == (9000, 4)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"ATP_API_PORT": "http"}, "ATP_API_PORT='http'"),
        ({"ATP_KAFKA_BOOTSTRAP": "localhost"}, "is not host:port"),
        ({"ATP_REDIS_URL": "localhost:6379"}, "must start with redis://"),
        ({"ATP_WORKRES": "2"}, "ATP_WORKRES=(hidden): unknown setting"),
        ({"ATP_CONFIG": "/nonexistent/atp.toml"}, "ATP_CONFIG=/nonexistent/atp.toml"),
        ({"ATP_PROCESS_ID": "1"}, "cluster mode needs both ATP_CLUSTER_ADDRESSES"),
        ({"ATP_CLUSTER_ADDRESSES": "a:1;b:2", "ATP_PROCESS_ID": "2"}, "lists 2 processes (ids 0 to 1)"),
        ({"ATP_CLUSTER_ADDRESSES": "a:1;a:1", "ATP_PROCESS_ID": "0"}, "listed twice"),
        ({"ATP_CLUSTER_ADDRESSES": "a:1,b:2", "ATP_PROCESS_ID": "0"}, "separated by ';'"),
        ({"ATP_MALLOC_TRIM_S": "-1"}, "ATP_MALLOC_TRIM_S='-1'"),
    ],
)
def test_bad_settings_name_the_variable(env, needle):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert needle in str(info.value)


def test_cluster_settings():
    s = load_settings({"ATP_CLUSTER_ADDRESSES": "10.0.0.1:2101; 10.0.0.2:2101", "ATP_PROCESS_ID": "1",
                       "ATP_WORKERS": "2"})
    assert s.addresses == ["10.0.0.1:2101", "10.0.0.2:2101"]
    assert (s.processes, s.workers_total, s.coordinator) == (2, 4, False)
    one = load_settings({})
    assert (one.addresses, one.processes, one.workers_total, one.coordinator) == (None, 1, 1, True)


def test_safety_stock_file(tmp_path):
    f = tmp_path / "ss.toml"
    f.write_text('[locations]\nDC-01 = 5\n[items]\n"SKU-1@DC-01" = 9\n')
    ss = SafetyStock.from_file(f)
    assert (ss.for_key("SKU-1", "DC-01"), ss.for_key("SKU-2", "DC-01"), ss.for_key("SKU-1", "DC-02")) == (9, 5, 0)
    f.write_text('[items]\n"SKU-1" = 9\n')
    with pytest.raises(ConfigError, match="is not SKU@LOCATION"):
        SafetyStock.from_file(f)
    for bad in ("-1", "1_000_000_000_001"):  # below zero, or beyond the contract's 10^12 per quantity
        f.write_text(f'[locations]\nDC-01 = {bad}\n')
        with pytest.raises(ConfigError, match="must be an integer from 0 to 1e"):
            SafetyStock.from_file(f)
