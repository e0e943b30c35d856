"""The processor rides out a broker restart: same process, exactly the reference's drops.

The test runs a broker of its own (ports ``DROPS_TEST_OWN_KAFKA_PORT`` and the next one,
default 39292/39293, data in the test's temporary folder), so stopping it disturbs no other
test.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from bench.processor_harness import (
    ProcessorProc,
    as_events,
    committed,
    drops,
    wait_processed,
    write,
)
from drops.settings import Settings
from shell import broker
from tests.conftest import base_settings
from tests.integration.reference import random_history, reference_events

pytestmark = pytest.mark.kafka

PORT = int(os.environ.get("DROPS_TEST_OWN_KAFKA_PORT", "39292"))
TTL_S = 7200.0


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Settings]:
    tag = uuid.uuid4().hex[:8]
    settings = base_settings(
        data_dir=tmp_path / "data",
        kafka_bootstrap=f"127.0.0.1:{PORT}",
        kafka_controller_port=PORT + 1,
        snapshot_topic=f"r{tag}.snapshots",
        drops_topic=f"r{tag}.events",
        deadletter_topic=f"r{tag}.deadletter",
        stats_topic=f"r{tag}.buckets",
        processor_group=f"r{tag}-processor",
        snapshot_partitions=2,
        state_path=tmp_path / "state",
        seen_ttl=TTL_S,
    )
    assert not broker.is_ready(settings, timeout=1.0), f"something already listens on {PORT}"
    broker.start(settings)
    try:
        broker.ensure_topics(settings)
        wait_coordinator(settings)
        yield settings
    finally:
        broker.stop(settings, wait=10)  # then SIGKILL: its data goes with the test


def wait_coordinator(settings: Settings, deadline_s: float = 60) -> None:
    """Until the new broker's group coordinator answers (it loads its log after start)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            committed(settings)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_processor_rides_out_a_broker_restart(own_broker: Settings, tmp_path: Path) -> None:
    """Started with the broker away, the processor retries until it answers; later the broker
    restarts under it. One process throughout, and the drops topic is exactly the reference."""
    settings = own_broker
    hist = random_history(seed=11, streams=4, polls=30)
    third = len(hist) // 3
    write(settings, hist[:third])
    broker.stop(settings)  # the processor starts while the broker is away: it waits for it
    proc = ProcessorProc(settings, tmp_path / "processor.log")
    try:
        deadline = time.monotonic() + 90
        while "processor_restarting" not in proc.log():
            assert proc.alive() and time.monotonic() < deadline, proc.log()[-4000:]
            time.sleep(0.2)
        broker.start(settings)
        wait_coordinator(settings)
        wait_processed(settings, proc, 120)
        assert "processor_resumed" in proc.log()
        broker.stop(settings)  # and goes away while it runs
        time.sleep(5)  # the consumer, producer and group notice
        assert proc.alive(), proc.log()[-4000:]
        broker.start(settings)
        wait_coordinator(settings)
        write(settings, hist[third : 2 * third])
        wait_processed(settings, proc, 120)
        write(settings, hist[2 * third :])
        wait_processed(settings, proc, 120)
        assert proc.alive(), proc.log()[-4000:]
        assert as_events(drops(settings)) == reference_events(hist, int(TTL_S * 1000))
        print(f"restarts inside the process: {proc.log().count('processor_restarting')}")
    finally:
        assert proc.stop() == 0, proc.log()[-4000:]
