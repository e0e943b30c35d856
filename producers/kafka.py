"""The Kafka adapter of the producers: one idempotent confluent-kafka producer.

``partitioner=murmur2_random`` is the Java client's (and Quix Streams') partitioner: every
writer to the snapshot topic must use it, or one bucket's records land on two partitions.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, Message

from drops import kafka
from drops.log import get_log
from drops.stages import ProducerSettings

log = get_log("producer.kafka")


def producer_config(settings: ProducerSettings) -> dict[str, Any]:
    """The producer's tuning (the connection comes from :mod:`drops.kafka`)."""
    return {
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "compression.type": "lz4",
        "message.max.bytes": settings.kafka.max_message_bytes,
        "linger.ms": 20,
        "client.id": f"drops-producer-{settings.market.name}",
    }


class Writer:
    def __init__(self, settings: ProducerSettings) -> None:
        self._producer = kafka.producer(settings, producer_config(settings))
        self.delivered = 0
        self.errors = 0

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors += 1
            log.error("delivery_failed", topic=msg.topic(), key=msg.key(), error=str(err))
        else:
            self.delivered += 1

    def write(self, topic: str, key: str, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key.encode(), on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.1)
        self._producer.poll(0)

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every record to be acknowledged; returns how many are still pending."""
        return int(self._producer.flush(timeout))
