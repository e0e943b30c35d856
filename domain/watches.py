"""Matching drops against watches (pure): the predicate, the index, alert ids and texts.

:func:`matches` says whether one watch wants one drop. :class:`WatchIndex` finds every watch
that wants a drop without looking at the watches that cannot: each watch is filed under its
most selective criterion (its venues, else its neighborhoods with its dates or weekdays,
else its dates, else its weekdays, else its markets, else "any"), and a drop looks up the
eight keys it could be filed under; only those candidates are checked (each watch's criteria
compiled to sets once, each drop's facts worked out once). A drop that no watch wants costs
eight dictionary look-ups whatever the number of watches.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from schemas.watches import WEEKDAYS, Criteria, Watch

Key = tuple[str, ...]
DATE_SPAN_INDEXED = 62  # a date range up to this many days is filed under each of its dates


def _lower(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().lower() for v in values)


def slot_date(drop: dict[str, Any]) -> dt.date:
    return dt.date.fromisoformat(str(drop["actual_time"])[:10])


def slot_hhmm(drop: dict[str, Any]) -> str:
    return str(drop["actual_time"])[11:16]


@dataclass(frozen=True, slots=True)
class DropFacts:
    """What the criteria look at in one drop record, worked out once per record."""

    market: str
    provider: str
    venue: str
    hood: str  # lower case
    day: dt.date
    weekday: str
    time_slot: str
    hhmm: str
    party: tuple[int, int]
    seating: frozenset[str]  # lower case

    @staticmethod
    def of(drop: dict[str, Any]) -> DropFacts:
        day = slot_date(drop)
        return DropFacts(
            market=str(drop["market"]),
            provider=str(drop["provider"]),
            venue=str(drop["venue_id"]),
            hood=str(drop.get("neighborhood") or "").strip().lower(),
            day=day,
            weekday=WEEKDAYS[day.weekday()],
            time_slot=str(drop.get("time_slot") or ""),
            hhmm=slot_hhmm(drop),
            party=(int(drop.get("party_min") or 0), int(drop.get("party_max") or 0)),
            seating=_lower(drop.get("seating_types") or ()),
        )


@dataclass(frozen=True, slots=True)
class Compiled:
    """A watch's criteria as sets, ready to test many drops (built once per watch)."""

    markets: frozenset[str]
    providers: frozenset[str]
    venues: frozenset[str]
    exclude: frozenset[str]
    hoods: frozenset[str]
    date_from: dt.date | None
    date_to: dt.date | None
    weekdays: frozenset[str]
    time_slots: frozenset[str]
    time_from: str | None
    time_to: str | None
    party_size: int | None
    seating: frozenset[str]

    @staticmethod
    def of(c: Criteria) -> Compiled:
        return Compiled(
            frozenset(c.markets),
            frozenset(c.providers),
            frozenset(c.venue_ids),
            frozenset(c.exclude_venue_ids),
            _lower(c.neighborhoods),
            c.date_from,
            c.date_to,
            frozenset(c.weekdays),
            frozenset(c.time_slots),
            c.time_from,
            c.time_to,
            c.party_size,
            _lower(c.seating_types),
        )

    def test(self, f: DropFacts) -> bool:
        if self.markets and f.market not in self.markets:
            return False
        if self.providers and f.provider not in self.providers:
            return False
        if self.venues and f.venue not in self.venues:
            return False
        if f.venue in self.exclude:
            return False
        if self.hoods and f.hood not in self.hoods:
            return False
        if self.date_from and f.day < self.date_from:
            return False
        if self.date_to and f.day > self.date_to:
            return False
        if self.weekdays and f.weekday not in self.weekdays:
            return False
        if self.time_slots and f.time_slot not in self.time_slots:
            return False
        if self.time_from and f.hhmm < self.time_from:
            return False
        if self.time_to and f.hhmm > self.time_to:
            return False
        if self.party_size is not None:
            lo, hi = f.party
            # an unknown range (0) never matches a party size: a false alert is the worst
            if not (lo and hi and lo <= self.party_size <= hi):
                return False
        return not (self.seating and not (self.seating & f.seating))


def matches(c: Criteria, drop: dict[str, Any]) -> bool:
    """Whether a drop record (its dict) meets every criterion of ``c``."""
    return Compiled.of(c).test(DropFacts.of(drop))


def _days(c: Criteria) -> list[str] | None:
    """The dates of a short date range (weekdays applied), or None when it is not short."""
    if not (c.date_from and c.date_to) or (c.date_to - c.date_from).days >= DATE_SPAN_INDEXED:
        return None
    span = (c.date_to - c.date_from).days + 1
    days = (c.date_from + dt.timedelta(days=i) for i in range(span))
    return [d.isoformat() for d in days if not c.weekdays or WEEKDAYS[d.weekday()] in c.weekdays]


