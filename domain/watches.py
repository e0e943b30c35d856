"""Matching drops against watches (pure): the predicate, the index, alert ids and texts.

:func:`matches` says whether one watch wants one drop. :class:`WatchIndex` finds every watch
that wants a drop without looking at the watches that cannot: each watch is filed under its
most selective criterion (its venues, else its neighborhoods, else its dates, else its
weekdays, else its markets, else "any"), and a drop looks up the few keys it could be filed
under; only those candidates are checked with :func:`matches`. A drop that no watch wants
costs six dictionary look-ups whatever the number of watches.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any

from schemas.watches import WEEKDAYS, Criteria, Watch

Key = tuple[str, ...]
DATE_SPAN_INDEXED = 62  # a date range up to this many days is filed under each of its dates


def _lower(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().lower() for v in values)


def slot_date(drop: dict[str, Any]) -> dt.date:
    return dt.date.fromisoformat(str(drop["actual_time"])[:10])


def slot_hhmm(drop: dict[str, Any]) -> str:
    return str(drop["actual_time"])[11:16]


def matches(c: Criteria, drop: dict[str, Any]) -> bool:
    """Whether a drop record (its dict) meets every criterion of ``c``."""
    if c.markets and drop["market"] not in c.markets:
        return False
    if c.providers and drop["provider"] not in c.providers:
        return False
    venue = str(drop["venue_id"])
    if c.venue_ids and venue not in c.venue_ids:
        return False
    if venue in c.exclude_venue_ids:
        return False
    if c.neighborhoods and str(drop.get("neighborhood", "")).strip().lower() not in _lower(
        c.neighborhoods
    ):
        return False
    day = slot_date(drop)
    if c.date_from and day < c.date_from:
        return False
    if c.date_to and day > c.date_to:
        return False
    if c.weekdays and WEEKDAYS[day.weekday()] not in c.weekdays:
        return False
    if c.time_slots and drop.get("time_slot") not in c.time_slots:
        return False
    hhmm = slot_hhmm(drop)
    if c.time_from and hhmm < c.time_from:
        return False
    if c.time_to and hhmm > c.time_to:
        return False
    if c.party_size is not None:
        lo, hi = int(drop.get("party_min") or 0), int(drop.get("party_max") or 0)
        # an unknown range (0) never matches a party size: a false alert is the worst outcome
        if not (lo and hi and lo <= c.party_size <= hi):
            return False
    return not (
        c.seating_types and not (_lower(c.seating_types) & _lower(drop.get("seating_types") or ()))
    )


def index_keys(c: Criteria) -> list[Key]:
    """The keys a watch is filed under: all of one criterion, the most selective given."""
    if c.venue_ids:
        return [("v", v) for v in sorted(set(c.venue_ids))]
    if c.neighborhoods:
        return [("n", n) for n in sorted(_lower(c.neighborhoods))]
    if c.date_from and c.date_to and (c.date_to - c.date_from).days < DATE_SPAN_INDEXED:
        days = (
            c.date_from + dt.timedelta(days=i) for i in range((c.date_to - c.date_from).days + 1)
        )
        return [
            ("d", d.isoformat())
            for d in days
            if not c.weekdays or WEEKDAYS[d.weekday()] in c.weekdays
        ] or [("none",)]
    if c.weekdays:
        return [("w", w) for w in sorted(set(c.weekdays))]
    if c.markets:
        return [("m", m) for m in sorted(set(c.markets))]
    return [("*",)]


def probe_keys(drop: dict[str, Any]) -> list[Key]:
    """Every key under which a watch that wants ``drop`` can be filed."""
    day = slot_date(drop)
    return [
        ("v", str(drop["venue_id"])),
        ("n", str(drop.get("neighborhood", "")).strip().lower()),
        ("d", day.isoformat()),
        ("w", WEEKDAYS[day.weekday()]),
        ("m", str(drop["market"])),
        ("*",),
    ]


class WatchIndex:
    """The live watches, filed for matching. ``upsert`` and ``remove`` keep it current."""

    def __init__(self) -> None:
        self.watches: dict[str, Watch] = {}
        self._keys: dict[str, list[Key]] = {}
        self._postings: dict[Key, set[str]] = {}

    def __len__(self) -> int:
        return len(self.watches)

    def upsert(self, watch: Watch) -> None:
        self.remove(watch.watch_id)
        keys = index_keys(watch.criteria)
        self.watches[watch.watch_id] = watch
        self._keys[watch.watch_id] = keys
        for k in keys:
            self._postings.setdefault(k, set()).add(watch.watch_id)

    def remove(self, watch_id: str) -> None:
        if self.watches.pop(watch_id, None) is None:
            return
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
        found = [
            self.watches[i]
            for i in self.candidates(drop)
            if matches(self.watches[i].criteria, drop)
        ]
        found.sort(key=lambda w: w.watch_id)
        return found


# ------------------------------------------------------------------------------ alert texts


def alert_id(watch_id: str, dedupe_key: str) -> str:
    """Stable id of the alert of one watch for one drop record (its idempotency key)."""
    digest = hashlib.blake2b(f"{watch_id}\x1f{dedupe_key}".encode(), digest_size=16)
    return digest.hexdigest()


def human_time(actual_time: str) -> str:
    """A venue-local start time as people read it: ``Tue 8 Dec, 7:30 pm``."""
    t = dt.datetime.fromisoformat(actual_time)
    hour = t.hour % 12 or 12
    ampm = "am" if t.hour < 12 else "pm"
    return f"{t:%a} {t.day} {t:%b}, {hour}:{t:%M} {ampm}"


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
