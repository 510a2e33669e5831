"""Producing canonical events (Avro, keyed sku@location) to the input topics."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, Producer

from core.config import Settings
from core.kafka_config import client_config
from schemas import Encoder, default_store
from schemas.codec import registry_client
from state.events import kafka_key

RECORD_OF_ALIAS = {"wms": "WarehouseEvent", "orders": "OrderLineEvent", "snapshots": "InventorySnapshot",
                   "controls": "SafetyStockSet"}


class EventProducer:
    """Encodes and sends events; counts delivery failures instead of dropping them silently."""

    def __init__(self, settings: Settings, **config: str) -> None:
        registry = registry_client(settings.schema_registry_url) if settings.schema_registry_url else None
        self._encoder = Encoder(default_store(), registry)
        self._topics = {alias: settings.topic_alias(alias) for alias in RECORD_OF_ALIAS}
        # Idempotent: a retry after a broker outage neither duplicates a record nor reorders a
        # partition (a key's events stay in their order, which the fold's snapshot rule relies on).
        conf = client_config(settings, {"linger.ms": "5", "queue.buffering.max.messages": "500000",
                                        "enable.idempotence": "true", **config})
        self._producer = Producer(conf)
        self.sent = 0
        self.failed = 0
        self.last_error: KafkaError | None = None

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.failed += 1
            self.last_error = err

    def send(self, alias: str, record: dict[str, Any]) -> None:
        topic = self._topics[alias]
        value = self._encoder.encode(RECORD_OF_ALIAS[alias], record, topic)
        key = kafka_key(record.get("sku"), record["location"]).encode()
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let it drain
                self._producer.poll(0.05)
        self.sent += 1
        if self.sent % 1000 == 0:
            self._producer.poll(0)

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, str | bytes | None]] | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full (`atp produce --raw` of a big file): let it drain
                self._producer.poll(0.05)
        self.sent += 1
        if self.sent % 1000 == 0:
            self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for delivery; returns the number of messages still undelivered."""
        return int(self._producer.flush(timeout_s))
