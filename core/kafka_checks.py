"""Checks of the Kafka security settings, run by the settings validator (so they fail at the edge).

Kept apart from ``core.kafka_config`` (which builds client configurations from validated settings)
so that the settings can call them without a circle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The properties the settings own: in ATP_KAFKA_CONFIG or the file they would be ambiguous.
OWNED = ("bootstrap.servers", "metadata.broker.list", "security.protocol", "sasl.mechanism", "sasl.mechanisms",
         "sasl.username", "sasl.password", "ssl.ca.location", "ssl.ca.pem", "ssl.certificate.location",
         "ssl.certificate.pem", "ssl.key.location", "ssl.key.pem")


def read_properties(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"ATP_KAFKA_CONFIG_FILE {path}:{n}: not a key=value line")
        out[key.strip()] = value.strip()
    return out


def check_security(settings: Any) -> None:
    """Fail fast (at the edge, as a settings error) on a security configuration that cannot work."""
    s = settings
    sasl = s.kafka_security_protocol.startswith("SASL")
    if s.kafka_sasl_password is not None and s.kafka_sasl_password_file is not None:
        raise ValueError("set ATP_KAFKA_SASL_PASSWORD or ATP_KAFKA_SASL_PASSWORD_FILE, not both")
    if sasl and s.kafka_sasl_mechanism is None:
        raise ValueError(f"ATP_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol} needs ATP_KAFKA_SASL_MECHANISM "
                         "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)")
    if not sasl and (s.kafka_sasl_mechanism or s.kafka_sasl_username or s.kafka_sasl_password is not None
                     or s.kafka_sasl_password_file is not None):
        raise ValueError("ATP_KAFKA_SASL_* settings need ATP_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)")
    if s.stack_kafka_sasl and s.stack_broker != "kafka":
        raise ValueError("ATP_STACK_KAFKA_SASL needs ATP_STACK_BROKER=kafka (the embedded tansu has no SASL)")
    tls = s.kafka_security_protocol in ("SSL", "SASL_SSL")
    if not tls and (s.kafka_ssl_ca_file or s.kafka_ssl_cert_file or s.kafka_ssl_key_file):
        raise ValueError(f"ATP_KAFKA_SSL_* settings with ATP_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol} "
                         "would be ignored (no TLS): set it to SSL or SASL_SSL")
    if sasl and s.kafka_sasl_mechanism != "OAUTHBEARER" and (
            s.kafka_sasl_username is None or (s.kafka_sasl_password is None and s.kafka_sasl_password_file is None)):
        raise ValueError(f"SASL {s.kafka_sasl_mechanism} needs ATP_KAFKA_SASL_USERNAME and ATP_KAFKA_SASL_PASSWORD "
                         "(or ATP_KAFKA_SASL_PASSWORD_FILE)")
    for name in ("kafka_sasl_password_file", "kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file",
                 "kafka_config_file"):
        path = getattr(s, name)
        if path is not None and not Path(path).is_file():
            raise ValueError(f"ATP_{name.upper()}={path}: no such file")
    if s.kafka_sasl_password_file is not None and not Path(s.kafka_sasl_password_file).read_text().strip():
        raise ValueError(f"ATP_KAFKA_SASL_PASSWORD_FILE={s.kafka_sasl_password_file} is empty")
    if (s.kafka_ssl_cert_file is None) != (s.kafka_ssl_key_file is None):
        raise ValueError("a client certificate needs both ATP_KAFKA_SSL_CERT_FILE and ATP_KAFKA_SSL_KEY_FILE")
    extra = dict(read_properties(s.kafka_config_file)) if s.kafka_config_file is not None else {}
    extra.update(s.kafka_config)
    owned = sorted(k for k in extra if k in OWNED)
    if owned:
        raise ValueError(f"{', '.join(owned)} in ATP_KAFKA_CONFIG or ATP_KAFKA_CONFIG_FILE: use the ATP_KAFKA_* "
                         "settings for these (ATP_KAFKA_BOOTSTRAP, ATP_KAFKA_SECURITY_PROTOCOL, ATP_KAFKA_SASL_*, "
                         "ATP_KAFKA_SSL_*)")
