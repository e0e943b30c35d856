"""The product's clock (``drops.clock``): ``DROPS_CLOCK_START`` starts a process's clock at an
instant, processes given the same start and anchor share one clock, and the producer and the
simulator read it: a whole cycle at the test's instant (``DROPS_TEST_NOW``) polls the window
of that instant and sees exactly the simulator's slots of that instant."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from bench.pipeline import settings_env
from domain import calendar
from drops.clock import Clock, parse_instant
from drops.errors import ConfigError
from drops.settings import Settings
from producers.providers.resy import ResyClient
from producers.providers.transport import Policy, Transport
from producers.service import ProducerService
from schemas import decode_snapshot
from simulator.market import Market
from simulator.server import create_app
from tests.conftest import base_settings, now_under_test

NY = ZoneInfo("America/New_York")


def test_an_instant_needs_its_offset() -> None:
    assert parse_instant("2026-12-01T19:50:00Z") == datetime(2026, 12, 1, 19, 50, tzinfo=UTC)
    assert parse_instant("2026-12-01T14:50:00-05:00") == datetime(2026, 12, 1, 19, 50, tzinfo=UTC)
    with pytest.raises(ValueError, match="UTC offset"):
        parse_instant("2026-12-01T19:50:00")
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_instant("yesterday")


def test_a_started_clock_runs_at_normal_speed_from_its_instant() -> None:
    start = datetime(2026, 3, 8, 6, 59, tzinfo=UTC)
    ten_seconds_ago = time.time() - 10.0
    clock = Clock.starting_at(start, anchor=ten_seconds_ago)
    assert timedelta(seconds=10) <= clock.now() - start < timedelta(seconds=12)
    assert clock.shifted and not Clock().shifted
    assert abs(Clock().time() - time.time()) < 1.0  # the default is the machine's clock
    assert abs(clock.now_ms() - int(clock.time() * 1000)) < 1000


def test_the_setting_is_checked_and_shared_with_child_processes() -> None:
    with pytest.raises(ConfigError, match=r"clock\.start"):
        Settings(clock_start="2026-12-01 19:50")  # no offset: ambiguous
    assert not Settings(clock_start="").clock().shifted
    s = Settings(clock_start="2026-12-01T07:04:00Z")
    assert s.clock_.anchor is not None  # fixed when the settings were read
    # a child started later with the same pair reads the same clock
    env = settings_env(s)
    assert env["DROPS_CLOCK__START"] == "2026-12-01T07:04:00Z"
    child = Settings(
        clock_start=env["DROPS_CLOCK__START"], clock_anchor=float(env["DROPS_CLOCK__ANCHOR"])
    )
    assert child.clock() == s.clock() == s.model_copy().clock()
    assert abs(s.clock().now() - datetime(2026, 12, 1, 7, 4, tzinfo=UTC)) < timedelta(seconds=5)


class Recording:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def write(self, topic: str, key: str, value: bytes) -> None:
        if topic.endswith("snapshots"):
            self.values.append(value)

    def flush(self, timeout: float = 30.0) -> int:
        return 0


@pytest.mark.clock
def test_a_cycle_at_the_test_instant_polls_that_instants_window_and_slots() -> None:
    """At any instant (02:04 before the slide, 02:06 after it, 14:50 when today's 15:00 slots
    are nearly gone, 23:59, a daylight-saving day), the producer's window and the simulator's
    market agree, and no slot that has started is reported as open."""
    settings = base_settings(days=14, providers="resy", resy_per_page=50)
    clock = settings.clock()
    sim = create_app(Market(seed=9, venues=60), api_key="k", scripted=True, clock=clock)

    async def scenario() -> None:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim), base_url="http://sim")
        transport = Transport(Policy(max_retries=0), client=client)
        resy = ResyClient(transport, "http://sim", "k", "Mozilla/5.0 test", per_page=50)
        writer = Recording()
        service = ProducerService(settings, {"resy": resy}, writer)
        report = await service.run_once()  # "now" is the settings' clock
        assert report.finished == 28 and report.errors == 0 and report.incomplete == 0
        now = clock.now()
        first = calendar.today(now, NY)
        assert [b.date for b in service.window][::2] == [
            first + timedelta(days=i) for i in range(14)
        ]
        local_now = now.astimezone(NY).replace(tzinfo=None)
        by_key: dict[str, set[str]] = {}
        for value in writer.values:
            snap = decode_snapshot(value)
            assert snap.kind == "poll" and snap.complete  # a start never rebuilds baselines
            by_key.setdefault(snap.key, set()).update(s.slot_id for s in snap.slots)
            for s in snap.slots:  # nothing that has already started
                assert datetime.fromisoformat(s.actual_time) > local_now - timedelta(minutes=1)
        for bucket in service.window:
            ref = await client.get(
                "/_control/slots",
                params={
                    "date": str(bucket.date),
                    "time_slot": bucket.time_slot,
                    "provider": "resy",
                },
            )
            expected = {s["slot_id"] for s in ref.json()["slots"]}
            assert by_key[f"{bucket.bucket_id}/resy"] == expected, bucket.bucket_id
        later = [b for b in service.window if b.date > first + timedelta(days=1)]
        assert all(by_key[f"{b.bucket_id}/resy"] for b in later)  # the market has slots
        await client.aclose()

    asyncio.run(scenario())


@pytest.mark.clock
def test_the_window_at_the_test_instant() -> None:
    now = now_under_test()
    w = calendar.window(now, "nyc", NY)
    assert len(w) == 28 and len({b.bucket_id for b in w}) == 28
    local = now.astimezone(NY)
    first = w[0].date
    # the window starts today, or yesterday until the 02:05 slide
    assert first == (
        local.date() if local.time() >= calendar.SLIDE_AT else local.date() - timedelta(days=1)
    )
    slide = calendar.next_slide(now, NY)
    assert timedelta(0) < slide - now <= timedelta(hours=25)
    assert calendar.window(slide, "nyc", NY)[0].date == first + timedelta(days=1)


def test_drops_up_gives_every_stage_one_clock() -> None:
    from shell.supervisor import child_env

    s = Settings(clock_start="2026-03-08T06:59:00Z")
    env = child_env(s)
    child = Settings(
        clock_start=env["DROPS_CLOCK__START"], clock_anchor=float(env["DROPS_CLOCK__ANCHOR"])
    )
    assert child.clock() == s.clock()
    assert "DROPS_CLOCK__ANCHOR" not in child_env(Settings(clock_start=""))
