"""Topic admin: the project's topics, created with the right settings (idempotent)."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from drops.log import get_log, kafka_logger
from drops.settings import Settings

log = get_log("broker")


def ensure_topics(settings: Settings) -> None:
    """Create the project's topics if they are missing (idempotent)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap}, logger=kafka_logger())
    existing = set(admin.list_topics(timeout=10).topics)
    big = {"max.message.bytes": str(settings.max_message_bytes)}
    wanted = [
        NewTopic(settings.snapshot_topic, settings.snapshot_partitions, 1, config=big),
        NewTopic(settings.drops_topic, settings.drops_partitions, 1, config=big),
        NewTopic(settings.deadletter_topic, 1, 1, config=big),
        NewTopic(settings.stats_topic, 1, 1, config=big),
        NewTopic(settings.producer_topic, settings.producer_partitions, 1),
        # the system of record of watches: compacted, a tombstone deletes
        NewTopic(settings.watches_topic, 1, 1, config={**big, "cleanup.policy": "compact"}),
        NewTopic(settings.alerts_topic, settings.alerts_partitions, 1, config=big),
        NewTopic(
            settings.deliveries_topic,
            1,
            1,
            config={
                **big,
                "retention.ms": str(int(settings.delivery_log_retention_hours * 3_600_000)),
            },
        ),
    ]
    todo = [t for t in wanted if t.topic not in existing]
    if not todo:
        return
    for topic, future in admin.create_topics(todo).items():
        try:
            future.result()
            log.info("topic_created", topic=topic)
        except Exception as exc:  # already created by a concurrent caller
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def record_limit(settings: Settings, topic: str) -> int:
    """The largest record ``topic`` accepts: its ``max.message.bytes``, at most ours (an
    operator may have created the topic with a smaller limit)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap}, logger=kafka_logger())
    res = ConfigResource("topic", topic)
    configs = admin.describe_configs([res])[res].result(timeout=10)
    entry = configs.get("max.message.bytes")
    limit = int(entry.value) if entry is not None and entry.value else settings.max_message_bytes
    return min(limit, settings.max_message_bytes)
