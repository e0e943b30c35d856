"""Dead letters that would not fit: the processor bounds them and goes on (before: a dead
letter over the record limit failed its produce, was taken for a broker outage, and the
application was rebuilt for ever on the same offset)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import ConfigResource

from bench.processor_harness import (
    ProcessorProc,
    as_events,
    drops,
    headers_dict,
    read_all,
    wait_processed,
    write,
)
from drops import kafka
from drops.settings import Settings
from tests.integration.reference import random_history, reference_events

pytestmark = pytest.mark.kafka


def test_oversized_dead_letters_are_bounded_and_processing_goes_on(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = kafka_settings.model_copy(update={"commit_interval": 0.3, "seen_ttl": 600.0})
    history = random_history(seed=3, streams=1, polls=4)
    key = history[0].key.encode()
    huge_text = orjson.dumps({"v": 1, "kind": "x" * 3_000_000})  # the error quotes the 3 MB
    near_limit = orjson.dumps({"v": 1, "kind": "poll", "pad": "y" * 3_999_800})
    records: list[tuple[bytes | None, bytes]] = [(key, huge_text), (key, near_limit)]
    records += [(s.key.encode(), orjson.dumps(s.to_dict())) for s in history]
    proc = ProcessorProc(settings, tmp_path / "processor.log")
    try:
        write(settings, records)
        wait_processed(settings, proc, 90)
        assert proc.alive(), proc.log()[-3000:]
    finally:
        proc.stop()
    assert "processor_restarting" not in proc.log()
    got = drops(settings)
    assert as_events(got) == reference_events(history, int(settings.processor.seen_ttl * 1000))
    dead = read_all(settings, settings.topics.deadletter)
    assert len(dead) == 2
    for (_, value, headers), (_, original) in zip(dead, records[:2], strict=True):
        h = headers_dict(headers)
        assert len(h["error"]) <= 1000
        assert (
            len(value) + sum(len(k) + len(v) for k, v in headers) < settings.kafka.max_message_bytes
        )
        if "value_truncated" in h:
            assert int(h["value_truncated"]) == len(original) and original.startswith(value)
        else:
            assert value == original
    assert b"field 'kind'" in headers_dict(dead[0][2])["error"]


def test_a_dead_letter_topic_with_a_smaller_limit_does_not_stop_processing(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """An operator created the dead-letter topic with a 20 KB record limit: a 50 KB bad record
    is still dead-lettered (cut to fit), and nothing loops."""
    settings = kafka_settings.model_copy(update={"commit_interval": 0.3, "seen_ttl": 600.0})
    admin = kafka.admin(settings)
    res = ConfigResource(
        "topic", settings.topics.deadletter, set_config={"max.message.bytes": "20000"}
    )
    for fut in admin.alter_configs([res]).values():
        fut.result()
    history = random_history(seed=4, streams=1, polls=3)
    bad = orjson.dumps({"v": 1, "kind": "poll", "pad": "z" * 50_000})
    records: list[tuple[bytes | None, bytes]] = [(history[0].key.encode(), bad)]
    records += [(s.key.encode(), orjson.dumps(s.to_dict())) for s in history]
    proc = ProcessorProc(settings, tmp_path / "processor.log")
    try:
        write(settings, records)
        wait_processed(settings, proc, 90)
    finally:
        proc.stop()
    assert "processor_restarting" not in proc.log()
    assert as_events(drops(settings)) == reference_events(
        history, int(settings.processor.seen_ttl * 1000)
    )
    ((_, value, headers),) = read_all(settings, settings.topics.deadletter)
    assert int(headers_dict(headers)["value_truncated"]) == len(bad) and bad.startswith(value)
