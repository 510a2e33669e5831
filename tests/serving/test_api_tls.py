"""The API serves HTTPS itself when given a certificate (ATP_API_TLS_CERT_FILE / _KEY_FILE)."""

from __future__ import annotations

import ssl

import httpx
import pytest

from tests.conftest import run_atp, wait_until
from tests.tls import make_certs

pytestmark = [pytest.mark.integration, pytest.mark.one_broker]


def test_the_api_serves_https_and_refuses_plain_http(settings, start, tmp_path):
    certs = make_certs(tmp_path / "tls")
    s = settings.model_copy(update={"api_tls_cert_file": certs.cert, "api_tls_key_file": certs.key})
    api = start("serve", s=s)

    def healthy() -> bool:
        try:
            return httpx.get(f"https://127.0.0.1:{s.api_port}/healthz", verify=ssl.create_default_context(cafile=str(certs.ca)), timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 30, "the API over HTTPS", api)
    with pytest.raises(httpx.HTTPError):  # a plain-HTTP client gets no answer from a TLS port
        httpx.get(f"http://127.0.0.1:{s.api_port}/healthz", timeout=2)
    with pytest.raises(httpx.ConnectError):  # and a client that does not trust the CA refuses the server
        httpx.get(f"https://127.0.0.1:{s.api_port}/healthz", timeout=2)


def test_a_certificate_without_its_key_is_refused_at_start(settings, tmp_path):
    certs = make_certs(tmp_path / "tls")
    env_settings = settings.model_copy(update={"api_tls_cert_file": certs.cert})
    r = run_atp(env_settings, "serve", timeout=60)
    assert r.returncode == 2 and "ATP_API_TLS_CERT_FILE and ATP_API_TLS_KEY_FILE go together" in r.stderr
