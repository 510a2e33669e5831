"""A real Apache Kafka broker for the local stack: single-node KRaft, run from the distribution's jars.

Where the jars come from, in this order: ``ATP_KAFKA_HOME`` (an unpacked official distribution:
its ``libs/``), else ``deploy/kafka/pom.xml``, whose runtime dependencies Maven copies once into
``ATP_STATE_DIR/kafka-libs-<version>/`` (the same set as the distribution's ``libs/``). The log
lives in ``ATP_STATE_DIR/kafka/data`` and survives a restart of the stack; it is formatted on
first start with a cluster id kept beside it.
"""

from __future__ import annotations

import base64
import re
import secrets
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings
from core.errors import StackError

POM = Path(__file__).resolve().parents[1] / "deploy" / "kafka" / "pom.xml"
MAIN = "kafka.Kafka"
FORMAT_MAIN = "kafka.tools.StorageTool"
HEAP = ["-Xms256m", "-Xmx1g"]  # a 2-core / 24 GiB box runs the dataflow, Redis and the API beside it
INSTALL = ("install Java 17 and Maven (Debian: `apt-get install openjdk-17-jre-headless maven`), or set "
           "ATP_KAFKA_HOME to an unpacked Apache Kafka distribution; `ATP_STACK_BROKER=tansu` needs neither")

LOG4J = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def pom_version(pom: Path = POM) -> str:
    """The Kafka version the pom pins."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if found is None:
        raise StackError(f"{pom} names no <kafka.version>")
    return found.group(1)


def java() -> str:
    path = shutil.which("java")
    if path is None:
        raise StackError(f"the kafka broker needs Java, which is not installed: {INSTALL}")
    return path


def libs(settings: Settings) -> Path:
    """The directory of the broker's jars, fetched with Maven the first time."""
    if settings.kafka_home is not None:
        found = settings.kafka_home / "libs"
        if not any(found.glob("kafka_2.13-*.jar")):
            raise StackError(f"ATP_KAFKA_HOME={settings.kafka_home} has no libs/kafka_2.13-*.jar: "
                             "point it at an unpacked Apache Kafka distribution")
        return found
    if not POM.exists():
        raise StackError(f"{POM} is missing (an installed package has no deploy/): set ATP_KAFKA_HOME")
    target = settings.state_dir / f"kafka-libs-{pom_version()}"
    done = target / ".complete"
    if done.exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(f"the kafka broker's jars come from Maven, which is not installed: {INSTALL}")
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", "-DincludeScope=runtime",
         f"-DoutputDirectory={target.resolve()}"], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise StackError(f"Maven could not fetch Kafka {pom_version()} (is Maven Central reachable?):\n{tail}")
    done.touch()
    return target


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


SCRAM_USER = "atp"
SCRAM_MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class Secured:
    """The SASL_SSL broker's material, under ``ATP_STATE_DIR/kafka/tls`` (made once, kept)."""

    keystore: Path  # PKCS12, the broker's key and self-signed certificate (SAN 127.0.0.1, localhost)
    ca_file: Path  # that certificate in PEM: what clients trust (ATP_KAFKA_SSL_CA_FILE)
    password_file: Path  # the SCRAM password of user `atp` (ATP_KAFKA_SASL_PASSWORD_FILE), mode 0600
    store_password: str

    def client_settings(self) -> dict[str, str]:
        return {"ATP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "ATP_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
                "ATP_KAFKA_SASL_USERNAME": SCRAM_USER, "ATP_KAFKA_SASL_PASSWORD_FILE": str(self.password_file),
                "ATP_KAFKA_SSL_CA_FILE": str(self.ca_file)}


def _secret_file(path: Path) -> str:
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def secure_material(settings: Settings) -> Secured:
    """The broker's TLS certificate and the SCRAM password, made on first use with keytool (Java)."""
    tls = (settings.state_dir / "kafka" / "tls").resolve()
    tls.mkdir(parents=True, exist_ok=True)
    tls.chmod(0o700)
    store_password = _secret_file(tls / "keystore-password")
    password_file = tls / "password"
    _secret_file(password_file)
    keystore, ca = tls / "broker.p12", tls / "ca.pem"
    keytool = shutil.which("keytool")
    if keytool is None:
        raise StackError(f"making the broker's certificate needs keytool (Java): {INSTALL}")
    if not keystore.exists():
        for argv in (
            ["-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650",
             "-dname", "CN=localhost", "-ext", "SAN=ip:127.0.0.1,dns:localhost"],
            ["-exportcert", "-alias", "broker", "-rfc", "-file", str(ca)],
        ):
            proc = subprocess.run([keytool, *argv, "-keystore", str(keystore), "-storetype", "PKCS12",
                                   "-storepass", store_password], capture_output=True, text=True)
            if proc.returncode != 0:
                keystore.unlink(missing_ok=True)
                raise StackError(f"keytool could not make the broker's certificate: {proc.stderr.strip()[-500:]}")
    return Secured(keystore, ca, password_file, store_password)


