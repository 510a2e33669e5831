"""Settings, validated once at the edge. Inner code takes explicit parameters, never the environment.

Every field is the environment variable ``ATP_<FIELD>`` (e.g. ``ATP_REDIS_URL``); an optional TOML
file named by ``ATP_CONFIG`` supplies defaults that the environment overrides.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from core import redact
from core.contract import (
    DEFAULT_GENERATION,
    DEFAULT_SKEW_MS,
    EARLIEST_MS,
    FORMULA_VERSIONS,
    GENERATION_PATTERN,
    ID_RE,
    MAX_SUMMED_KEYS,
)
from core.errors import ConfigError
from core.kafka_checks import check_security

ENV_PREFIX = "ATP_"
SECRET_FIELDS = frozenset({"kafka_sasl_password", "kafka_config"})  # never echoed in an error

Action = Literal["alert", "rebase"]


class DriftLevels(BaseModel):
    """A location's drift thresholds; an unset figure falls back to the global ``drift_*`` setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warning_units: int | None = Field(None, ge=0)
    warning_pct: float | None = Field(None, ge=0)
    critical_units: int | None = Field(None, ge=0)
    critical_pct: float | None = Field(None, ge=0)


class Settings(BaseSettings):
    """All of atp-stream's settings; see docs/configuration.md for the table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    state_dir: Path = Field(Path(".atp"), description="Where the local stack and the dataflow keep files.")
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers, host:port[,host:port].")
    stack_broker: Literal["tansu", "kafka"] = Field(
        "tansu", description="The local stack's broker (`atp stack up`): tansu, embedded and in memory, or a real "
                             "single-node Apache Kafka (KRaft; needs Java and Maven, or ATP_KAFKA_HOME).")
    stack_kafka_sasl: bool = Field(
        False, description="The kafka stack broker listens with SASL_SSL (SCRAM-SHA-512 user `atp`, a certificate "
                           "made at first start) instead of PLAINTEXT; `atp stack up` prints the client settings.")
    kafka_home: Path | None = Field(
        None, description="An unpacked Apache Kafka distribution whose libs/ the kafka stack broker runs; unset: "
                          "the jars deploy/kafka/pom.xml pins, fetched once with Maven into the state dir.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every Kafka client connects (librdkafka security.protocol).")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="SASL mechanism, with ATP_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT).")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = Field(None, description="Never printed; or ATP_KAFKA_SASL_PASSWORD_FILE.")
    kafka_sasl_password_file: Path | None = Field(None, description="A file holding the SASL password (a Docker secret).")
    kafka_ssl_ca_file: Path | None = Field(None, description="CA certificate(s) (PEM) that signed the brokers' certificates.")
    kafka_ssl_cert_file: Path | None = Field(None, description="Client certificate (PEM), for brokers that ask for one.")
    kafka_ssl_key_file: Path | None = Field(None, description="Client private key (PEM).")
    kafka_config: dict[str, str] = Field(
        # repr=False: it may hold secrets (ssl.key.password, an OAUTHBEARER client secret).
        default_factory=dict, repr=False,
        description="Any other librdkafka property for every Kafka client, as a JSON/TOML table.")
    kafka_config_file: Path | None = Field(
        None, description="A librdkafka properties file (key=value lines) for every Kafka client; ATP_KAFKA_CONFIG "
                          "and the settings above win over it.")
    redis_url: str = Field("redis://127.0.0.1:16379/0", description="Redis URL for positions.")
    redis_cluster: bool = Field(False, description="ATP_REDIS_URL names one node of a Redis Cluster (db 0).")
    redis_password_file: Path | None = Field(
        None, description="A file holding the Redis password (a Docker or Kubernetes secret); a password in "
                          "ATP_REDIS_URL wins over it.")
    redis_tls_ca_file: Path | None = Field(None, description="The CA that signed Redis's certificate (rediss://).")
    redis_tls_cert_file: Path | None = Field(None, description="A client certificate for Redis (rediss://).")
    redis_tls_key_file: Path | None = Field(None, description="The client certificate's key.")
    redis_key_prefix: str = Field("atp", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    generation: str = Field(
        DEFAULT_GENERATION, pattern=GENERATION_PATTERN,
        description="The keyspace generation this dataflow writes (see `atp replay`); the API serves the current one.")
    formula_version: int | None = Field(
        None, description="ATP formula of a new generation (1 or 2; unset: 1). An existing generation keeps its own.")
    redis_retry_s: float = Field(
        120.0, gt=0, le=3600, description="How long the dataflow retries an unreachable Redis before it stops.")
    schema_registry_url: str | None = Field(None, description="Confluent schema registry; unset = single-object.")
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=1, le=65535)
    api_workers: int = Field(1, ge=1, le=64, description="API processes sharing the port; metrics are summed over them.")
    api_auth: Literal["required", "disabled"] = Field(
        "required", description="required: every read needs an API key (`atp keys create`); disabled: no keys, "
                                "allowed only when the API binds a loopback address.")
    api_keys_file: Path | None = Field(
        None, description="The API keys (hashes only; `atp keys` manages it). Unset: <state_dir>/api-keys.json.")
    api_key_secret_file: Path | None = Field(
        None, description="The secret the key hashes are keyed with (made by `atp keys create` when missing). "
                          "Unset: <state_dir>/api-key-secret. Keep it apart from the keys file in production.")
    api_default_rate: float = Field(
        50.0, ge=0, le=1_000_000, description="Requests per second of a key created without --rate (0: unlimited).")
    api_access_log: bool = Field(True, description="One structured log line per API request (never the token).")
    api_docs: bool = Field(True, description="Serve /docs (local assets) and /openapi.json.")
    api_tls_cert_file: Path | None = Field(None, description="Serve HTTPS with this certificate (chain).")
    api_tls_key_file: Path | None = Field(None, description="The key of ATP_API_TLS_CERT_FILE.")
    ready_heartbeat_s: float = Field(
        15.0, gt=0, le=3600,
        description="/readyz answers 503 dataflow_stale when the running dataflow's heartbeat is older than this.")
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=0, le=65535, description="Dataflow metrics port; 0 disables.")
    topic_partitions: int = Field(4, ge=1, le=1024)
    topic_wms: str = "wms.inventory.v1"
    topic_orders: str = "oms.order-lines.v1"
    topic_snapshots: str = "erp.inventory-snapshots.v1"
    topic_availability: str = "atp.availability.v1"
    topic_dead_letter: str = "atp.dead-letter.v1"
    topic_drift_alerts: str = "atp.drift-alerts.v1"
    topic_thresholds: str = "atp.availability-thresholds.v1"
    topic_controls: str = "atp.controls.v1"
    workers: int = Field(1, ge=1, le=64, description="Bytewax worker threads in this process.")
    cluster_addresses: str | None = Field(
        None, description="Cluster mode: host:port of every dataflow process, in process-id order, separated by ';' "
                          "(the same value on every process). Unset: one process.")
    process_id: int | None = Field(
        None, ge=0, lt=1024, description="Cluster mode: this process's index in ATP_CLUSTER_ADDRESSES (0 coordinates).")
    recovery: bool = True
    snapshot_interval_s: float = Field(5.0, gt=0, le=3600)
    crash_loop_restarts: int = Field(
        3, ge=2, le=100,
        description="Crashes of the process at the same input position after which the record it crashes on is "
                    "quarantined to the dead-letter topic (crash_loop); see docs/crash-loop.md.")
    malloc_trim_s: float = Field(
        1.0, ge=0, le=3600,
        description="How often the dataflow hands the heap's free pages back to the OS (glibc malloc_trim); 0 disables.")
    dedup_window_hours: float = Field(24.0, gt=0)
    safety_stock_file: Path | None = None
    kafka_batch_size: int = Field(1000, ge=1, le=100_000)
    kafka_fetch_wait_ms: int = Field(
        100, ge=1, le=10_000,
        description="librdkafka fetch.wait.max.ms of the input consumers: the longest a fetch waits for data. "
                    "Low keeps light traffic fresh; each idle partition then costs a fetch per interval.")
    lateness_window_s: float = Field(
        900.0, gt=0, le=7 * 86400,
        description="Event-time window in which late stock changes are put in order (and snapshots can be verified).")
    max_clock_skew_s: float = Field(
        DEFAULT_SKEW_MS / 1000, ge=0, le=7 * 86400,
        description="How far ahead of this machine's clock an occurred_at or as_of may be; later ones are dead letters "
                    "(clock_skew).")
    earliest_event_time: datetime = Field(
        datetime.fromtimestamp(EARLIEST_MS / 1000, UTC),
        description="Event times before this are dead letters (clock_skew): absurd dates, not old ones (ISO-8601, UTC).")
    reconcile_delay_s: float = Field(
        2.0, ge=0, le=3600, description="How long a snapshot waits, at least, for the stock changes before its as_of.")
    reconcile_timeout_s: float = Field(
        60.0, gt=0, le=86400, description="How long a snapshot waits, at most, for the wms topic to pass its as_of.")
    wms_out_of_order_s: float = Field(
        1.0, ge=0, le=3600,
        description="How far event times may step back within a wms partition (bounded out-of-orderness): a snapshot's "
                    "past counts as read once every wms partition has been read this far past its as_of.")
    drift_warning_units: int = Field(1, ge=0)
    drift_warning_pct: float = Field(0.0, ge=0)
    drift_critical_units: int = Field(10, ge=0)
    drift_critical_pct: float = Field(10.0, ge=0)
    drift_action_erp: Action = Field("alert", description="On drift from an ERP snapshot: alert only, or rebase.")
    drift_action_wms: Action = Field("rebase", description="On drift from a WMS snapshot: rebase (WMS counts the stock).")
    drift_locations: dict[str, DriftLevels] = Field(
        default_factory=dict, description="Per-location threshold overrides (a TOML table, or JSON in the env).")
    low_stock_atp: int = Field(10, ge=0, description="Threshold feed: ATP at or below this is LOW_STOCK.")
    demand_lateness_s: float = Field(
        60.0, ge=0, le=3600, description="Allowed lateness of the per-location one-minute demand windows.")
    location_groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Location groups with a network position per SKU, e.g. EAST = [\"DC-01\", \"DC-02\"] "
                    "(a TOML table, or JSON in the env).")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _hosts(cls, v: str) -> str:
        for part in v.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{part!r} is not host:port")
        return v

    @field_validator("cluster_addresses")
    @classmethod
    def _addresses(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = [p.strip() for p in v.split(";")]
        for part in parts:
            host, sep, port = part.rpartition(":")
            if not sep or not host or "," in host or " " in host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{part!r} is not host:port; give every process as host:port, separated by ';'")
        if len(set(parts)) != len(parts):
            raise ValueError("an address is listed twice: every process needs its own host:port")
        return ";".join(parts)

    @field_validator("formula_version")
    @classmethod
    def _formula(cls, v: int | None) -> int | None:
        if v is not None and v not in FORMULA_VERSIONS:
            raise ValueError(f"unknown ATP formula; known versions: {', '.join(map(str, sorted(FORMULA_VERSIONS)))}")
        return v

    @field_validator("drift_locations", mode="before")
    @classmethod
    def _drift_locations(cls, v: Any) -> Any:
        v = _table(v, '{"DC-01": {"warning_units": 5}}')
        if isinstance(v, dict):
            for location in v:
                if not ID_RE.fullmatch(str(location)):
                    raise ValueError(f"{location!r} is not a location id")
        return v

    @field_validator("kafka_config", mode="before")
    @classmethod
    def _kafka_config(cls, v: Any) -> Any:
        v = _table(v, '{"socket.keepalive.enable": "true"}')
        if not isinstance(v, dict):
            return v
        flat: dict[str, str] = {}

        def walk(prefix: str, table: dict[str, Any]) -> None:
            for k, x in table.items():
                key = f"{prefix}{k}"
                if isinstance(x, dict):  # TOML's dotted keys (socket.keepalive.enable = true) nest
                    walk(f"{key}.", x)
                elif isinstance(x, bool):  # librdkafka takes strings; TOML gives booleans and numbers
                    flat[key] = str(x).lower()
                elif isinstance(x, (str, int, float)):
                    flat[key] = str(x)
                else:
                    raise ValueError(f"{key}: a librdkafka property takes a string, number or boolean")

        walk("", v)
        return flat

    @field_validator("location_groups", mode="before")
    @classmethod
    def _location_groups(cls, v: Any) -> Any:
        v = _table(v, '{"EAST": ["DC-01", "DC-02"]}')
        if isinstance(v, dict):
            for group, members in v.items():
                if not ID_RE.fullmatch(str(group)):
                    raise ValueError(f"group name {group!r} is not an id (letters, digits, . _ -)")
                if isinstance(members, str):
                    members = v[group] = [m.strip() for m in members.split(",")]
                if not isinstance(members, list) or not members:
                    raise ValueError(f"group {group} needs a list of locations, e.g. [\"DC-01\", \"DC-02\"]")
                bad = [m for m in members if not isinstance(m, str) or not ID_RE.fullmatch(m)]
                if bad:
                    raise ValueError(f"group {group}: {bad} are not location ids")
                if len(set(members)) != len(members):
                    raise ValueError(f"group {group} names a location twice")
                if len(members) > MAX_SUMMED_KEYS:
                    raise ValueError(f"group {group} has {len(members)} locations; at most {MAX_SUMMED_KEYS} keep its "
                                     "sums exact for JavaScript clients (see docs/contract-limits.md): split it")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:

        check_security(self)
        return self

    @model_validator(mode="after")
    def _tls_files(self) -> Settings:
        tls = [n for n in ("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file") if getattr(self, n)]
        if tls and not self.redis_url.startswith("rediss://"):
            raise ValueError(f"{', '.join(env_name(n) for n in tls)} need a rediss:// ATP_REDIS_URL (TLS); with "
                             "redis:// they would be ignored")
        for mine, other in (("redis_tls_cert_file", "redis_tls_key_file"), ("api_tls_cert_file", "api_tls_key_file")):
            if (getattr(self, mine) is None) != (getattr(self, other) is None):
                raise ValueError(f"{env_name(mine)} and {env_name(other)} go together: set both or neither")
        for name in (*tls, "redis_password_file", "api_tls_cert_file", "api_tls_key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{env_name(name)}={path}: no such file")
        if self.redis_password_file is not None and not self.redis_password_file.read_text().strip():
            raise ValueError(f"ATP_REDIS_PASSWORD_FILE={self.redis_password_file} is empty")
        return self

    @model_validator(mode="after")
    def _cluster_url(self) -> Settings:
        if self.redis_cluster and (self.redis_url.startswith("unix://")
                                   or urlparse(self.redis_url).path.strip("/") not in ("", "0")):
            raise ValueError("ATP_REDIS_CLUSTER needs a redis:// or rediss:// URL of one cluster node, with db 0 "
                             "(a Redis Cluster has no other databases)")
        return self

    @model_validator(mode="after")
    def _cluster(self) -> Settings:
        if (self.cluster_addresses is None) != (self.process_id is None):
            raise ValueError("cluster mode needs both ATP_CLUSTER_ADDRESSES (every process's host:port) and "
                             "ATP_PROCESS_ID (this process's index in it); set both, or neither for one process")
        if self.process_id is not None and self.process_id >= self.processes:
            raise ValueError(f"ATP_PROCESS_ID={self.process_id} but ATP_CLUSTER_ADDRESSES lists {self.processes} "
                             f"processes (ids 0 to {self.processes - 1})")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() reads the environment it is given, so tests pass a dict.
        return (init_settings,)

    # Derived names, in one place.
    @property
    def input_topics(self) -> dict[str, str]:
        """Input topic -> the record it carries."""
        return {
            self.topic_wms: "WarehouseEvent",
            self.topic_orders: "OrderLineEvent",
            self.topic_snapshots: "InventorySnapshot",
            self.topic_controls: "SafetyStockSet",
        }

    @property
    def all_topics(self) -> list[str]:
        return [*self.input_topics, self.topic_availability, self.topic_dead_letter, self.topic_drift_alerts,
                self.topic_thresholds]

    @property
    def addresses(self) -> list[str] | None:
        """Every process of the Bytewax cluster (cluster mode), else None."""
        return self.cluster_addresses.split(";") if self.cluster_addresses else None

    @property
    def processes(self) -> int:
        return len(self.addresses or ()) or 1

    @property
    def workers_total(self) -> int:
        """Bytewax workers over the whole cluster: they share the input partitions."""
        return self.workers * self.processes

    @property
    def coordinator(self) -> bool:
        """This process decides how a run starts (recovery store, keyspace state); process 0 or the only one."""
        return not self.process_id

    @property
    def brokers(self) -> list[str]:
        return [b.strip() for b in self.kafka_bootstrap.split(",")]

    @property
    def keys_file(self) -> Path:
        return self.api_keys_file or self.state_dir / "api-keys.json"

    @property
    def key_secret_file(self) -> Path:
        return self.api_key_secret_file or self.state_dir / "api-key-secret"

    @property
    def generation_dir(self) -> Path:
        """Local files of this generation: its recovery store and its spec."""
        if self.generation == DEFAULT_GENERATION:
            return self.state_dir
        return self.state_dir / "generations" / self.generation

    @property
    def recovery_dir(self) -> Path:
        return self.generation_dir / "recovery"

    @property
    def dedup_window_ms(self) -> int:
        return int(self.dedup_window_hours * 3_600_000)

    @property
    def earliest_event_ms(self) -> int:
        t = self.earliest_event_time
        return int((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp() * 1000)

    @property
    def lateness_ms(self) -> int:
        return int(self.lateness_window_s * 1000)

    def topic_alias(self, name: str) -> str:
        """``wms``/``orders``/``snapshots``/``controls`` (as in JSONL files) or a full topic name -> topic."""
        aliases = {"wms": self.topic_wms, "orders": self.topic_orders, "snapshots": self.topic_snapshots,
                   "controls": self.topic_controls}
        return aliases.get(name, name)


def _table(v: Any, example: str) -> Any:
    """A table setting: a TOML table arrives as a dict, the environment gives JSON text."""
    if not isinstance(v, str):
        return v
    try:
        return json.loads(v)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc}); e.g. {example}") from None


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def child_environ(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` without its ATP_* variables, plus ``settings`` as ATP_* variables: for child processes."""
    env = {k: v for k, v in base.items() if not k.startswith(ENV_PREFIX)}
    env.update({env_name(k): json.dumps(v) if isinstance(v, (dict, list)) else
                v.get_secret_value() if isinstance(v, SecretStr) else str(v)
                for k, v in settings.model_dump(exclude_none=True).items()})
    return env


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``environ`` (default: the process environment) and ``ATP_CONFIG``; fails fast."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_file = environ.get(f"{ENV_PREFIX}CONFIG")
    if config_file:
        try:
            values.update(tomllib.loads(Path(config_file).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"ATP_CONFIG={config_file}: {exc}") from exc
    values.update(
        {k[len(ENV_PREFIX):].lower(): v for k, v in environ.items() if k.startswith(ENV_PREFIX) and k != "ATP_CONFIG"}
    )
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            hint = "unknown setting (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
            if not field:  # a rule over several settings: its message names them
                problems.append(f"  {hint.removeprefix('Value error, ')}")
                continue
            if err["type"] == "extra_forbidden" or field in SECRET_FIELDS:
                shown = "(hidden)"  # an unknown name may be a misspelt secret
            elif isinstance(err.get("input"), str) and "://" in err["input"]:
                shown = repr(redact.url(err["input"]))
            else:
                shown = repr(err.get("input"))
            problems.append(f"  {env_name(field)}={shown}: {hint}")
        raise ConfigError("invalid settings:\n" + "\n".join(problems) + "\nSee the settings table in docs/configuration.md.") from None
