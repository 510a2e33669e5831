"""The one place that builds a Kafka client's configuration: bootstrap servers, security, overrides.

Every client the project makes (the Bytewax source and sink, producers, admin clients, the CLI's
readers, replay, chaos, the load test) takes its configuration from ``client_config``, so a
secured cluster (TLS, SASL PLAIN/SCRAM/OAUTHBEARER) needs its settings once:

- ``ATP_KAFKA_CONFIG_FILE``: a librdkafka properties file (``key=value`` lines, ``#`` comments);
- ``ATP_KAFKA_CONFIG``: a table of librdkafka properties, which wins over the file;
- the ``ATP_KAFKA_SECURITY_PROTOCOL``, ``ATP_KAFKA_SASL_*`` and ``ATP_KAFKA_SSL_*`` settings, which
  win over both.

Secrets (the SASL password, from the setting or ``ATP_KAFKA_SASL_PASSWORD_FILE``) are read here and
go only into the client configuration, which is never logged.

Every configuration also carries ``logger``: librdkafka's own log lines go through the project's
logging, each message at most once per 30 s (``core.kafka_logs``), instead of straight to stderr.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core import redact
from core.config import Settings
from core.kafka_checks import read_properties
from core.kafka_logs import LOGGER

# A client configuration as confluent-kafka takes it: strings, numbers, booleans, callbacks
# (``error_cb``, ``stats_cb``) and the ``logger``. Values are Any because its stubs type each client's dict differently
# (the admin client's leaves the callbacks out).
ClientConfig = dict[str, Any]


def _password(settings: Settings) -> str | None:
    if settings.kafka_sasl_password is not None:
        return settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_sasl_password_file is not None:
        return settings.kafka_sasl_password_file.read_text().rstrip("\r\n")
    return None


def without_security(settings: Settings, bootstrap: str) -> Settings:
    """``settings`` for a PLAINTEXT listener at ``bootstrap`` (the local stack's internal one)."""
    cleared = dict.fromkeys(("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password", "kafka_sasl_password_file", "kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file"))
    return settings.model_copy(update={"kafka_bootstrap": bootstrap, "kafka_security_protocol": "PLAINTEXT",
                                       **cleared})


def security_config(settings: Settings) -> ClientConfig:
    """Everything but the bootstrap servers (what Bytewax's connectors take as ``add_config``): the
    properties and security settings, and the ``logger`` librdkafka's lines go to."""
    s = settings
    conf: ClientConfig = read_properties(s.kafka_config_file) if s.kafka_config_file is not None else {}
    conf.update({k: str(v) for k, v in s.kafka_config.items()})
    if s.kafka_security_protocol != "PLAINTEXT":
        conf["security.protocol"] = s.kafka_security_protocol
    if s.kafka_sasl_mechanism is not None:
        conf["sasl.mechanism"] = s.kafka_sasl_mechanism
    if s.kafka_sasl_username is not None:
        conf["sasl.username"] = s.kafka_sasl_username
    password = _password(s)
    if password is not None:
        conf["sasl.password"] = password
    for name, key in (("kafka_ssl_ca_file", "ssl.ca.location"), ("kafka_ssl_cert_file", "ssl.certificate.location"),
                      ("kafka_ssl_key_file", "ssl.key.location")):
        if getattr(s, name) is not None:
            conf[key] = str(getattr(s, name))
    conf["logger"] = LOGGER
    return conf


def client_config(settings: Settings, extra: Mapping[str, Any] | None = None) -> ClientConfig:
    """A full client configuration: bootstrap servers, security, then ``extra`` (the client's own)."""
    conf: ClientConfig = {"bootstrap.servers": settings.kafka_bootstrap, **security_config(settings)}
    if extra:
        conf.update(extra)
    return conf


def unreachable(bootstrap: str, why: str) -> str:
    """The line that says Kafka cannot be reached at ``bootstrap`` (a password in it hidden), and what to do."""
    return (f"cannot reach Kafka at {redact.text(bootstrap)} ({why}); start the local stack with `atp stack up` "
            "or set ATP_KAFKA_BOOTSTRAP")


def metadata(settings: Settings, timeout_s: float = 10.0) -> object:
    """The cluster's metadata, or a StackError that says why not in words an operator can act on
    (a refused password or certificate rather than librdkafka's "transport failure")."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    from core.errors import StackError

    seen: list[KafkaError] = []
    conf = client_config(settings, {"error_cb": seen.append, "log_level": 0})
    try:
        client = AdminClient(conf)
    except KafkaException as exc:  # a property librdkafka refuses (ATP_KAFKA_CONFIG)
        raise StackError(f"the Kafka client configuration is refused: {exc.args[0].str()}; check ATP_KAFKA_CONFIG "
                         "and ATP_KAFKA_CONFIG_FILE") from None
    try:
        return client.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        client.poll(0.5)  # serves the error callbacks: what went wrong on the wire
        codes = {e.code() for e in seen}
        who = f"user {settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism})"
        at = redact.text(settings.kafka_bootstrap)
        if codes & {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}:
            why = (f"Kafka at {at} refused the credentials of {who}: check "
                   "ATP_KAFKA_SASL_USERNAME and ATP_KAFKA_SASL_PASSWORD (or its _FILE)")
        elif codes & {KafkaError._SSL}:
            why = (f"the TLS handshake with Kafka at {at} failed "
                   f"({next(e.str() for e in seen if e.code() == KafkaError._SSL)}): check ATP_KAFKA_SSL_CA_FILE "
                   "and that the broker's listener is SSL or SASL_SSL")
        else:
            why = unreachable(settings.kafka_bootstrap, f"no answer within {timeout_s:.0f} s: {exc.args[0].str()}")
        raise StackError(why) from None
