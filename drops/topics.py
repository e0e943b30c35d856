"""The project's topics as an operator creates them, and the check every stage makes at start.

:func:`topic_specs` is each topic's wanted shape, from the settings: partitions, replication
factor, ``min.insync.replicas``, retention, cleanup policy (the watches topic is compacted) and
``max.message.bytes``. :func:`ensure_topics` (``drops broker topics``) creates the missing ones
and reports how the existing ones differ (:class:`Drift`); it never changes a topic that
exists. :func:`check_topics` is what a stage calls at start: its topics must exist (it creates
them only when ``DROPS_TOPICS__CREATE`` is on, as the local broker's paths set it) and fit; a
missing topic, a watches topic that is not compacted (or a compacted one that should delete)
or a producers topic with another partition count stops the stage with an error that says
what to do; other drift (replication, retention, ...) is logged as ``topic_drift``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from drops import kafka
from drops.errors import DropsError
from drops.log import get_log
from drops.settings import TopicRole
from drops.stages import TopicSettings

log = get_log("topics")

HOUR_MS = 3_600_000


class TopicError(DropsError, RuntimeError):
    """A topic a stage needs is missing or does not fit (the message says what to do)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: Mapping[str, str] = field(default_factory=dict)

    def new_topic(self) -> NewTopic:
        return NewTopic(self.name, self.partitions, self.replication, config=dict(self.config))


@dataclass(frozen=True)
class Drift:
    """How an existing topic differs from its spec (``what``: partitions, replication factor
    or a config name)."""

    topic: str
    what: str
    wanted: str
    found: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.what} is {self.found}, wanted {self.wanted}"


def _retention(hours: float) -> str:
    return "-1" if hours < 0 else str(int(hours * HOUR_MS))


def topic_specs(settings: TopicSettings) -> dict[str, TopicSpec]:
    """Every topic of the project, by name, as the settings want it."""
    t = settings.topics
    size = {"max.message.bytes": str(settings.kafka.max_message_bytes)}

    def spec(role: TopicRole, partitions: int, config: Mapping[str, str]) -> TopicSpec:
        rf, isr = t.replication_of(role)
        return TopicSpec(
            getattr(t, role), partitions, rf, {"min.insync.replicas": str(isr), **config}
        )

    def log_topic(role: TopicRole, partitions: int, hours: float) -> TopicSpec:
        config = {**size, "cleanup.policy": "delete", "retention.ms": _retention(hours)}
        return spec(role, partitions, config)

    specs = [
        log_topic("snapshots", t.snapshots_partitions, t.snapshots_retention_hours),
        log_topic("drops", t.drops_partitions, t.drops_retention_hours),
        log_topic("deadletter", 1, t.deadletter_retention_hours),
        log_topic("stats", 1, t.stats_retention_hours),
        # no records: its partitions stand for groups of streams (producers/fleet.py)
        spec("producers", t.producers_partitions, {"cleanup.policy": "delete"}),
        # the system of record of watches: compacted, a tombstone deletes
        spec("watches", 1, {**size, "cleanup.policy": "compact"}),
        log_topic("alerts", t.alerts_partitions, t.alerts_retention_hours),
        # the delivery log: the sink copies it to ClickHouse; the worker tails what it keeps
        log_topic("deliveries", 1, settings.delivery.log_retention_hours),
    ]
    return {s.name: s for s in specs}


def _same(key: str, wanted: str, found: str) -> bool:
    if key == "cleanup.policy":
        return {p.strip() for p in wanted.split(",")} == {p.strip() for p in found.split(",")}
    return wanted == found


