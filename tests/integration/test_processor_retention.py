"""The snapshot topic behind the processor's back: records deleted by retention while the
processor was paused or down, past its group's committed offsets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from bench.pipeline import free_port, wait_for
from bench.processor_harness import ProcessorProc, producer, wait_processed
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
        p.produce(s.snapshot_topic, key=snap.key.encode(), value=encode(snap), partition=0)
    assert p.flush(30) == 0
    # the processor had read offsets 0-1 when it stopped ...
    c = kafka.consumer(s, {"group.id": s.processor_group})
    c.commit(offsets=[TopicPartition(s.snapshot_topic, 0, 2)], asynchronous=False)
    c.close()
    # ... and retention deleted 2-5 before it came back (DeleteRecords moves the log start
    # as retention does)
    admin = kafka.admin(s)
    for fut in admin.delete_records([TopicPartition(s.snapshot_topic, 0, 6)]).values():
        fut.result()
    port = free_port()
    proc = ProcessorProc(s, tmp_path / "processor.log", DROPS_PROCESSOR_METRICS_PORT=str(port))
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
