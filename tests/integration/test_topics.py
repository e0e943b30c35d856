"""Topics as an operator creates them, on the real broker: `drops broker topics` creates the
missing ones with their replication, min.insync.replicas, retention and cleanup policy, checks
the existing ones and exits non-zero on drift; a stage checks its topics at start and refuses
a missing or misfit one instead of creating it (unless DROPS_TOPICS__CREATE is on)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import ConfigResource, NewTopic

from bench.pipeline import settings_env
from drops import kafka
from drops.settings import Settings
from drops.topics import HOUR_MS, TopicError, check_topics, inspect_topics
from tests.conftest import isolated_settings

pytestmark = pytest.mark.kafka


def cluster_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Fresh topic names, the settings an operator of a cluster has (no auto-creation)."""
    values: dict[str, object] = {"create_topics": False, "snapshot_partitions": 2}
    values.update(overrides)
    return isolated_settings(tmp_path, f"t{uuid.uuid4().hex[:8]}", **values)


def broker_topics(s: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shell.cli", "broker", "topics"],
        env=settings_env(s, DROPS_LOG__FORMAT="json"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def topic_config(s: Settings, topic: str) -> dict[str, str]:
    res = ConfigResource("topic", topic)
    admin = kafka.admin(s)  # held until the answer arrives
    configs = admin.describe_configs([res])[res].result(timeout=10)
    return {k: str(v.value) for k, v in configs.items()}


def test_broker_topics_creates_them_as_set_then_finds_no_drift(
    kafka_broker: Settings, tmp_path: Path
) -> None:
    s = cluster_settings(tmp_path, snapshot_retention_hours=48, drops_retention_hours=-1)
    first = broker_topics(s)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("created") == 8
    snap = topic_config(s, s.topics.snapshots)
    assert snap["retention.ms"] == str(48 * HOUR_MS)
    assert snap["min.insync.replicas"] == "1"
    assert snap["cleanup.policy"] == "delete"
    assert snap["max.message.bytes"] == str(s.kafka.max_message_bytes)
    assert topic_config(s, s.topics.drops)["retention.ms"] == "-1"
    assert topic_config(s, s.topics.watches)["cleanup.policy"] == "compact"
    admin = kafka.admin(s)
    meta = admin.list_topics(timeout=10).topics
    assert len(meta[s.topics.snapshots].partitions) == 2
    assert len(meta[s.topics.producers].partitions) == s.topics.producers_partitions

    again = broker_topics(s)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "created" not in again.stdout and "drift" not in again.stdout


def test_drift_is_printed_and_exits_non_zero(kafka_broker: Settings, tmp_path: Path) -> None:
    s = cluster_settings(tmp_path)
    assert broker_topics(s).returncode == 0
    # the cluster's defaults asked of a topic set made for one node, and a longer retention
    wanted = s.model_copy(
        update={
            "topic_replication_factor": 3,
            "topic_min_insync_replicas": 2,
            "snapshot_retention_hours": 24 * 30,
        }
    )
    out = broker_topics(wanted)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{s.topics.snapshots}: replication factor is 1, wanted 3" in out.stdout
    assert f"{s.topics.snapshots}: min.insync.replicas is 1, wanted 2" in out.stdout
    assert f"{s.topics.snapshots}: retention.ms is {168 * HOUR_MS}, wanted {720 * HOUR_MS}" in (
        out.stdout
    )
    assert "never changed" in out.stderr
    # nothing existing was changed
    assert topic_config(s, s.topics.snapshots)["retention.ms"] == str(168 * HOUR_MS)


def test_a_stage_refuses_missing_topics_unless_it_may_create_them(
    kafka_broker: Settings, tmp_path: Path
) -> None:
    s = cluster_settings(tmp_path)
    with pytest.raises(TopicError, match="drops broker topics") as err:
        check_topics(s, [s.topics.snapshots, s.topics.drops], "processor")
    assert s.topics.snapshots in str(err.value)
    assert inspect_topics(s, [s.topics.snapshots])[0] == [s.topics.snapshots]  # not created

    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "shell.cli", "process"],
        env=settings_env(s, DROPS_LOG__FORMAT="json", DROPS_PROCESSOR__METRICS_PORT="0"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "drops broker topics" in proc.stderr and s.topics.snapshots in proc.stderr
    assert time.monotonic() - started < 60

    local = s.model_copy(update={"create_topics": True, "topic_replication_factor": 1,
                                 "topic_min_insync_replicas": 1})  # fmt: skip
    check_topics(local, [s.topics.snapshots, s.topics.drops], "processor")
    assert inspect_topics(local, [s.topics.snapshots, s.topics.drops]) == ([], [])


def test_a_watches_topic_that_is_not_compacted_stops_the_stages_that_use_it(
    kafka_broker: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = cluster_settings(tmp_path)
    admin = kafka.admin(s)
    # made by hand with the broker's defaults: retention would delete the watches
    admin.create_topics([NewTopic(s.topics.watches, 1, 1)])[s.topics.watches].result(timeout=30)
    deadline = time.monotonic() + 15
    while s.topics.watches not in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert broker_topics(s).returncode == 1
    with pytest.raises(TopicError, match=r"cleanup\.policy is delete, wanted compact"):
        check_topics(s, [s.topics.drops, s.topics.watches], "matcher")
    # drift that costs durability, not correctness, is logged and the stage runs
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="drops.topics"):
        check_topics(s.model_copy(update={"drops_retention_hours": 24}), [s.topics.drops], "api")
    drifts = [r for r in caplog.records if r.getMessage() == "topic_drift"]
    assert [(r.topic, r.what) for r in drifts] == [(s.topics.drops, "retention.ms")]
