"""One place builds every Kafka client's configuration, and no secret is ever printed."""

from __future__ import annotations

import pytest

from core import redact
from core.config import child_environ, load_settings
from core.errors import ConfigError
from core.kafka_config import client_config, security_config
from core.kafka_logs import LOGGER

SECRET = "s3cr3t-Pa55"
SCRAM = {"ATP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "ATP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
         "ATP_KAFKA_SASL_USERNAME": "atp"}


def test_sasl_over_tls_reaches_the_client_config_and_nothing_prints_the_password(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = load_settings({**SCRAM, "ATP_KAFKA_SASL_PASSWORD": SECRET, "ATP_KAFKA_SSL_CA_FILE": str(ca)})
    conf = client_config(s, {"group.id": "g"})
    assert conf == {"bootstrap.servers": s.kafka_bootstrap, "security.protocol": "SASL_SSL",
                    "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "atp", "sasl.password": SECRET,
                    "ssl.ca.location": str(ca), "group.id": "g", "logger": LOGGER}
    assert SECRET not in repr(s) and SECRET not in str(s)
    assert child_environ(s, {})["ATP_KAFKA_SASL_PASSWORD"] == SECRET  # children get the value itself


def test_the_password_can_come_from_a_file_and_later_sources_win(tmp_path):
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n")
    props = tmp_path / "client.properties"
    props.write_text("# tuning\nsocket.keepalive.enable=true\nclient.id=from-file\n")
    s = load_settings({**SCRAM, "ATP_KAFKA_SASL_PASSWORD_FILE": str(secret_file),
                       "ATP_KAFKA_CONFIG_FILE": str(props), "ATP_KAFKA_CONFIG": '{"client.id": "from-table"}'})
    conf = security_config(s)
    assert conf["sasl.password"] == SECRET and conf["client.id"] == "from-table"
    assert conf["socket.keepalive.enable"] == "true"


@pytest.mark.parametrize("env, says", [
    ({"ATP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs ATP_KAFKA_SASL_MECHANISM"),
    ({"ATP_KAFKA_SASL_MECHANISM": "PLAIN"}, "need ATP_KAFKA_SECURITY_PROTOCOL=SASL_SSL"),
    ({**SCRAM}, "needs ATP_KAFKA_SASL_USERNAME and ATP_KAFKA_SASL_PASSWORD"),
    ({**SCRAM, "ATP_KAFKA_SASL_PASSWORD": SECRET, "ATP_KAFKA_SASL_PASSWORD_FILE": "/etc/hostname"}, "not both"),
    ({"ATP_KAFKA_SECURITY_PROTOCOL": "SSL", "ATP_KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"}, "no such file"),
    ({"ATP_KAFKA_CONFIG": '{"sasl.password": "x"}'}, "use the ATP_KAFKA_* settings"),
    ({"ATP_KAFKA_CONFIG": '{"bootstrap.servers": "x:1"}'}, "use the ATP_KAFKA_* settings"),
    ({"ATP_KAFKA_CONFIG": '{"metadata.broker.list": "x:1"}'}, "use the ATP_KAFKA_* settings"),  # an alias
    ({"ATP_KAFKA_SSL_CA_FILE": "/etc/hostname"}, r"would be ignored \(no TLS\)"),
    ({"ATP_KAFKA_SASL_PASSWORD": SECRET}, "need ATP_KAFKA_SECURITY_PROTOCOL=SASL_SSL"),
    ({"ATP_KAFKA_CONFIG": '{"client.id": null}'}, "takes a string, number or boolean"),
])
def test_a_security_configuration_that_cannot_work_fails_fast_with_what_to_do(env, says):
    with pytest.raises(ConfigError, match=says if "\\(" in says else says.replace("*", r"\*")):
        load_settings(env)


def test_an_invalid_secret_setting_is_not_echoed_in_the_error():
    with pytest.raises(ConfigError) as err:
        load_settings({"ATP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "ATP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                       "ATP_KAFKA_SASL_USERNAME": "atp", "ATP_KAFKA_CONFIG": f"not a table {SECRET}"})
    assert SECRET not in str(err.value) and "(hidden)" in str(err.value)


def test_urls_and_messages_lose_their_passwords():
    assert redact.url(f"redis://:{SECRET}@10.0.0.5:6379/0") == "redis://:***@10.0.0.5:6379/0"
    assert redact.url(f"rediss://atp:{SECRET}@cache.internal/1") == "rediss://atp:***@cache.internal/1"
    assert redact.url("redis://127.0.0.1:16379/0") == "redis://127.0.0.1:16379/0"
    assert SECRET not in redact.text(f"Error 111 connecting to redis://u:{SECRET}@h:1. Refused.")
    assert redact.text(f"auth {SECRET} failed", (SECRET,)) == "auth *** failed"


def test_a_toml_table_of_dotted_keys_is_flattened(tmp_path):
    cfg = tmp_path / "atp.toml"
    cfg.write_text("[kafka_config]\nsocket.keepalive.enable = true\n'client.id' = 'atp'\n")
    s = load_settings({"ATP_CONFIG": str(cfg)})
    assert s.kafka_config == {"socket.keepalive.enable": "true", "client.id": "atp"}
    assert "client.id" not in repr(s)  # the table may hold secrets: not in the settings' repr


def test_an_unknown_setting_or_a_url_is_not_echoed_with_its_secret():
    with pytest.raises(ConfigError) as err:
        load_settings({"ATP_KAFKA_SASL_PASWORD": SECRET, "ATP_REDIS_URL": f"valkey://:{SECRET}@cache:6379/0"})
    assert SECRET not in str(err.value) and "ATP_KAFKA_SASL_PASWORD=(hidden)" in str(err.value)


def test_every_form_of_a_url_password_is_redacted():
    for raw, shown in ((f"unix:///run/redis.sock?db=0&password={SECRET}", "unix:///run/redis.sock?db=0&password=***"),
                       (f"redis://u:{SECRET}@[::1]:6379/0", "redis://u:***@[::1]:6379/0"),
                       (f"redis://u:ab/{SECRET}@h:1/0", "redis://u:***@h:1/0"),
                       (f"redis://u:a@{SECRET}@h:1/0", "redis://u:***@h:1/0")):
        assert redact.url(raw) == shown, raw
    assert SECRET not in redact.text(f"connecting to redis://u:a@b/{SECRET}@h:1 failed")
