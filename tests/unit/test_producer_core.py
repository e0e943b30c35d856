"""The producer's pure decisions: planning, skip-if-running, baselines, closes, chunking."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from domain.calendar import Bucket, window
from producers import core
from producers.providers.base import FetchResult, SlotTable
from schemas import Failure, Slot, decode_snapshot, decode_stats, encode

NY = ZoneInfo("America/New_York")
PROVIDERS = ("resy", "opentable")


def win(day: int, hour: int = 12) -> list[Bucket]:
    return window(datetime(2026, 3, day, hour, tzinfo=NY), "nyc", NY)


def test_the_first_cycle_after_a_start_polls_every_stream() -> None:
    # a first start or a restart: the processor holds the baselines (or takes each stream's
    # first snapshot as its baseline); a restart must never send baseline builds
    plan = core.plan_cycle([], win(2), PROVIDERS, set(), set())
    assert len(plan.jobs) == 56 and all(j.kind == "poll" for j in plan.jobs)
    assert len(plan.entered) == 28 and plan.closed == [] and plan.skipped == []
    assert plan.due == set()
    assert plan.jobs[0].key == "nyc:2026-03-02:1500/resy"


def test_running_streams_are_skipped_not_queued() -> None:
    w = win(2)
    running = {"nyc:2026-03-02:1500/resy", "nyc:2026-03-05:1900/opentable"}
    plan = core.plan_cycle(w, w, PROVIDERS, running, set())
    assert sorted(plan.skipped) == sorted(running)
    assert len(plan.jobs) == 54 and all(j.kind == "poll" for j in plan.jobs)
    assert not {j.key for j in plan.jobs} & running


def test_the_daily_slide_closes_two_and_baselines_two() -> None:
    before, after = win(2, 23), win(3, 3)  # the slide at 02:05 happened in between
    plan = core.plan_cycle(before, after, PROVIDERS, set(), set())
    assert [b.bucket_id for b in plan.closed] == ["nyc:2026-03-02:1500", "nyc:2026-03-02:1900"]
    assert [b.bucket_id for b in plan.entered] == ["nyc:2026-03-16:1500", "nyc:2026-03-16:1900"]
    builds = sorted(f"nyc:2026-03-16:{t}/{p}" for t in ("1500", "1900") for p in PROVIDERS)
    assert sorted(j.key for j in plan.jobs if j.kind == "baseline") == builds
    assert sorted(plan.due) == builds
    # a build not written yet (its fetch crashed) is built again; one written is not
    due = plan.due - {"nyc:2026-03-16:1500/resy"}
    plan = core.plan_cycle(after, after, PROVIDERS, set(), due)
    assert sorted(j.key for j in plan.jobs if j.kind == "baseline") == sorted(due)
    # a due build of a bucket that left the window is forgotten
    plan = core.plan_cycle(after, win(17, 3), PROVIDERS, set(), due)
    assert not plan.due & due


def test_a_producer_down_across_the_slide_polls_the_new_buckets() -> None:
    # started after the slide it missed: the new buckets are polled like the rest, and the
    # processor, which has never seen them, takes their first snapshot as the baseline
    plan = core.plan_cycle([], win(3, 3), PROVIDERS, set(), set())
    assert {j.kind for j in plan.jobs if j.bucket.date == date(2026, 3, 16)} == {"poll"}


def slots(n: int) -> SlotTable:
    return SlotTable.of("resy", [
        Slot("resy", str(1000 + i // 4), f"Venue {i}", f"2026-03-04 {17 + i % 4}:00:00",
             "EST5EDT", "SoHo", ("Bar", "Dining Room"), 1, 4, "rgs://resy/" + "x" * 100)
        for i in range(n)
    ])  # fmt: skip


JOB = core.Job(Bucket("nyc", date(2026, 3, 4), "19:00"), "resy", "poll")


def test_records_split_into_parts_that_each_carry_the_whole_fetch_status() -> None:
    failures = [Failure("page", "3", "server_error: 503")]
    result = FetchResult("resy", slots(4500), False, failures, 1125, 50, 4)
    records = core.to_records(result, JOB, "nyc", "sid1", 1_000, 2000, 4_000_000)
    snaps = [decode_snapshot(value) for _, value in records]
    assert [(s.part, s.parts) for s in snaps] == [(0, 3), (1, 3), (2, 3)]
    assert [len(s.slots) for s in snaps] == [2000, 2000, 500]
    assert all(not s.complete and s.failures == tuple(failures) for s in snaps)
    assert all(s.key == "nyc:2026-03-04:1900/resy" and s.polled_at_ms == 1_000 for s in snaps)
    assert [sl for s in snaps for sl in s.slots] == result.as_slots()
    # the bytes packed from columns are the bytes schemas.encode writes for the same slots
    header, value = records[1]
    assert value == encode(replace(header, slots=snaps[1].slots))
    assert header.part == 1 and header.slots == ()


def test_parts_stay_under_the_record_limit() -> None:
    result = FetchResult("resy", slots(2000), True)
    records = core.to_records(result, JOB, "nyc", "sid", 1, 2000, 100_000)
    assert len(records) > 5
    assert all(len(v) <= 100_000 for _, v in records)
    assert sum(len(decode_snapshot(v).slots) for _, v in records) == 2000


def test_an_empty_fetch_is_one_empty_part_and_close_records() -> None:
    ((_header, value),) = core.to_records(
        FetchResult("resy", SlotTable("resy"), True), JOB, "nyc", "s", 5, 10, 10**6
    )
    snap = decode_snapshot(value)
    assert snap.complete and snap.slots == () and snap.parts == 1
    close = decode_snapshot(core.close_record(JOB.bucket, "resy", "nyc", "c1", 9))
    assert close.kind == "close" and close.key == JOB.key and close.slots == ()


def test_stats_record() -> None:
    result = FetchResult("resy", slots(3), False, [Failure("venue", "1", "x")], 7, 9, 2)
    stats = core.stats_for(result, JOB, "nyc", "sid", 11, 250)
    back = decode_stats(encode(stats))
    assert (back.venues, back.slots, back.failures, back.requests, back.retries) == (7, 3, 1, 9, 2)
    assert back.key == JOB.key and not back.complete and back.duration_ms == 250


def test_chunking_refuses_a_slot_that_cannot_fit() -> None:
    with pytest.raises(ValueError):
        core.chunk_ranges(slots(1), 10, core.RECORD_MARGIN + 10)
    assert core.chunk_ranges(SlotTable("resy"), 10, 10**6) == [(0, 0)]


def test_rebaseline_names_streams_of_the_window_only() -> None:
    w = win(2)
    jobs = core.rebaseline_targets(w, PROVIDERS, {"nyc:2026-03-04:1900"}, "resy")
    assert [j.key for j in jobs] == ["nyc:2026-03-04:1900/resy"]
    assert len(core.rebaseline_targets(w, PROVIDERS, set())) == 56  # a whole market
    with pytest.raises(ValueError, match="not in the market's window"):
        core.rebaseline_targets(w, PROVIDERS, {"nyc:2026-03-01:1900"})  # already gone
    with pytest.raises(ValueError, match="provider 'tock'"):
        core.rebaseline_targets(w, PROVIDERS, set(), "tock")
    (job,) = jobs
    marker = decode_snapshot(core.marker_record("rebaseline", job.bucket, "resy", "nyc", "r", 5))
    assert (marker.kind, marker.key, len(marker), marker.polled_at_ms) == (
        "rebaseline",
        job.key,
        0,
        5,
    )


def test_rebaseline_plan_reads_the_markets() -> None:
    from producers import rebaseline
    from tests.conftest import base_settings

    now = datetime(2026, 3, 2, 12, tzinfo=NY)
    s = base_settings(providers="resy")
    got = rebaseline.plan(s, ["nyc:2026-03-03:1500"], now=now)
    assert [(j.key, m) for j, m in got] == [("nyc:2026-03-03:1500/resy", "nyc")]
    assert len(rebaseline.plan(s, [], market="nyc", now=now)) == 28
    with pytest.raises(ValueError, match="market 'sf'"):
        rebaseline.plan(s, ["sf:2026-03-03:1500"], now=now)
    with pytest.raises(ValueError, match="not a bucket id"):
        rebaseline.plan(s, ["garbage"], now=now)


def test_a_venue_whose_slot_cannot_fit_a_record_is_a_venue_failure() -> None:
    """One venue with a slot over the record limit (a provider's 200 KB booking string)
    fails that venue, not the whole bucket's job on every cycle (before: to_records raised,
    and the job failed with nothing written)."""
    good = [
        Slot("resy", "1", "Good", f"2026-03-04 19:{m:02d}:00", "EST5EDT", "SoHo", ("Bar",), 1, 4)
        for m in range(3)
    ]
    huge = Slot("resy", "2", "Huge", "2026-03-04 19:30:00", "EST5EDT", "SoHo", (), 1, 4,
                "x" * 200_000)  # fmt: skip
    also = Slot("resy", "2", "Huge", "2026-03-04 20:00:00", "EST5EDT", "SoHo", (), 1, 4)
    after = Slot("resy", "3", "After", "2026-03-04 19:00:00", "EST5EDT", "Tribeca", (), 2, 2)
    result = FetchResult("resy", SlotTable.of("resy", [*good, huge, also, after]), True)
    records = core.to_records(result, JOB, "nyc", "sid", 1, 2000, 100_000)
    snaps = [decode_snapshot(v) for _, v in records]
    got = [sl for s in snaps for sl in s.slots]
    assert got == [*good, after]  # the venue that failed is unknown: none of its slots
    assert all(not s.complete for s in snaps)
    (failure,) = snaps[0].failures
    assert failure.scope == "venue" and failure.ref == "2" and "record limit" in failure.error
    assert all(len(v) <= 100_000 for _, v in records)


def test_long_display_strings_are_cut() -> None:
    """Venue names and neighborhoods are display strings: cut to 200 characters."""
    s = Slot("resy", "1", "N" * 5000, "2026-03-04 19:00:00", "EST5EDT", "H" * 900, (), 1, 4)
    records = core.to_records(
        FetchResult("resy", SlotTable.of("resy", [s]), True), JOB, "nyc", "sid", 1, 10, 10**6
    )
    (slot,) = decode_snapshot(records[0][1]).slots
    assert slot.venue_name == "N" * 200 and slot.neighborhood == "H" * 200
    assert decode_snapshot(records[0][1]).complete