def configure(settings: Settings, host: str, port: int, controller_port: int, internal_port: int | None = None,
              secured: Secured | None = None) -> Path:
    """Write ``server.properties`` (single node, broker and controller) and the log config. Secured:
    clients connect with SASL_SSL on ``port``; the broker talks to itself, and the stack creates
    the SCRAM user and the topics, on a PLAINTEXT listener bound to 127.0.0.1 ``internal_port``."""
    home = settings.state_dir / "kafka"
    data = (home / "data").resolve()
    home.mkdir(parents=True, exist_ok=True)
    if secured is None:
        listeners = {"listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://127.0.0.1:{controller_port}",
                     "advertised.listeners": f"PLAINTEXT://{host}:{port}",
                     "inter.broker.listener.name": "PLAINTEXT",
                     "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"}
    else:
        assert internal_port is not None
        listeners = {
            "listeners": f"SASL_SSL://{host}:{port},INTERNAL://127.0.0.1:{internal_port},"
                         f"CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://{host}:{port},INTERNAL://127.0.0.1:{internal_port}",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.location": str(secured.keystore),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.password": secured.store_password,
        }
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        **listeners,
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(data),
        # One node: every internal topic has one replica.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",  # as in docker-compose.yml: topics come from `atp topics create`
    }
    path = home / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    path.chmod(0o600)  # it holds the keystore password
    (home / "log4j2.properties").write_text(LOG4J)
    return path


def controller_port(settings: Settings, default: int) -> int:
    """The controller port of an existing configuration (kept across restarts), else ``default``."""
    return _kept_port(settings, r"^controller\.quorum\.voters=1@[^:]+:(\d+)$", default)


def internal_port(settings: Settings, default: int) -> int:
    """The secured broker's internal PLAINTEXT port (kept across restarts), else ``default``."""
    return _kept_port(settings, r"INTERNAL://127\.0\.0\.1:(\d+)", default)


def _kept_port(settings: Settings, pattern: str, default: int) -> int:
    path = settings.state_dir / "kafka" / "server.properties"
    if path.exists():
        found = re.search(pattern, path.read_text(), re.M)
        if found:
            return int(found.group(1))
    return default


def create_user(bootstrap: str, password_file: Path) -> None:
    """The SCRAM user clients log in as (idempotent: an upsert), through the internal listener."""
    from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    upsert = UserScramCredentialUpsertion(SCRAM_USER, info, password_file.read_text().strip().encode())
    client = AdminClient({"bootstrap.servers": bootstrap})
    for fut in client.alter_user_scram_credentials([upsert], request_timeout=15).values():
        fut.result(timeout=20)


def cluster_id(settings: Settings) -> str:
    """The cluster id the log was formatted with (``meta.properties``)."""
    meta = settings.state_dir / "kafka" / "data" / "meta.properties"
    found = re.search(r"^cluster\.id=(\S+)$", meta.read_text(), re.M) if meta.exists() else None
    return found.group(1) if found else "unformatted"


def format_once(settings: Settings, jars: Path, properties: Path) -> bool:
    """Format the log directory on first start; returns whether it did."""
    data = settings.state_dir / "kafka" / "data"
    if (data / "meta.properties").exists():
        return False
    proc = subprocess.run(
        [java(), "-cp", f"{jars}/*", f"-Dlog4j2.configurationFile={properties.parent / 'log4j2.properties'}",
         FORMAT_MAIN, "format", f"--cluster-id={_cluster_id()}", "--config", str(properties)],
        capture_output=True, text=True)  # "=": a random id can start with "-"
    if proc.returncode != 0:
        raise StackError(f"formatting the kafka log in {data} failed:\n{(proc.stdout + proc.stderr).strip()[-2000:]}")
    return True


def argv(jars: Path, properties: Path) -> list[str]:
    return [java(), *HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={properties.parent / 'log4j2.properties'}",
            "-cp", f"{jars}/*", MAIN, str(properties)]
