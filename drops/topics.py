"""Topic admin: the project's topics, created with the right settings (idempotent)."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from drops.log import get_log, kafka_logger
from drops.settings import Settings

log = get_log("broker")


def ensure_topics(settings: Settings) -> None:
    """Create the project's topics if they are missing (idempotent)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap}, logger=kafka_logger())
    existing = set(admin.list_topics(timeout=10).topics)
    big = {"max.message.bytes": str(settings.kafka.max_message_bytes)}
    wanted = [
        NewTopic(settings.topics.snapshots, settings.topics.snapshots_partitions, 1, config=big),
        NewTopic(settings.topics.drops, settings.topics.drops_partitions, 1, config=big),
        NewTopic(settings.topics.deadletter, 1, 1, config=big),
        NewTopic(settings.topics.stats, 1, 1, config=big),
        NewTopic(settings.topics.producers, settings.topics.producers_partitions, 1),
        # the system of record of watches: compacted, a tombstone deletes
        NewTopic(settings.topics.watches, 1, 1, config={**big, "cleanup.policy": "compact"}),
        NewTopic(settings.topics.alerts, settings.topics.alerts_partitions, 1, config=big),
        NewTopic(
            settings.topics.deliveries,
            1,
            1,
            config={
                **big,
                "retention.ms": str(int(settings.delivery.log_retention_hours * 3_600_000)),
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
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap}, logger=kafka_logger())
    res = ConfigResource("topic", topic)
    configs = admin.describe_configs([res])[res].result(timeout=10)
    entry = configs.get("max.message.bytes")
    limit = (
        int(entry.value) if entry is not None and entry.value else settings.kafka.max_message_bytes
    )
    return min(limit, settings.kafka.max_message_bytes)
