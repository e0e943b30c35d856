"""Unknown is never empty, end to end: for each fault a provider can produce, the simulator
(scripted: the market never changes, nothing is opened) → the real producer → the real
broker → the real processor (``python -m processors``) → the drops topic (read_committed).
The market does not change, so every drop would be a false one: there must be none, while
the faults really did make some snapshots incomplete, the first ones included (the processor
takes a stream's first snapshot as its baseline: a failed page read there as "no slots" would
make the venues' slots drop at the next poll)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bench.processor_harness import ProcessorProc, read_all, wait_processed
from drops.settings import Settings
from producers.kafka import Writer
from producers.providers import factory
from producers.service import ProducerService
from schemas import decode_drop, decode_snapshot
from simulator.control import SimControl, serve
from simulator.market import Market
from simulator.server import create_app
from tests.conftest import now_under_test

pytestmark = pytest.mark.kafka

PORTS = {"5xx": 28021, "timeout": 28022, "429": 28023, "malformed": 28024, "truncated": 28025,
         "slow": 28026}  # fmt: skip
FAULT = {  # the fault, at a set rate, on every Resy request (search pages and finds)
    "5xx": {"rate": 0.4},
    "timeout": {"rate": 0.4, "delay_ms": 1000},  # longer than the request timeout (0.5 s)
    "429": {"rate": 0.4, "retry_after": 0.2},
    "malformed": {"rate": 0.4},
    "truncated": {"rate": 0.4},
    "slow": {"rate": 0.35, "delay_ms": 300},  # slow but within the timeout (2 s): no failure
}
CYCLES = 4  # a first fetch (the processor takes it as the baseline) and three polls
BUCKETS = 4  # two days


# the test's date matters (11:00 on it: a daylight-saving day, the window's first day), not the
# fault: one kind is enough for the clock runs (make test-clock)
KINDS = [pytest.param(k, marks=pytest.mark.clock) if k == "5xx" else k for k in FAULT]


@pytest.mark.parametrize("kind", KINDS)
def test_faults_never_make_a_drop(kind: str, kafka_settings: Settings, tmp_path: Path) -> None:
    tz = ZoneInfo("America/New_York")
    # 11:00 on the test's date (DROPS_TEST_NOW): every bucket of the window still has slots
    now = now_under_test().astimezone(tz).replace(hour=11, minute=0, second=0, microsecond=0)
    url = f"http://127.0.0.1:{PORTS[kind]}"
    settings = kafka_settings.model_copy(
        update={
            "resy_url": url,
            "providers": "resy",
            "days": BUCKETS // 2,
            "resy_per_page": 25,  # twelve pages a bucket: faults hit the baselines too
            "request_timeout": 0.5 if kind == "timeout" else 2.0,
            "max_retries": 1,  # so that some pages and fetches do fail for good
            "retry_base": 0.05,
            "retry_max_delay": 0.2,
            "breaker_failures": 1000,
        }
    )
    key = settings.providers.resy.api_key.get_secret_value()
    app = create_app(Market(seed=11, venues=300), api_key=key, scripted=True)
    with serve(app, port=PORTS[kind]), SimControl(url) as sim:
        sim.freeze(int(now.timestamp() * 1000))
        sim.fault(kind, provider="resy", **FAULT[kind])  # type: ignore[arg-type]

        async def produce() -> list[int]:
            writer = Writer(settings)
            service = ProducerService(settings, factory.build(settings), writer)
            incomplete = []
            for _ in range(CYCLES):
                report = await service.run_once(now)
                assert report.errors == 0 and report.finished == BUCKETS
                incomplete.append(report.incomplete)
            await service.shutdown(grace=1.0)
            assert writer.errors == 0
            return incomplete

        incomplete = asyncio.run(produce())
        counts = sim.stats()["counts"]
    assert counts.get(f"fault_{kind}", 0) > 0, counts

    snaps = [decode_snapshot(v) for _, v, _ in read_all(settings, settings.topics.snapshots)]
    assert len({s.snapshot_id for s in snaps}) == BUCKETS * CYCLES
    assert all(len(s) > 0 for s in snaps if s.complete)  # the market has slots
    failed = [s for s in snaps if not s.complete]
    if kind == "slow":
        assert failed == [] and sum(incomplete) == 0
    else:  # the faults did make fetches fail, the first ones too (the processor's baselines)
        assert sum(incomplete) > 0 and all(s.failures for s in failed)
        first = {s.key: s.polled_at_ms for s in sorted(snaps, key=lambda s: -s.polled_at_ms)}
        assert any(s.polled_at_ms == first[s.key] for s in failed), "no first fetch was hit"

    proc = ProcessorProc(settings, tmp_path / "processor.log")
    try:
        wait_processed(settings, proc, deadline_s=90)
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]
    events = read_all(settings, settings.topics.drops)
    assert events == [], f"{len(events)} false drops after {kind} faults"
    assert read_all(settings, settings.topics.deadletter) == []  # nothing was rejected either


REACH_PORT = 28027
NARROW = (120, 120)  # the search answers ±120 minutes; the windows keep up to 150 (21:29)


def test_a_search_narrower_than_the_windows_and_failed_pages_make_no_false_drop(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """The issue's run, end to end: the area search answers ±120 minutes of ``time_filter``
    while the 19:00 window keeps starts up to 21:29, and search pages fail past their retries,
    so the per-venue find (the whole day) reads their venues. Slots opened by the script
    within the search's reach are each reported once; slots the search never shows (the
    market's 21:15s, and a scripted 21:20) never are; nothing closes."""
    tz = ZoneInfo("America/New_York")
    t0 = datetime(2026, 3, 2, 11, 0, tzinfo=tz)  # a Monday; the market is frozen at t0
    day = t0.date().isoformat()
    url = f"http://127.0.0.1:{REACH_PORT}"
    settings = kafka_settings.model_copy(
        update={
            "resy_url": url,
            "providers": "resy",
            "days": 1,  # two buckets: 15:00 and 19:00
            "resy_per_page": 20,  # ten pages a bucket
            "request_timeout": 2.0,
            "max_retries": 1,  # a page that fails twice has failed: the fallback reads it
            "retry_base": 0.02,
            "retry_max_delay": 0.05,
            "breaker_failures": 1000,
        }
    )
    key = settings.providers.resy.api_key.get_secret_value()
    app = create_app(Market(seed=11, venues=200, reach=NARROW), api_key=key, scripted=True)
    scripted: dict[str, str] = {}  # slot ids the search shows once opened -> what they are
    never: set[str] = set()  # opened where the search does not reach
    with serve(app, port=REACH_PORT), SimControl(url) as sim:
        sim.freeze(int(t0.timestamp() * 1000))
        venues = [v["id"] for v in sim.venues("resy")]
        # off the market's 15-minute grid, so never open before the script opens them
        batches = [
            [(venues[i], f"{day} 20:10:00") for i in (3, 47, 101, 188)]
            + [(venues[i], f"{day} 14:20:00") for i in (12, 150)],
            [(venues[i], f"{day} 17:05:00") for i in (25, 77, 133, 199)]
            + [(venues[i], f"{day} 20:55:00") for i in (60, 160)],
        ]
        beyond = [(venues[i], f"{day} 21:20:00") for i in range(0, 200, 7)]

        async def produce() -> list[int]:
            writer = Writer(settings)
            service = ProducerService(settings, factory.build(settings), writer)
            incomplete = []
            for cycle in range(9):
                if cycle == 1:  # every poll after the baseline build loses pages
                    # (a venue the baseline build could not read takes its first sighting as
                    # its baseline: test_faults_never_make_a_drop covers faulted baselines)
                    sim.fault("5xx", provider="resy", endpoint="search", rate=0.5)
                if cycle in (2, 4):  # after the baseline and a poll: open some slots
                    for vid, at in batches[cycle // 2 - 1]:
                        scripted[sim.open("resy", vid, at)] = f"{vid} {at}"
                if cycle == 3:
                    never.update(sim.open("resy", vid, at) for vid, at in beyond)
                if cycle == 7:  # the last two polls read every page by search
                    sim.clear_faults()
                report = await service.run_once(t0 + timedelta(seconds=30 * cycle))
                assert report.errors == 0 and report.finished == 2
                incomplete.append(report.incomplete)
            await service.shutdown(grace=1.0)
            assert writer.errors == 0
            return incomplete

        incomplete = asyncio.run(produce())
        counts = sim.stats()["counts"]
    assert counts.get("fault_5xx", 0) > 0 and counts.get("find_requests", 0) > 0, counts
    assert incomplete[0] == 0 and sum(incomplete[1:7]) > 0 and incomplete[7:] == [0, 0], incomplete

    proc = ProcessorProc(settings, tmp_path / "processor.log")
    try:
        wait_processed(settings, proc, deadline_s=90)
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]
    events = [decode_drop(v) for _, v, _ in read_all(settings, settings.topics.drops)]
    opens = [e.slot_id for e in events if e.event == "open"]
    false_drops = [f"{e.venue_id} {e.actual_time} ({e.read_via})" for e in events
                   if e.event == "open" and e.slot_id not in scripted]  # fmt: skip
    assert false_drops == [], f"{len(false_drops)} false drops: {false_drops[:10]}"
    assert [e for e in events if e.event == "close"] == [], "false closes"
    missed = [what for sid, what in scripted.items() if sid not in opens]
    assert missed == [], f"scripted drops not reported: {missed}"
    assert sorted(opens) == sorted(scripted)  # every scripted drop, once
    assert not never & set(opens)
    assert read_all(settings, settings.topics.deadletter) == []
    snaps = [decode_snapshot(v) for _, v, _ in read_all(settings, settings.topics.snapshots)]
    vias = {s.read_via for snap in snaps for s in snap.slots}
    assert vias == {"search", "fallback"}  # the fallback did read venues the search lost
