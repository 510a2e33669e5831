"""Redis over TLS with an ACL user, for the dataflow's sink, the API and the CLI: a redis-server
started here with only a TLS port, client certificates required and the default user off."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.config import Settings
from dataflows.kafka.producer import EventProducer
from sandbox.stack import free_port
from tests.builders import wms
from tests.conftest import get_json, run_atp, send_events, wait_until
from tests.tls import Certs, make_certs

pytestmark = pytest.mark.integration
PASSWORD = "tls-acl-secret-4711"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Certs]]:
    certs = make_certs(tmp_path / "tls")
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key), "--tls-ca-cert-file", str(certs.ca),
         "--tls-auth-clients", "yes", "--save", "", "--appendonly", "no",
         "--user", "default", "off", "--user", "atp", "on", f">{PASSWORD}", "~*", "&*", "+@all"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(certs.ca),
                         ssl_certfile=str(certs.client_cert), ssl_keyfile=str(certs.client_key),
                         username="atp", password=PASSWORD, socket_timeout=2)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.1)
    yield port, certs
    proc.kill()
    proc.wait()


def _secured(settings: Settings, port: int, certs: Certs, tmp_path: Path, password: str = PASSWORD) -> Settings:
    secret = tmp_path / "redis-password"
    secret.write_text(password + "\n")
    return settings.model_copy(update={
        "redis_url": f"rediss://atp@127.0.0.1:{port}/0", "redis_password_file": secret,
        "redis_tls_ca_file": certs.ca, "redis_tls_cert_file": certs.client_cert,
        "redis_tls_key_file": certs.client_key})


def test_the_dataflow_the_api_and_the_cli_over_tls_with_an_acl_user(settings, tls_redis, start, tmp_path):
    port, certs = tls_redis
    s = _secured(settings, port, certs, tmp_path)
    flow, api = start("run", s=s), start("serve", s=s)
    send_events(EventProducer(s), [wms("RECEIPT", qty=25)])
    base = f"http://{s.api_host}:{s.api_port}"
    body = wait_until(lambda: get_json(f"{base}/v1/availability/SKU-1/DC-01"), 60, "the position over HTTP", flow)
    assert body["available_qty"] == 25
    listed = run_atp(s, "generation", "list")
    assert listed.returncode == 0 and "default" in listed.stdout, listed.stderr
    for child in (flow, api):
        assert PASSWORD not in child.log.read_text()


def test_a_wrong_password_or_no_client_certificate_fails_clearly(settings, tls_redis, tmp_path):
    port, certs = tls_redis
    wrong = _secured(settings, port, certs, tmp_path, password="not-the-password")
    r = run_atp(wrong, "run", timeout=60)
    assert r.returncode == 2 and "cannot reach Redis at rediss://atp@127.0.0.1" in r.stderr
    assert "not-the-password" not in r.stdout + r.stderr and "Traceback" not in r.stderr
    no_cert = _secured(settings, port, certs, tmp_path).model_copy(
        update={"redis_tls_cert_file": None, "redis_tls_key_file": None})
    r = run_atp(no_cert, "run", timeout=60)
    assert r.returncode == 2 and "cannot reach Redis" in r.stderr and PASSWORD not in r.stdout + r.stderr


def test_tls_files_without_rediss_are_refused(settings, tmp_path):
    certs = make_certs(tmp_path / "tls")
    r = run_atp(settings.model_copy(update={"redis_tls_ca_file": certs.ca}), "run", timeout=60)
    assert r.returncode == 2 and "need a rediss:// ATP_REDIS_URL" in r.stderr
