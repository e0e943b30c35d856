"""One producer cycle against the simulator (port 28010), read back from the real broker:
parts, keys, one partition per key, complete flags; a fault makes complete=False with
failures, never an empty snapshot."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest
from confluent_kafka import Message

from domain.calendar import window
from drops import kafka
from drops.settings import Settings
from producers.kafka import Writer
from producers.providers import factory
from producers.service import ProducerService
from schemas import SnapshotView, decode_snapshot, decode_stats
from simulator.control import SimControl, serve
from simulator.market import Market
from simulator.server import create_app

pytestmark = [pytest.mark.kafka, pytest.mark.clock]
PORT = 28010


def read_all(settings: Settings, topic: str, expect: int, timeout: float = 30.0) -> list[Message]:
    consumer = kafka.consumer(
        settings,
        {
            "group.id": f"read-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        },
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    idle_since = time.monotonic()
    try:
        while len(out) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                if out and time.monotonic() - idle_since > 2.0:  # all written before: done
                    break
                continue
            idle_since = time.monotonic()
            out.append(msg)
    finally:
        consumer.close()
    return out


def test_one_cycle_writes_snapshots_in_parts_with_faults_marked(kafka_settings: Settings) -> None:
    url = f"http://127.0.0.1:{PORT}"
    settings = kafka_settings.model_copy(
        update={
            "providers": "resy,opentable",
            "resy_url": url,
            "opentable_url": url,
            "days": 2,
            "slots_per_record": 40,
            "resy_per_page": 25,
            "max_retries": 1,
            "retry_base": 0.01,
            "request_timeout": 5.0,
        }
    )
    clock = settings.clock()  # the test's instant (DROPS_TEST_NOW), shared with the producer
    app = create_app(
        Market(seed=3, venues=120),
        api_key=settings.providers.resy.api_key.get_secret_value(),
        scripted=True,
        clock=clock,
    )
    with serve(app, port=PORT), SimControl(url) as sim:
        sim.fault("5xx", count=10_000, provider="opentable")  # OpenTable is down

        async def cycle() -> None:
            providers = factory.build(settings)
            writer = Writer(settings)
            service = ProducerService(settings, providers, writer)
            report = await service.run_once()
            assert report.finished == 8 and report.skipped == 0 and report.errors == 0
            await service.shutdown()
            assert writer.errors == 0 and writer.delivered == report.records + 8

        asyncio.run(cycle())
        buckets = window(clock.now(), settings.market.name, ZoneInfo(settings.market.time_zone), 2)
        later = {b.bucket_id for b in buckets if b.date > buckets[0].date}  # no slot has passed
        expected = {
            f"{b.bucket_id}/resy": {
                (s["venue_id"], s["actual_time"])
                for s in sim.slots(b.date.isoformat(), b.time_slot, provider="resy")
            }
            for b in buckets
        }
        msgs = read_all(settings, settings.topics.snapshots, expect=10_000, timeout=8)
        stats = read_all(settings, settings.topics.stats, expect=8)

    by_key: dict[str, list[tuple[int, SnapshotView]]] = defaultdict(list)
    for m in msgs:
        snap = decode_snapshot(m.value())
        assert m.key().decode() == snap.key
        by_key[snap.key].append((m.partition(), snap))
    assert len(by_key) == 8  # 2 days x 2 times x 2 providers
    for key, items in by_key.items():
        assert len({p for p, _ in items}) == 1, f"{key} spread over partitions"
        snaps = [s for _, s in items]
        assert len({s.snapshot_id for s in snaps}) == 1 and all(s.kind == "poll" for s in snaps)
        assert [s.part for s in snaps] == list(range(snaps[0].parts))
        assert all(len(s.slots) <= 40 for s in snaps)
        assert all(s.complete == snaps[0].complete for s in snaps)
        assert all(s.failures == snaps[0].failures for s in snaps)
        got = {(sl.venue_id, sl.actual_time) for s in snaps for sl in s.slots}
        if key.endswith("/resy"):  # complete, and exactly the simulator's open set
            assert snaps[0].complete and not snaps[0].failures
            assert got == expected[key]
            if key.split("/")[0] in later:  # the first day's slots may have passed by now
                assert len(got) > 40 and snaps[0].parts > 1
        else:  # every batch failed: unknown, with a failure per restaurant, never "empty"
            assert not snaps[0].complete and got == set()
            assert {f.ref for f in snaps[0].failures} == {str(200001 + i) for i in range(120)}
            errors = {f.error.split(":")[0] for f in snaps[0].failures}
            assert errors <= {"server_error", "circuit_open"}  # the breaker opens after 20
            assert all(f.scope == "venue" for f in snaps[0].failures)
    stat_docs = [decode_stats(m.value()) for m in stats]
    assert len(stat_docs) == 8
    assert sorted(s.complete for s in stat_docs) == [False] * 4 + [True] * 4
