"""Shared fixtures. Tests marked ``kafka`` get the real local broker; if it cannot start,
they fail with the broker's error (they never skip)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drops.clock import Clock, parse_instant
from drops.settings import Settings
from shell import broker

ROOT = Path(__file__).resolve().parent.parent
TEST_BOOTSTRAP = os.environ.get("DROPS_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19192")
TEST_CONTROLLER_PORT = int(os.environ.get("DROPS_TEST_KAFKA_CONTROLLER_PORT", "19193"))
TEST_DATA_DIR = Path(os.environ.get("DROPS_TEST_DATA_DIR", str(ROOT / ".drops" / "test")))


TEST_NOW_ENV = "DROPS_TEST_NOW"


def now_under_test() -> datetime:
    """The instant a test runs at: ``DROPS_TEST_NOW`` (ISO) if set, else the real time now.

    Tests that depend on the time of day or the date are marked ``clock`` and take "now" from
    here (and the stages they start get it as ``DROPS_CLOCK__START``), so that CI can run them
    at chosen instants: before and after the 02:05 slide, in the afternoon, at midnight, on
    the daylight-saving days (``make test-clock``)."""
    text = os.environ.get(TEST_NOW_ENV, "").strip()
    return parse_instant(text) if text else datetime.now(UTC)


def base_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        # the product's clock starts at the test's instant (and runs from there)
        "clock_start": now_under_test().isoformat(),
        "data_dir": TEST_DATA_DIR,
        "kafka_dist": ROOT / ".drops" / "dist",
        "kafka_bootstrap": TEST_BOOTSTRAP,
        "kafka_controller_port": TEST_CONTROLLER_PORT,
        # the single-node test broker: stages create their topics, with replication 1
        "create_topics": True,
        "topic_replication_factor": 1,
        "topic_min_insync_replicas": 1,
        "log_format": "text",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    """The product's clock, started at the test's instant (:func:`now_under_test`)."""
    return Clock.starting_at(now_under_test())


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Settings]:
    """The real broker for the whole session (started here unless one already answers)."""
    settings = base_settings()
    already = broker.is_ready(settings, timeout=1.0)
    broker.start(settings)
    yield settings
    if not already:
        broker.stop(settings)


def isolated_settings(root: Path, tag: str, **overrides: object) -> Settings:
    """Settings whose topics, groups, chDB and state folders are ``tag``'s own, under ``root``."""
    values: dict[str, object] = {
        "snapshot_topic": f"{tag}.snapshots",
        "drops_topic": f"{tag}.events",
        "deadletter_topic": f"{tag}.deadletter",
        "stats_topic": f"{tag}.buckets",
        "watches_topic": f"{tag}.watches",
        "alerts_topic": f"{tag}.alerts",
        "deliveries_topic": f"{tag}.deliveries",
        "matcher_group": f"{tag}-matcher",
        "delivery_group": f"{tag}-delivery",
        "processor_group": f"{tag}-processor",
        "sink_group": f"{tag}-sink",
        "producer_group": f"{tag}-producer",
        "producer_topic": f"{tag}.producers",
        "clickhouse_dsn": f"chdb://{root / 'clickhouse'}",
        "state_path": root / "state",
    }
    values.update(overrides)
    return base_settings(**values)


@pytest.fixture
def kafka_settings(kafka_broker: Settings, tmp_path: Path) -> Settings:
    """Settings with topics, groups and folders of this test's own, on the real broker."""
    settings = isolated_settings(tmp_path, f"t{uuid.uuid4().hex[:8]}", snapshot_partitions=2)
    broker.ensure_topics(settings)
    return settings
