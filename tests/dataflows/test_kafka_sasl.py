"""Every Kafka client over SASL_SSL (SCRAM-SHA-512 over TLS) against a real Apache Kafka whose only
client listener is SASL_SSL: produce, run, the dead-letter commands and a replay work, a wrong
password and an untrusted certificate fail with what to check, and no password is printed."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from core.config import load_settings
from dataflows.kafka.producer import EventProducer
from projection.keys import READY, generations_of, keyspace_of
from sandbox.child import Child
from sandbox.stack import Stack, free_port
from tests.builders import wms
from tests.conftest import BROKER, processed, run_atp, wait_until

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(BROKER != "kafka", reason="needs a real Apache Kafka: the Kafka tier runs it")]


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A private stack whose broker listens with SASL_SSL, and the clients' settings for it."""
    state = tmp_path_factory.mktemp("sasl")
    base = load_settings({}, state_dir=state, stack_broker="kafka", stack_kafka_sasl=True,
                         kafka_bootstrap=f"127.0.0.1:{free_port()}", redis_url=f"redis://127.0.0.1:{free_port()}/0",
                         api_port=free_port(), metrics_port=free_port(), snapshot_interval_s=1.0)
    stack = Stack(base)
    started = stack.up()
    env = dict(kv.split("=", 1) for kv in started["clients"].split())
    clients = load_settings(env, **{k: v for k, v in base.model_dump(exclude_none=True).items()
                                    if k.startswith(("state_dir", "kafka_bootstrap", "redis_url", "api_port",
                                                     "metrics_port", "snapshot_interval_s"))})
    yield clients, env
    stack.down()



def test_produce_run_dlq_and_replay_over_sasl_ssl(secured, tmp_path):
    s, env = secured
    password = Path(env["ATP_KAFKA_SASL_PASSWORD_FILE"]).read_text().strip()
    producer = EventProducer(s)
    for rec in (wms("RECEIPT", qty=12)[1], wms("SHIP", qty=2, order_line_id="L1", t=1000)[1]):
        producer.send("wms", rec)
    producer.send_raw(s.topic_wms, b"SKU-1@DC-01", b"not avro")
    assert producer.flush() == 0 and producer.failed == 0
    flow = Child(["run"], s, tmp_path / "run.log").start()
    try:
        wait_until(lambda: processed(s) >= 3, 90, "three records processed", flow)
        r = redis.Redis.from_url(s.redis_url)
        pos = wait_until(lambda: r.hgetall(keyspace_of(s).position("SKU-1", "DC-01")) or None, 30, "the position", flow)
        assert pos[b"available_qty"] == b"10"
        listed = run_atp(s, "dlq", "list")
        assert listed.returncode == 0 and "bad_magic" in listed.stdout, listed.stdout + listed.stderr
    finally:
        flow.stop()
    replay = run_atp(s, "replay", "over-tls", "--metrics-port", "0")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert r.hget(generations_of(s).keyspace("over-tls").meta, "state") == READY.encode()
    for out in (flow.log.read_text(), listed.stdout + listed.stderr, replay.stdout + replay.stderr):
        assert password not in out


def test_a_wrong_password_or_an_untrusted_certificate_says_what_to_check(secured, tmp_path):
    s, _ = secured
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    for args in (["run"], ["dlq", "list"]):
        out = run_atp(s.model_copy(update={"kafka_sasl_password_file": wrong}), *args)
        assert out.returncode != 0 and "refused the credentials of user 'atp' (SCRAM-SHA-512)" in out.stderr, out.stderr
        assert "not-the-password" not in out.stdout + out.stderr
    system_cas = s.model_copy(update={"kafka_ssl_ca_file": "/etc/ssl/certs/ca-certificates.crt"})
    out = run_atp(system_cas, "run")
    assert out.returncode != 0 and "TLS handshake" in out.stderr and "ATP_KAFKA_SSL_CA_FILE" in out.stderr
