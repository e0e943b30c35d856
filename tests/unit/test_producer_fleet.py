"""Producer replicas without Kafka: which streams a replica polls, moves, budget shares."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from drops.settings import Settings
from producers.core import stream_part
from producers.fleet import session_timeout_ms
from producers.providers.transport import Policy, Transport
from producers.service import ProducerService


class Sink:
    def write(self, topic: str, key: str, value: bytes) -> None: ...

    def flush(self, timeout: float = 30.0) -> int:
        return 0


class Slow:
    async def fetch(self, query: object) -> None:
        await asyncio.sleep(3600)  # still running: the test looks at what was started


async def drain(svc: ProducerService) -> None:
    for t in svc.running.values():
        t.cancel()
    await asyncio.gather(*svc.running.values(), return_exceptions=True)
    svc.running.clear()


def test_session_timeout_allows_fail_over_within_two_intervals() -> None:
    for interval in (5.0, 8.0, 30.0, 60.0, 120.0):
        ms = session_timeout_ms(interval)
        assert 6_000 <= ms <= 45_000
        assert ms + 1_000 < 2 * interval * 1000  # session expiry + a rebalance


def test_a_replica_starts_only_its_streams_and_moved_ones_at_once() -> None:
    s = Settings(days=3, producer_partitions=6)
    now = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)

    async def run() -> None:
        svc = ProducerService(s, {"resy": Slow()}, Sink())  # type: ignore[dict-item]
        svc.held = frozenset({0, 1, 2})
        plan = svc.start_cycle(now)
        keys = {j.key for j in plan.jobs}
        assert keys and all(stream_part(k, 6) in {0, 1, 2} for k in keys)
        await drain(svc)
        svc.reassign(frozenset({0, 1, 2, 3, 4, 5}))  # the other replica died
        moved = set(svc.running)
        assert moved and all(stream_part(k, 6) in {3, 4, 5} for k in moved)
        await drain(svc)
        svc.reassign(frozenset({0}))  # revoked: not scheduled again
        assert not svc.running
        assert all(stream_part(j.key, 6) == 0 for j in svc.start_cycle(now).jobs)
        await drain(svc)

    asyncio.run(run())


def test_budget_shares_add_up_to_the_fleet_budget() -> None:
    async def run() -> None:
        t = Transport(Policy(concurrency=8, rate_limit=10.0))
        t.configure("resy", 8, 10.0)
        lane = t.lane("resy")
        assert (lane.semaphore.limit, lane.rate) == (8, 10.0)  # one replica: as today
        await t.share(12 / 24)
        assert (lane.semaphore.limit, lane.rate) == (4, 5.0)
        await t.share(1 / 24)
        assert lane.semaphore.limit == 1 and abs(lane.rate - 10 / 24) < 1e-9
        await t.aclose()

    asyncio.run(run())
