"""The local stack's real Kafka: its log survives a restart, and state derived from another log
(a tansu run in between) is never resumed against it; mismatched switches are refused."""

from __future__ import annotations

import pytest

from core.config import load_settings
from core.errors import ConfigError, StackError
from sandbox.stack import Stack, free_port
from tests.conftest import BROKER

pytestmark = pytest.mark.integration


def stack_settings(state, broker, **kw):
    return load_settings({}, state_dir=state, stack_broker=broker, kafka_bootstrap=f"127.0.0.1:{PORTS[0]}",
                         redis_url=f"redis://127.0.0.1:{PORTS[1]}/0", **kw)


PORTS = (free_port(), free_port())


def test_sasl_needs_the_kafka_broker():
    with pytest.raises(ConfigError, match="ATP_STACK_KAFKA_SASL needs ATP_STACK_BROKER=kafka"):
        load_settings({"ATP_STACK_KAFKA_SASL": "true"})


@pytest.mark.skipif(BROKER != "kafka", reason="needs a real Apache Kafka: the Kafka tier runs it")
def test_state_from_a_tansu_run_in_between_is_not_resumed_on_the_kafka_log(tmp_path):
    """The defect: the recovery store of a tansu run was kept when the stack went back to its kept
    Kafka log, and the dataflow would have resumed tansu's offsets inside Kafka's partitions."""
    recovery = tmp_path / "recovery"
    kafka = Stack(stack_settings(tmp_path, "kafka"))
    try:
        kafka.up(create_topics=False)
        recovery.mkdir()  # derived from the kafka log: kept across a restart of the same log
        kafka.down()
        kafka.up(create_topics=False)
        assert recovery.exists()
        with pytest.raises(StackError, match="a kafka broker of this stack is running"):
            Stack(stack_settings(tmp_path, "tansu")).up(create_topics=False)
        with pytest.raises(StackError, match="listens with PLAINTEXT"):
            Stack(stack_settings(tmp_path, "kafka", stack_kafka_sasl=True)).up(create_topics=False)
        kafka.down()
        tansu = Stack(stack_settings(tmp_path, "tansu"))
        tansu.up(create_topics=False)
        recovery.mkdir()  # derived from tansu's log
        tansu.down()
        kafka.up(create_topics=False)
        assert not recovery.exists()
    finally:
        Stack(stack_settings(tmp_path, "kafka")).down()
