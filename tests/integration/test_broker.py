from __future__ import annotations

import pytest

from drops import kafka
from drops.settings import Settings
from shell import broker

pytestmark = pytest.mark.kafka


def test_broker_answers_and_topics_exist(kafka_settings: Settings) -> None:
    assert broker.is_ready(kafka_settings)
    meta = kafka.admin(kafka_settings).list_topics(timeout=10)
    assert kafka_settings.topics.snapshots in meta.topics
    assert len(meta.topics[kafka_settings.topics.snapshots].partitions) == 2
    assert kafka_settings.topics.drops in meta.topics


def test_ensure_topics_is_idempotent(kafka_settings: Settings) -> None:
    broker.ensure_topics(kafka_settings)
    broker.ensure_topics(kafka_settings)