def inspect_topics(
    settings: TopicSettings, names: Iterable[str] | None = None, admin: AdminClient | None = None
) -> tuple[list[str], list[Drift]]:
    """The topics among ``names`` (default: all) that are missing, and the drift of the
    others from their specs."""
    specs = topic_specs(settings)
    wanted = [specs[n] for n in (names if names is not None else specs)]
    admin = admin or kafka.admin(settings)
    meta = admin.list_topics(timeout=10).topics
    missing = [s.name for s in wanted if s.name not in meta or meta[s.name].error is not None]
    present = [s for s in wanted if s.name not in missing]
    drift: list[Drift] = []
    if not present:
        return missing, drift
    resources = {s.name: ConfigResource("topic", s.name) for s in present}
    described = admin.describe_configs(list(resources.values()), request_timeout=10)
    for spec in present:
        parts = meta[spec.name].partitions
        if len(parts) != spec.partitions:
            drift.append(Drift(spec.name, "partitions", str(spec.partitions), str(len(parts))))
        rf = min(len(p.replicas) for p in parts.values())
        if rf != spec.replication:
            drift.append(Drift(spec.name, "replication factor", str(spec.replication), str(rf)))
        configs = described[resources[spec.name]].result(timeout=10)
        for key, value in spec.config.items():
            entry = configs.get(key)
            found = str(entry.value) if entry is not None and entry.value is not None else ""
            if not _same(key, value, found):
                drift.append(Drift(spec.name, key, value, found or "(unset)"))
    return missing, drift


def create_missing(settings: TopicSettings, names: Iterable[str] | None = None) -> list[str]:
    """Create the topics among ``names`` (default: all) that do not exist; their names."""
    specs = topic_specs(settings)
    admin = kafka.admin(settings)
    missing, _ = inspect_topics(settings, names, admin)
    if not missing:
        return []
    created = []
    for topic, future in admin.create_topics([specs[n].new_topic() for n in missing]).items():
        try:
            future.result()
            created.append(topic)
            log.info("topic_created", topic=topic, partitions=specs[topic].partitions,
                     replication=specs[topic].replication)  # fmt: skip
        except Exception as exc:  # already created by a concurrent caller
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise TopicError(f"creating topic {topic}: {exc}") from exc
    deadline = time.monotonic() + 15  # until the new topics are in the metadata we read next
    while time.monotonic() < deadline and inspect_topics(settings, missing, admin)[0]:
        time.sleep(0.2)
    return created


def ensure_topics(settings: TopicSettings) -> list[Drift]:
    """Create the missing topics (idempotent) and return how the existing ones drift from
    their specs (``drops broker topics``; nothing existing is changed)."""
    kafka.check_access(settings)
    create_missing(settings)
    _, drift = inspect_topics(settings)
    return drift


def _blocking(settings: TopicSettings, drift: Drift) -> bool:
    """Drift a stage must not run with: compaction where records must stay (or the opposite:
    watches deleted by retention), or producer replicas that map streams to partitions the
    assignment topic does not have."""
    if drift.what == "cleanup.policy":
        return True
    return drift.what == "partitions" and drift.topic == settings.topics.producers


def check_topics(settings: TopicSettings, names: Iterable[str], stage: str) -> None:
    """At a stage's start: the cluster accepts us (:func:`drops.kafka.check_access`) and the
    stage's topics exist (created first when ``DROPS_TOPICS__CREATE`` is on) and fit."""
    names = list(names)
    kafka.check_access(settings)
    if settings.topics.create:
        create_missing(settings)
    missing, drift = inspect_topics(settings, names)
    if missing:
        raise TopicError(
            f"{stage}: topics missing on {settings.kafka.bootstrap}: {', '.join(missing)}; "
            "create them with `drops broker topics` (or set DROPS_TOPICS__CREATE=true on a "
            "development broker)"
        )
    for d in drift:
        log.warning("topic_drift", stage=stage, topic=d.topic, what=d.what, wanted=d.wanted,
                    found=d.found)  # fmt: skip
    blocking = [str(d) for d in drift if _blocking(settings, d)]
    if blocking:
        raise TopicError(
            f"{stage}: topics that do not fit: {'; '.join(blocking)} (see `drops broker topics`)"
        )


def record_limit(settings: TopicSettings, topic: str) -> int:
    """The largest record ``topic`` accepts: its ``max.message.bytes``, at most ours (an
    operator may have created the topic with a smaller limit)."""
    admin = kafka.admin(settings)
    res = ConfigResource("topic", topic)
    configs = admin.describe_configs([res])[res].result(timeout=10)
    entry = configs.get("max.message.bytes")
    limit = (
        int(entry.value) if entry is not None and entry.value else settings.kafka.max_message_bytes
    )
    return min(limit, settings.kafka.max_message_bytes)
