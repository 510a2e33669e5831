"""The input topics' settings, read with DescribeConfigs at start: what would delete events the
positions are folded from is refused, what would break a replay from the start is a warning."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import NewTopic

from core.errors import StackError
from dataflows.kafka import topic_config
from dataflows.kafka.admin import admin
from tests.conftest import BROKER, wait_until

pytestmark = pytest.mark.integration


def test_topics_as_atp_creates_them_pass(settings):
    assert topic_config.check(settings) == []


def test_a_compacted_input_topic_is_refused_and_a_finite_retention_is_a_warning(settings):
    wms, orders = f"{settings.topic_wms}.c", f"{settings.topic_orders}.r"
    client = admin(settings)
    for fut in client.create_topics([
            NewTopic(wms, 1, 1, config={"cleanup.policy": "compact"}),
            NewTopic(orders, 1, 1, config={"retention.ms": str(7 * 86_400_000)})]).values():
        fut.result(timeout=15)
    s = settings.model_copy(update={"topic_wms": wms, "topic_orders": orders})
    wait_until(lambda: (d := topic_config.describe(s, [wms, orders])) is not None and len(d) == 2, 20,
               "the new topics described")  # a new topic reaches the broker's metadata shortly after
    try:
        if BROKER == "tansu":  # it answers with the settings a topic was created with, and no defaults
            assert topic_config.describe(s, [settings.topic_snapshots]) == {settings.topic_snapshots: {"retention.ms": "-1"}}
        with pytest.raises(StackError, match=f"input topic {wms} has cleanup.policy=compact"):
            topic_config.check(s)
        s = s.model_copy(update={"topic_wms": settings.topic_wms})
        [warning] = topic_config.check(s)
        assert warning.topic == orders and "7.0 days" in warning.message
    finally:
        client.delete_topics([wms, orders])
