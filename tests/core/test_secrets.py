"""No secret is ever printed: `atp run`, `atp serve` and failing connections, given known
passwords for Redis and Kafka, never show them in any output."""

from __future__ import annotations

import pytest
import redis

from sandbox.stack import free_port
from tests.conftest import get_json, run_atp, wait_until

pytestmark = pytest.mark.integration

REDIS_PASSWORD = "rEd1s-Pa55-7731"
KAFKA_PASSWORD = "kAfKa-Pa55-4410"



def test_a_redis_password_is_not_printed_when_redis_cannot_be_reached(settings):
    s = settings.model_copy(update={"redis_url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"})
    out = run_atp(s, "run")
    assert out.returncode != 0 and "cannot reach Redis at redis://:***@127.0.0.1" in out.stderr + out.stdout
    assert REDIS_PASSWORD not in out.stdout + out.stderr


def test_a_kafka_password_is_not_printed_when_the_broker_cannot_be_reached(settings):
    s = settings.model_copy(update={
        "kafka_bootstrap": f"127.0.0.1:{free_port()}", "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "SCRAM-SHA-256", "kafka_sasl_username": "atp", "kafka_sasl_password": KAFKA_PASSWORD})
    for args in (["run"], ["dlq", "list"], ["topics", "create"]):
        out = run_atp(s, *args)
        assert out.returncode != 0, args
        assert KAFKA_PASSWORD not in out.stdout + out.stderr, args


def test_serve_and_run_with_a_password_protected_redis_never_print_it(settings, rclient, start, tmp_path):
    rclient.config_set("requirepass", REDIS_PASSWORD)
    try:
        authed = redis.Redis.from_url(settings.redis_url, password=REDIS_PASSWORD)
        port = settings.redis_url.rsplit(":", 1)[1].split("/")[0]
        s = settings.model_copy(update={"redis_url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"})
        flow, api = start("run", s=s), start("serve", s=s)
        base = f"http://{s.api_host}:{s.api_port}"
        wait_until(lambda: get_json(f"{base}/healthz") is not None, 30, "the API", api)
        wait_until(lambda: authed.exists(f"{s.redis_key_prefix}:meta"), 60, "the dataflow's keyspace", flow)
        # The keyspace exists before the start line is written (the start reads the recovery store first).
        start_line = wait_until(lambda: next((line for line in flow.log.read_text().splitlines()
                                              if "dataflow starting" in line), None), 30, "the start line", flow)
        flow.stop(), api.stop()
        assert "redis=redis://:***@127.0.0.1" in start_line  # its start line names Redis, redacted
        for child in (flow, api):
            assert REDIS_PASSWORD not in child.log.read_text(), child.args
    finally:
        redis.Redis.from_url(settings.redis_url, password=REDIS_PASSWORD).config_set("requirepass", "")
