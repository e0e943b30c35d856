"""The simulated market: deterministic by seed, churn at the configured share, releases,
scripted overlay, and the bucket window rule shared with the clients."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from producers.windows import bucket_window, hhmm, minutes
from simulator.market import Market, Overlay, Override, parse_actual_time

NY = ZoneInfo("America/New_York")
T0 = int(datetime(2026, 3, 2, 12, 0, tzinfo=NY).timestamp() * 1000)  # a Monday, noon
DAY = date(2026, 3, 4)
EVENING = bucket_window("19:00", ("15:00", "19:00"))


def keys(slots: list) -> set[tuple[int, str]]:
    return {(s.venue.id, s.actual_time) for s in slots}


def test_bucket_windows_split_the_day_without_overlap() -> None:
    assert bucket_window("15:00", ("15:00", "19:00")) == (minutes("13:00"), minutes("17:00"))
    assert bucket_window("19:00", ("19:00", "15:00")) == (minutes("17:00"), minutes("21:30"))
    # one bucket alone: T-120 .. T+150
    assert bucket_window("19:00", ("19:00",)) == (minutes("17:00"), minutes("21:30"))
    # far apart buckets are clamped to what one query returns (±150)
    assert bucket_window("12:00", ("12:00", "22:00")) == (minutes("10:00"), minutes("14:30"))
    assert hhmm(1290) == "21:30"
    with pytest.raises(ValueError):
        bucket_window("18:00", ("15:00", "19:00"))


def test_same_seed_same_market_other_seed_other_market() -> None:
    a = Market(seed=3, venues=60).open_slots("resy", DAY, *EVENING, 2, T0)
    b = Market(seed=3, venues=60).open_slots("resy", DAY, *EVENING, 2, T0)
    c = Market(seed=4, venues=60).open_slots("resy", DAY, *EVENING, 2, T0)
    assert keys(a) == keys(b)
    assert len(a) > 30
    assert keys(a) != keys(c)
    m = Market(seed=3, venues=60)
    v = m.venues["resy"][0]
    assert v.time_zone == "EST5EDT" and v.name and v.neighborhood
    assert m.venue("resy", v.id) is v and m.venue("opentable", v.id) is None


def test_slots_stay_in_the_window_and_fit_the_party() -> None:
    m = Market(seed=5, venues=80)
    slots = m.open_slots("opentable", DAY, *EVENING, 6, T0)
    assert slots
    for s in slots:
        assert EVENING[0] <= s.minute < EVENING[1]
        assert s.party_min <= 6 <= s.party_max
        assert s.seating and len(set(s.seating)) == len(s.seating)
        assert s.actual_time.startswith("2026-03-04 ")


def test_churn_changes_about_the_configured_share_per_minute() -> None:
    m = Market(seed=11, venues=400, churn=0.02)
    before = keys(m.open_slots("resy", DAY, *EVENING, 2, T0))
    after = keys(m.open_slots("resy", DAY, *EVENING, 2, T0 + 60_000))
    changed = len(before ^ after) / len(before)
    assert 0.005 < changed < 0.06, changed
    assert before & after  # most slots stay
    # both directions happen: bookings close slots, cancellations open them
    assert before - after and after - before


def test_no_churn_means_no_change_over_time() -> None:
    m = Market(seed=11, venues=100, churn=0.0)
    a = keys(m.open_slots("resy", DAY, *EVENING, 2, T0))
    b = keys(m.open_slots("resy", DAY, *EVENING, 2, T0 + 3_600_000))
    assert a == b


def test_a_day_is_released_at_the_venue_release_time_and_past_slots_are_gone() -> None:
    m = Market(seed=2, venues=300, churn=0.0)
    today = date(2026, 3, 2)
    far = date(2026, 3, 9)  # today + horizon
    at_8 = int(datetime(2026, 3, 2, 8, 59, tzinfo=NY).timestamp() * 1000)
    at_9 = int(datetime(2026, 3, 2, 9, 0, tzinfo=NY).timestamp() * 1000)
    venue = next(
        v
        for v in m.venues["resy"]
        if v.release_at == 9 * 60 and v.horizon == 7 and m.slots(v, far, 0, 1440, 2, at_9)
    )
    assert m.slots(venue, far, 0, 1440, 2, at_8) == []  # not yet released
    assert m.slots(venue, date(2026, 3, 10), 0, 1440, 2, at_9) == []  # beyond the horizon
    evening = int(datetime(2026, 3, 2, 20, 0, tzinfo=NY).timestamp() * 1000)
    assert all(s.minute > 20 * 60 for s in m.slots(venue, today, 0, 1440, 2, evening))


def test_overlay_opens_and_closes_exact_slots() -> None:
    m = Market(seed=9, venues=20, churn=0.0)
    venue = m.venues["resy"][3]
    overlay = Overlay()
    base = keys(m.open_slots("resy", DAY, *EVENING, 2, T0, overlay))
    overlay.set("resy", venue.id, "2026-03-04 18:10:00", Override(True, ("Bar",), 2, 4))
    opened = m.open_slots("resy", DAY, *EVENING, 2, T0, overlay)
    assert keys(opened) == base | {(venue.id, "2026-03-04 18:10:00")}
    added = next(s for s in opened if s.minute == 18 * 60 + 10 and s.venue is venue)
    assert added.seating == ("Bar",) and (added.party_min, added.party_max) == (2, 4)
    victim = sorted(base)[0]
    overlay.set("resy", victim[0], victim[1], Override(False))
    assert victim not in keys(m.open_slots("resy", DAY, *EVENING, 2, T0, overlay))
    # a party the scripted slot does not take does not see it
    assert (venue.id, "2026-03-04 18:10:00") not in keys(
        m.open_slots("resy", DAY, *EVENING, 6, T0, overlay)
    )
    assert len(overlay) == 2
    overlay.clear()
    assert keys(m.open_slots("resy", DAY, *EVENING, 2, T0, overlay)) == base


def test_parse_actual_time() -> None:
    assert parse_actual_time("2026-02-18 20:30:00") == (date(2026, 2, 18), 1230)
    assert parse_actual_time("2026-02-18T20:30") == (date(2026, 2, 18), 1230)
    with pytest.raises(ValueError):
        parse_actual_time("2026-02-18 25:30:00")
