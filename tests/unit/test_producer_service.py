"""The service shell: a stream whose fetch still runs is skipped, not queued; a bucket closed
while its fetch runs writes nothing; a crashed fetch writes nothing (unknown, never empty)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

from producers.providers.base import BucketQuery, FetchResult, SlotTable
from producers.service import ProducerService
from schemas import decode_snapshot
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
        assert plan.jobs[0].kind == "baseline"
        await asyncio.sleep(0.01)
        # the window slides while 2026-03-02 15:00 is still being fetched
        plan = service.start_cycle(datetime(2026, 3, 3, 3, tzinfo=NY))
        assert [b.bucket_id for b in plan.closed] == ["nyc:2026-03-02:1500", "nyc:2026-03-02:1900"]
        provider.gate.set()
        while service.running:
            await asyncio.sleep(0.01)
        snaps = [decode_snapshot(v) for t, _, v in writer.records if t == settings.snapshot_topic]
        kinds = sorted((s.bucket_id, s.kind) for s in snaps)
        assert ("nyc:2026-03-02:1500", "baseline") not in kinds  # closed while fetching
        assert ("nyc:2026-03-02:1500", "close") in kinds
        assert ("nyc:2026-03-03:1500", "baseline") in kinds
        assert service.report.errors == 2  # the 19:00 bucket crashed twice; nothing written
        assert not any(s.bucket_id == "nyc:2026-03-02:1900" and s.kind != "close" for s in snaps)
        await service.shutdown(grace=0.1)

    asyncio.run(scenario())
