"""The bucket calendar: which (date, time slot) buckets are watched at a given moment.

The window is ``days`` local dates starting at the market's "today", where today changes not
at midnight but at ``slide_at`` local time (02:05 by default), so the window slides once a
day at a quiet hour. All arithmetic is on local calendar dates, so daylight-saving changes
never add, drop or shift a bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from drops.clock import parse_time_of_day
from drops.errors import InvariantError
from schemas import ids

SLIDE_AT = time(2, 5)


@dataclass(frozen=True, slots=True, order=True)
class Bucket:
    market: str
    date: date
    time_slot: str  # "HH:MM", venue-local

    @property
    def bucket_id(self) -> str:
        return ids.bucket_id(self.market, self.date.isoformat(), self.time_slot)

    def starts_at(self, tz: ZoneInfo) -> datetime:
        hh, mm = (int(x) for x in self.time_slot.split(":"))
        return datetime.combine(self.date, time(hh, mm), tzinfo=tz)


def parse_slide_at(text: str) -> time:
    return parse_time_of_day(text)  # one parser, in the foundation (the settings check it)


def today(now: datetime, tz: ZoneInfo, slide_at: time = SLIDE_AT) -> date:
    """The market's first watched date at instant ``now`` (an aware datetime)."""
    local = now.astimezone(tz)
    return local.date() if local.time() >= slide_at else local.date() - timedelta(days=1)


def window(
    now: datetime,
    market: str,
    tz: ZoneInfo,
    days: int = 14,
    time_slots: tuple[str, ...] = ("15:00", "19:00"),
    slide_at: time = SLIDE_AT,
) -> list[Bucket]:
    """The ``days × len(time_slots)`` buckets watched at ``now``, in calendar order."""
    first = today(now, tz, slide_at)
    return [
        Bucket(market, first + timedelta(days=d), slot)
        for d in range(days)
        for slot in sorted(time_slots)
    ]


def next_slide(now: datetime, tz: ZoneInfo, slide_at: time = SLIDE_AT) -> datetime:
    """The next instant at which :func:`today` changes (aware, in ``tz``).

    On a spring-forward day whose slide time falls in the skipped hour, the slide happens at
    the end of the gap (the first instant whose local time is past ``slide_at``); on a
    fall-back day it happens once, at the first occurrence.
    """
    local = now.astimezone(tz)
    for offset in range(3):
        naive = datetime.combine(local.date() + timedelta(days=offset), slide_at)
        candidate = naive.replace(tzinfo=tz, fold=0)
        shown = candidate.astimezone(UTC).astimezone(tz)
        if shown.replace(tzinfo=None) != naive:  # inside a spring-forward gap
            candidate = _end_of_gap(shown, tz)
        if candidate > now:
            return candidate
    raise InvariantError("unreachable: a slide happens every day")


def _end_of_gap(after: datetime, tz: ZoneInfo) -> datetime:
    """Walk back from ``after`` to the first instant after the clock jumped."""
    step = timedelta(minutes=1)
    at = after.astimezone(UTC)
    while (at - step).astimezone(tz).utcoffset() == at.astimezone(tz).utcoffset():
        at -= step
    return at.astimezone(tz)


def diff_windows(old: list[Bucket], new: list[Bucket]) -> tuple[list[Bucket], list[Bucket]]:
    """(buckets that left, buckets that entered) between two windows."""
    old_set, new_set = set(old), set(new)
    return sorted(old_set - new_set), sorted(new_set - old_set)
