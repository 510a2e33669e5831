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
import shutil
import subprocess
import uuid
from pathlib import Path

from atp.config import Settings
from atp.errors import StackError

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


def configure(settings: Settings, host: str, port: int, controller_port: int) -> Path:
    """Write ``server.properties`` (single node, broker and controller) and the log config."""
    home = settings.state_dir / "kafka"
    data = (home / "data").resolve()
    home.mkdir(parents=True, exist_ok=True)
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
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
    (home / "log4j2.properties").write_text(LOG4J)
    return path


def controller_port(settings: Settings, default: int) -> int:
    """The controller port of an existing configuration (kept across restarts), else ``default``."""
    path = settings.state_dir / "kafka" / "server.properties"
    if path.exists():
        found = re.search(r"^controller\.quorum\.voters=1@[^:]+:(\d+)$", path.read_text(), re.M)
        if found:
            return int(found.group(1))
    return default


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
