"""The snapshot topic behind the processor's back: records deleted by retention while the
processor was paused or down, past its group's committed offsets."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from bench.pipeline import free_port, wait_for
from bench.processor_harness import ProcessorProc, producer, wait_processed
from bench.replicas_bench import members
from drops import kafka
from drops.settings import Settings
from schemas import encode
from tests.integration.test_metrics import scrape, value
from tests.unit.test_rule import UNIVERSE, snapshot

pytestmark = pytest.mark.kafka


def test_snapshots_deleted_by_retention_past_the_committed_offset_are_a_counted_gap(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """Before: the group's offset fell off the log and auto.offset.reset=earliest skipped the
    deleted snapshots without a word."""
    s = kafka_settings
    slots = [UNIVERSE[k] for k in sorted(UNIVERSE)]
    p = producer(s)
    for i in range(8):
        snap = snapshot(
            f"r{i}", 1_000 + 30_000 * i, slots[: 3 + i % 3], kind="baseline" if i == 0 else "poll"
        )
        p.produce(s.topics.snapshots, key=snap.key.encode(), value=encode(snap), partition=0)
    assert p.flush(30) == 0
    # the processor had read offsets 0-1 when it stopped ...
    c = kafka.consumer(s, {"group.id": s.processor.group})
    c.commit(offsets=[TopicPartition(s.topics.snapshots, 0, 2)], asynchronous=False)
    c.close()
    # ... and retention deleted 2-5 before it came back (DeleteRecords moves the log start
    # as retention does)
    admin = kafka.admin(s)
    for fut in admin.delete_records([TopicPartition(s.topics.snapshots, 0, 6)]).values():
        fut.result()
    port = free_port()
    proc = ProcessorProc(s, tmp_path / "processor.log", DROPS_PROCESSOR__METRICS_PORT=str(port))
    try:
        wait_processed(s, proc, 90)
        fams = wait_for(
            "retention gap counted",
            lambda: (
                (f := scrape(port))
                and value(f, "drops_processor_snapshots", "drops_processor_snapshots_total") >= 2
                and f
            ),
        )
        assert (
            value(fams, "drops_processor_retention_gaps", "drops_processor_retention_gaps_total")
            == 1
        )
        assert (
            value(
                fams,
                "drops_processor_retention_gap_offsets",
                "drops_processor_retention_gap_offsets_total",
            )
            == 4
        )
        gaps = re.findall(r"retention_gap .*", proc.log())
        assert len(gaps) == 1, proc.log()[-4000:]
        assert re.match(
            r"retention_gap topic=\S+ partition=0 committed=2 log_start=6 offsets=4 ", gaps[0]
        )
    finally:
        proc.stop()


def test_a_gap_is_counted_once_by_the_replica_that_owns_the_partition_not_by_each(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """Two replicas, a gap on partition 0 only. Before: each replica checked every partition
    of the topic before it started, so the same gap was counted (and logged) by both."""
    s = kafka_settings
    slots = [UNIVERSE[k] for k in sorted(UNIVERSE)]
    p = producer(s)
    for partition in (0, 1):
        for i in range(8):
            snap = snapshot(
                f"r{partition}-{i}",
                1_000 + 30_000 * i,
                slots[: 3 + i % 3],
                kind="baseline" if i == 0 else "poll",
            )
            # the same stream on both partitions: a test's shortcut (its state is per
            # partition); the processor never sees a key on the wrong partition otherwise
            key = snap.key.encode()
            p.produce(s.topics.snapshots, key=key, value=encode(snap), partition=partition)
    assert p.flush(30) == 0
    c = kafka.consumer(s, {"group.id": s.processor.group})
    c.commit(
        offsets=[
            TopicPartition(s.topics.snapshots, 0, 2),
            TopicPartition(s.topics.snapshots, 1, 2),
        ],
        asynchronous=False,
    )
    c.close()
    admin = kafka.admin(s)
    for fut in admin.delete_records([TopicPartition(s.topics.snapshots, 0, 6)]).values():
        fut.result()
    ports = [free_port(), free_port()]
    procs = [
        ProcessorProc(s, tmp_path / f"p{k}.log", DROPS_PROCESSOR__METRICS_PORT=str(port))
        for k, port in enumerate(ports)
    ]
    try:
        deadline = time.monotonic() + 90
        while len(got := members(s)) < 2 or not all(got.values()):
            assert all(pr.alive() for pr in procs), procs[0].log()[-2000:]
            assert time.monotonic() < deadline, got
            time.sleep(0.3)
        wait_processed(s, procs[0], 90)
        total = 0.0
        for port in ports:
            fams = wait_for("metrics", lambda port=port: scrape(port))
            total += value(
                fams, "drops_processor_retention_gaps", "drops_processor_retention_gaps_total"
            )
        assert total == 1
        lines = [ln for pr in procs for ln in re.findall(r"retention_gap .*", pr.log())]
        assert len(lines) == 1, lines
        assert re.match(r"retention_gap topic=\S+ partition=0 committed=2 log_start=6 ", lines[0])
    finally:
        for pr in procs:
            pr.stop()
