"""docker-compose.yml cannot run here (no Docker engine): check it agrees with the code instead."""

from __future__ import annotations

from pathlib import Path

import yaml

from core.config import Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
KNOWN_ENV = {env_name(f) for f in Settings.model_fields}


def atp_env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items() if k.startswith("ATP_")}


def test_every_atp_variable_is_a_real_setting_and_values_validate(tmp_path):
    secret = tmp_path / "redis_password"
    secret.write_text("example\n")
    for name in ("topics", "dataflow", "api", "api-keys"):
        env = atp_env(name)
        assert set(env) <= KNOWN_ENV, (name, set(env) - KNOWN_ENV)
        assert env["ATP_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
        assert "redis_password" in SERVICES[name]["secrets"]  # the file the setting names is there
        load_settings({**env, "ATP_REDIS_PASSWORD_FILE": str(secret)})  # raises ConfigError on a bad value


def test_services_are_wired_to_each_other():
    assert {"kafka", "redis", "topics", "dataflow", "api", "prometheus"} <= set(SERVICES)
    for name in ("topics", "dataflow"):
        assert atp_env(name)["ATP_KAFKA_BOOTSTRAP"] == "kafka:9092"
    for name in ("dataflow", "api"):
        assert atp_env(name)["ATP_REDIS_URL"] == "redis://redis:6379/0"
    assert SERVICES["dataflow"]["command"] == ["run"] and SERVICES["api"]["command"] == ["serve"]
    assert SERVICES["topics"]["command"] == ["topics", "create"]
    assert SERVICES["dataflow"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_kafka_is_the_official_image_in_kraft_mode():
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    # The version the Kafka test tier runs (deploy/kafka/pom.xml), to the minor version at least.
    from sandbox.kafka_broker import pom_version

    image_version = kafka["image"].split(":", 1)[1]
    assert image_version.split(".")[:2] == pom_version().split(".")[:2], (image_version, pom_version())
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # topics come from `atp topics create`


def test_ports_match_the_code_defaults_on_the_hosts_loopback_only():
    defaults = load_settings({})
    assert f"127.0.0.1:{defaults.api_port}:{atp_env('api')['ATP_API_PORT']}" in SERVICES["api"]["ports"]
    assert (f"127.0.0.1:{defaults.metrics_port}:{atp_env('dataflow')['ATP_METRICS_PORT']}"
            in SERVICES["dataflow"]["ports"])
    assert f"127.0.0.1:{defaults.kafka_bootstrap.rsplit(':', 1)[1]}:19092" in SERVICES["kafka"]["ports"]
    redis_port = defaults.redis_url.rsplit(":", 1)[1].split("/")[0]
    assert f"127.0.0.1:{redis_port}:6379" in SERVICES["redis"]["ports"]
    published = [p for s in SERVICES.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published


def test_redis_needs_a_password_and_the_api_a_key():
    redis_cmd = " ".join(SERVICES["redis"]["command"])
    assert "requirepass" in redis_cmd and "/run/secrets/redis_password" in redis_cmd
    assert COMPOSE["secrets"]["redis_password"] == {"environment": "REDIS_PASSWORD"}
    assert "--requirepass" not in redis_cmd  # never on a command line, where `ps` would show it
    assert "${REDIS_PASSWORD" not in (ROOT / "docker-compose.yml").read_text()  # nor interpolated into the file
    for name in ("dataflow", "api"):
        assert "ATP_API_AUTH" not in atp_env(name) or atp_env(name)["ATP_API_AUTH"] == "required"
    assert load_settings({}).api_auth == "required"
    # Prometheus reads the API's /metrics with the metrics:read key the api-keys service makes.
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    api_job = next(j for j in prom["scrape_configs"] if j["job_name"] == "atp-api")
    token_dir = "/etc/prometheus/secrets"
    assert api_job["authorization"]["credentials_file"].startswith(token_dir + "/")
    assert f"prometheus-token:{token_dir}:ro" in SERVICES["prometheus"]["volumes"]
    keys = SERVICES["api-keys"]
    assert "prometheus-token:/tokens" in keys["volumes"] and "--scope metrics:read" in keys["command"][0]
    assert "api-keys:/data" in keys["volumes"] and "api-keys:/data" in SERVICES["api"]["volumes"]
    assert atp_env("api")["ATP_API_HOST"] == "0.0.0.0" and atp_env("dataflow")["ATP_METRICS_HOST"] == "0.0.0.0"


def test_prometheus_scrapes_both_metrics_endpoints():
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"dataflow:{atp_env('dataflow')['ATP_METRICS_PORT']}", f"api:{atp_env('api')['ATP_API_PORT']}"}
    mount = SERVICES["prometheus"]["volumes"][0].split(":")[0]
    assert (ROOT / mount).resolve() == (ROOT / "deploy" / "prometheus.yml").resolve()


def test_the_image_is_built_from_the_repository_dockerfile():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in ("topics", "dataflow", "api"):
        assert SERVICES[name]["build"] == "."
    assert 'ENTRYPOINT ["atp"]' in dockerfile
    for package in ("atp", "schemas", "state", "dataflows", "serving"):
        assert f"COPY {package} ./{package}" in dockerfile
