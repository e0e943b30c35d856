"""The service shell: a stream whose fetch still runs is skipped, not queued; a bucket closed
while its fetch runs writes nothing; a crashed fetch writes nothing (unknown, never empty)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from producers.providers.base import BucketQuery, FetchResult, SlotTable
from producers.service import ProducerService
from schemas import Slot, decode_snapshot, decode_stats
from tests.conftest import base_settings

NY = ZoneInfo("America/New_York")


class SlowProvider:
    name = "resy"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls: list[str] = []

    async def fetch(self, query: BucketQuery) -> FetchResult:
        self.calls.append(f"{query.date} {query.time_slot}")
        if query.date == "2026-03-02" and query.time_slot == "19:00":
            raise RuntimeError("bug")
        await self.gate.wait()
        return FetchResult("resy", SlotTable("resy"), True)

    async def aclose(self) -> None:
        return None


class Recording:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, bytes]] = []

    def write(self, topic: str, key: str, value: bytes) -> None:
        self.records.append((topic, key, value))

    def flush(self, timeout: float = 30.0) -> int:
        return 0


def test_skip_if_running_close_while_fetching_and_crashes() -> None:
    async def scenario() -> None:
        settings = base_settings(days=2, providers="resy")
        provider, writer = SlowProvider(), Recording()
        service = ProducerService(settings, {"resy": provider}, writer)
        t0 = datetime(2026, 3, 2, 12, tzinfo=NY)
        plan = service.start_cycle(t0)
        assert len(plan.jobs) == 4
        await asyncio.sleep(0.01)
        assert len(service.running) == 3  # the crashed one is done
        busy = sorted(service.running)
        plan = service.start_cycle(t0)
        assert sorted(plan.skipped) == busy and len(busy) == 3
        assert [j.key for j in plan.jobs] == ["nyc:2026-03-02:1900/resy"]  # crashed: retried
        assert plan.jobs[0].kind == "poll"  # the first window after a start: polls only
        await asyncio.sleep(0.01)
        # the window slides while 2026-03-02 15:00 is still being fetched
        plan = service.start_cycle(datetime(2026, 3, 3, 3, tzinfo=NY))
        assert [b.bucket_id for b in plan.closed] == ["nyc:2026-03-02:1500", "nyc:2026-03-02:1900"]
        provider.gate.set()
        while service.running:
            await asyncio.sleep(0.01)
        snaps = [decode_snapshot(v) for t, _, v in writer.records if t == settings.topics.snapshots]
        kinds = sorted((s.bucket_id, s.kind) for s in snaps)
        assert ("nyc:2026-03-02:1500", "poll") not in kinds  # closed while fetching
        assert ("nyc:2026-03-02:1500", "close") in kinds
        assert ("nyc:2026-03-03:1500", "poll") in kinds
        assert ("nyc:2026-03-04:1500", "baseline") in kinds  # entered the window: its build
        assert service.report.errors == 2  # the 19:00 bucket crashed twice; nothing written
        assert not any(s.bucket_id == "nyc:2026-03-02:1900" and s.kind != "close" for s in snaps)
        await service.shutdown(grace=0.1)

    asyncio.run(scenario())


class OneSlotProvider:
    """Every bucket has one slot; one bucket crashes (its build still ends the round)."""

    name = "resy"

    def __init__(self, crash: str = "") -> None:
        self.crash = crash

    async def fetch(self, query: BucketQuery) -> FetchResult:
        if f"{query.date} {query.time_slot}" == self.crash:
            raise RuntimeError("bug")
        slot = Slot("resy", "7", "V", f"{query.date} {query.time_slot}:00", "EST5EDT")
        return FetchResult("resy", SlotTable.of("resy", [slot]), True, venues=1)

    async def aclose(self) -> None:
        return None


def test_a_start_polls_and_the_slide_builds_baselines(caplog: pytest.LogCaptureFixture) -> None:
    settings = base_settings(providers="resy")
    writer = Recording()
    provider = OneSlotProvider(crash="2026-03-16 15:00")
    service = ProducerService(settings, {"resy": provider}, writer)
    with caplog.at_level(logging.INFO, logger="drops.producer"):
        report = asyncio.run(service.run_once(datetime(2026, 3, 2, 12, tzinfo=NY)))
    assert report.finished == 28 and report.errors == 0
    stats = [decode_stats(v) for t, _, v in writer.records if t == settings.topics.stats]
    assert len(stats) == 28 and all(s.kind == "poll" for s in stats)  # a start sends polls
    assert not [r for r in caplog.records if r.getMessage().startswith("baseline_")]
    # the window slides while the producer runs: the two new buckets get baseline builds
    writer.records.clear()
    with caplog.at_level(logging.INFO, logger="drops.producer"):
        report = asyncio.run(service.run_once(datetime(2026, 3, 3, 3, tzinfo=NY)))
    assert report.finished == 27 and report.errors == 1 and report.closed == 2
    lines = [r.__dict__ for r in caplog.records if r.getMessage() == "baseline_progress"]
    assert [ln["progress"] for ln in lines] == ["1/2", "2/2"]
    assert lines[-1]["slots_total"] == 1 and lines[-1]["incomplete"] == 1
    assert lines[-1]["line"].startswith("baseline 2/2 done, 1 slots, 1 incomplete, ")
    assert all(ln["elapsed_s"] >= 0 for ln in lines)
    (done,) = [r.__dict__ for r in caplog.records if r.getMessage() == "baseline_complete"]
    assert done["progress"] == "2/2"
    stats = [decode_stats(v) for t, _, v in writer.records if t == settings.topics.stats]
    assert sorted((s.bucket_id, s.kind) for s in stats if s.kind == "baseline") == [
        ("nyc:2026-03-16:1900", "baseline")
    ]
    # the crashed build is built again next cycle: a new round of one
    provider.crash = ""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="drops.producer"):
        asyncio.run(service.run_once(datetime(2026, 3, 3, 3, 1, tzinfo=NY)))
    again = [
        r.__dict__["progress"] for r in caplog.records if r.getMessage() == "baseline_progress"
    ]
    assert again == ["1/1"]
    assert service.due == set()
    # a restarted producer (a new service) polls every stream: the baselines stay put
    writer.records.clear()
    restarted = ProducerService(settings, {"resy": provider}, writer)
    asyncio.run(restarted.run_once(datetime(2026, 3, 3, 3, 2, tzinfo=NY)))
    snaps = [decode_snapshot(v) for t, _, v in writer.records if t == settings.topics.snapshots]
    assert len(snaps) == 28 and {s.kind for s in snaps} == {"poll"}