def index_keys(c: Criteria) -> list[Key]:
    """The keys a watch is filed under: all values of its most selective criterion (a
    neighborhood combined with its dates or weekdays when it has them)."""
    if c.venue_ids:
        return [("v", v) for v in sorted(set(c.venue_ids))]
    days = _days(c)
    hoods = sorted(_lower(c.neighborhoods))
    if days is not None and not days:
        return [("none",)]  # no date of the range is on one of its weekdays: matches nothing
    if hoods:
        if days:
            return [("nd", h, d) for h in hoods for d in days]
        if c.weekdays:
            return [("nw", h, w) for h in hoods for w in sorted(set(c.weekdays))]
        return [("n", h) for h in hoods]
    if days:
        return [("d", d) for d in days]
    if c.weekdays:
        return [("w", w) for w in sorted(set(c.weekdays))]
    if c.markets:
        return [("m", m) for m in sorted(set(c.markets))]
    return [("*",)]


def probe_keys(drop: dict[str, Any]) -> list[Key]:
    """Every key under which a watch that wants ``drop`` can be filed."""
    day = slot_date(drop)
    hood = str(drop.get("neighborhood", "")).strip().lower()
    weekday = WEEKDAYS[day.weekday()]
    return [
        ("v", str(drop["venue_id"])),
        ("nd", hood, day.isoformat()),
        ("nw", hood, weekday),
        ("n", hood),
        ("d", day.isoformat()),
        ("w", weekday),
        ("m", str(drop["market"])),
        ("*",),
    ]


class WatchIndex:
    """The live watches, filed for matching. ``upsert`` and ``remove`` keep it current."""

    def __init__(self) -> None:
        self.watches: dict[str, Watch] = {}
        self._compiled: dict[str, Compiled] = {}
        self._keys: dict[str, list[Key]] = {}
        self._postings: dict[Key, set[str]] = {}

    def __len__(self) -> int:
        return len(self.watches)

    def upsert(self, watch: Watch) -> None:
        self.remove(watch.watch_id)
        keys = index_keys(watch.criteria)
        self.watches[watch.watch_id] = watch
        self._compiled[watch.watch_id] = Compiled.of(watch.criteria)
        self._keys[watch.watch_id] = keys
        for k in keys:
            self._postings.setdefault(k, set()).add(watch.watch_id)

    def remove(self, watch_id: str) -> None:
        if self.watches.pop(watch_id, None) is None:
            return
        del self._compiled[watch_id]
        for k in self._keys.pop(watch_id):
            ids = self._postings[k]
            ids.discard(watch_id)
            if not ids:
                del self._postings[k]

    def candidates(self, drop: dict[str, Any]) -> set[str]:
        out: set[str] = set()
        for k in probe_keys(drop):
            ids = self._postings.get(k)
            if ids:
                out |= ids
        return out

    def match(self, drop: dict[str, Any]) -> list[Watch]:
        """The watches that want an opened slot, by watch id."""
        facts = DropFacts.of(drop)
        compiled = self._compiled
        found = [self.watches[i] for i in self.candidates(drop) if compiled[i].test(facts)]
        found.sort(key=lambda w: w.watch_id)
        return found


# ------------------------------------------------------------------------------ alert texts


def alert_id(watch_id: str, dedupe_key: str) -> str:
    """Stable id of the alert of one watch for one drop record (its idempotency key)."""
    digest = hashlib.blake2b(f"{watch_id}\x1f{dedupe_key}".encode(), digest_size=16)
    return digest.hexdigest()


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def human_time(actual_time: str) -> str:
    """A venue-local start time as people read it: ``Tue 8 Dec, 7:30 pm`` (English names,
    whatever the process locale)."""
    t = dt.datetime.fromisoformat(actual_time)
    hour = t.hour % 12 or 12
    ampm = "am" if t.hour < 12 else "pm"
    return f"{_DAYS[t.weekday()]} {t.day} {_MONTHS[t.month - 1]}, {hour}:{t.minute:02d} {ampm}"


def texts(kind: str, drop: dict[str, Any]) -> tuple[str, str]:
    """The title and body of an alert."""
    name = str(drop.get("venue_name") or drop["venue_id"])
    when = human_time(str(drop["actual_time"]))
    where = " · ".join(p for p in (str(drop.get("neighborhood") or ""), str(drop["provider"])) if p)
    lo, hi = int(drop.get("party_min") or 0), int(drop.get("party_max") or 0)
    party = f", {lo}-{hi} people" if lo and hi and lo != hi else (f", {lo} people" if lo else "")
    if kind == "close":
        secs = drop.get("open_seconds")
        lasted = f" (open {max(1, round(float(secs) / 60))} min)" if secs is not None else ""
        return f"{name}: gone again", f"{when}{party} is taken{lasted} · {where}"
    return f"{name}: {when}", f"A table opened: {when}{party} · {where}"


def slot_day_end_ms(date: str, time_zone: str) -> int:
    """The instant a slot's date has passed: the local midnight after ``date`` in the
    venue's ``time_zone`` (a 23- or 25-hour day at a DST change is counted as it is)."""
    day = dt.date.fromisoformat(date) + dt.timedelta(days=1)
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(time_zone))
    return int(midnight.timestamp() * 1000)


def told_ttl_ms(date: str, time_zone: str, event_ms: int, most_ms: int) -> int:
    """How long the matcher keeps the watches told of a slot's open (to send them its
    close), counted from the drop's own time ``event_ms``: until the slot's date has passed,
    and never longer than ``most_ms``. 0: the date has passed already, keep nothing."""
    return max(0, min(most_ms, slot_day_end_ms(date, time_zone) - event_ms))
