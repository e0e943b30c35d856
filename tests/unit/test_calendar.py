from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from domain import calendar

NY = ZoneInfo("America/New_York")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=NY)


def test_window_has_28_buckets_in_order() -> None:
    w = calendar.window(at("2026-11-29T12:00"), "nyc", NY)
    assert len(w) == 28
    assert w[0].bucket_id == "nyc:2026-11-29:1500"
    assert w[1].bucket_id == "nyc:2026-11-29:1900"
    assert w[-1].bucket_id == "nyc:2026-12-12:1900"
    assert w == sorted(w)


def test_window_slides_at_0205_local_not_at_midnight() -> None:
    before = calendar.window(at("2026-11-30T02:04"), "nyc", NY)
    after = calendar.window(at("2026-11-30T02:05"), "nyc", NY)
    assert before[0].date == date(2026, 11, 29)
    assert after[0].date == date(2026, 11, 30)
    left, entered = calendar.diff_windows(before, after)
    assert [b.bucket_id for b in left] == ["nyc:2026-11-29:1500", "nyc:2026-11-29:1900"]
    assert [b.bucket_id for b in entered] == ["nyc:2026-12-13:1500", "nyc:2026-12-13:1900"]


def test_utc_instant_maps_to_the_market_day() -> None:
    # 03:00 UTC on 30 Nov is 22:00 on 29 Nov in New York
    now = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    assert calendar.today(now, NY) == date(2026, 11, 29)


def test_spring_forward_slide_happens_at_the_end_of_the_gap() -> None:
    # 8 March 2026: 02:00 EST jumps to 03:00 EDT, so 02:05 does not exist that day
    now = datetime(2026, 3, 8, 1, 30, tzinfo=NY)
    slide = calendar.next_slide(now, NY)
    assert slide.astimezone(UTC) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT
    assert calendar.today(slide, NY) == date(2026, 3, 8)
    assert calendar.today(slide.astimezone(UTC) - timedelta(minutes=1), NY) == date(2026, 3, 7)


def test_fall_back_slide_happens_once() -> None:
    # 1 Nov 2026: 02:00 EDT falls back to 01:00 EST; 02:05 happens once (EST)
    now = datetime(2026, 11, 1, 0, 30, tzinfo=NY)
    slide = calendar.next_slide(now, NY)
    assert slide.astimezone(UTC) == datetime(2026, 11, 1, 7, 5, tzinfo=UTC)
    again = calendar.next_slide(slide, NY)
    assert again.astimezone(NY).date() == date(2026, 11, 2)


def test_bucket_start_keeps_wall_clock_across_dst() -> None:
    w = calendar.window(at("2026-03-07T12:00"), "nyc", NY)
    evening = [b for b in w if b.time_slot == "19:00"][:3]
    assert [b.starts_at(NY).hour for b in evening] == [19, 19, 19]
    offsets = {b.starts_at(NY).utcoffset() for b in evening}
    assert offsets == {timedelta(hours=-5), timedelta(hours=-4)}


@given(st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2030, 1, 1)))
def test_one_slide_per_day_and_window_always_28(naive: datetime) -> None:
    now = naive.replace(tzinfo=UTC)
    w = calendar.window(now, "nyc", NY)
    assert len(w) == 28 and len({b.bucket_id for b in w}) == 28
    slide = calendar.next_slide(now, NY)
    assert timedelta(0) < slide - now <= timedelta(hours=25)
    assert calendar.today(slide, NY) == calendar.today(now, NY) + timedelta(days=1)
    local = slide.astimezone(NY).time()
    assert local >= time(2, 5) and local < time(3, 6)
