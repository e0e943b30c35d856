"""The provider interface: fetch one bucket → normalized slots plus coverage.

A fetch never turns a failure into "no slots": every page, batch or venue that could not be
read becomes a :class:`~schemas.Failure` and makes the result ``complete=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from schemas import Failure, Slot
from schemas.ids import SlotIds as SlotIds  # the clients take it from here
from schemas.ids import venue_hash
from schemas.records import READ_SEARCH


@dataclass(frozen=True, slots=True)
class BucketQuery:
    date: str  # YYYY-MM-DD, venue-local
    time_slot: str  # "HH:MM"
    party_size: int
    window: tuple[int, int]  # [lo, hi) start minutes kept for this bucket (producers.windows)


@dataclass(slots=True)
class Counters:
    requests: int = 0
    retries: int = 0


@dataclass(slots=True)
class SlotTable:
    """A fetch's slots as the columns of a snapshot v2 record (``schemas/SNAPSHOT_FORMAT.md``):
    the client parses straight into what the record carries, with no object per slot.

    ``venues`` are ``(venue_id, venue_name, time_zone, neighborhood, venue_slug,
    venue_city)`` (the last two: what the venue's booking link is built from); per slot, in venue
    then start-time order: ``venue_of`` (index into ``venues``, non-decreasing), ``ids`` (the
    slot id as an unsigned 64-bit integer) and ``rows`` (the JSON row
    ``[actual_time, seating_types, party_min, party_max, booking]``, plus ``"fallback"`` when
    the slot was read by the fallback endpoint instead of the bucket's ordinary read)."""

    provider: str
    venues: list[tuple[str, str, str, str, str, str]] = field(default_factory=list)
    venue_of: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    rows: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def slots(self) -> list[Slot]:
        """As contract ``Slot`` objects (tests and tools; the hot path keeps the columns)."""
        out = []
        for j, sid, row in zip(self.venue_of, self.ids, self.rows, strict=True):
            vid, name, tz, hood, slug, city = self.venues[j]
            actual, seating, pmin, pmax, booking, *via = orjson.loads(row)
            out.append(
                Slot(
                    self.provider,
                    vid,
                    name,
                    actual,
                    tz,
                    hood,
                    tuple(seating),
                    pmin,
                    pmax,
                    booking,
                    f"{sid:016x}",
                    via[0] if via else READ_SEARCH,
                    slug,
                    city,
                )
            )
        return out

    @classmethod
    def of(cls, provider: str, slots: list[Slot]) -> SlotTable:
        """From ``Slot`` objects sorted by venue (tests)."""
        table = cls(provider)
        index: dict[tuple[str, str, str, str, str, str], int] = {}
        for s in slots:
            vk = (
                s.venue_id, s.venue_name, s.time_zone, s.neighborhood, s.venue_slug, s.venue_city
            )  # fmt: skip
            j = index.get(vk)
            if j is None:
                j = index[vk] = len(table.venues)
                table.venues.append(vk)
            table.venue_of.append(j)
            table.ids.append(int(s.slot_id, 16))
            row: tuple[Any, ...] = (
                s.actual_time, list(s.seating_types), s.party_min, s.party_max, s.booking
            )  # fmt: skip
            table.rows.append(
                orjson.dumps(row if s.read_via == READ_SEARCH else (*row, s.read_via))
            )
        return table


@dataclass(slots=True)
class FetchResult:
    """One fetch of one bucket: its slots (columns, see :class:`SlotTable`), whether every
    page/venue was read, and what failed."""

    provider: str
    slots: SlotTable
    complete: bool
    failures: list[Failure] = field(default_factory=list)
    venues: int = 0  # venues whose availability was read
    requests: int = 0
    retries: int = 0
    fallback_venues: int = 0  # venues read by the fallback endpoint (Resy's /4/find)
    contradictions: int = 0  # answers with starts the bucket's ordinary read does not cover

    def as_slots(self) -> list[Slot]:
        return self.slots.slots()


class Provider(Protocol):
    name: str

    async def fetch(self, query: BucketQuery) -> FetchResult: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class SlotEntry:
    """One line of a provider's answer, before merging (one per seating type)."""

    venue_id: str
    venue_name: str
    time_zone: str
    neighborhood: str
    actual_time: str
    seating: str
    party_min: int
    party_max: int
    booking: str


# "HH:MM" -> minutes after midnight, for every minute of a day (a dict lookup beats parsing)
MINUTE_OF: dict[str, int] = {f"{h:02d}:{m:02d}": h * 60 + m for h in range(24) for m in range(60)}


class VenueSlots:
    """One venue's slots in one fetch, merged: one per start time (seating types joined,
    party sizes widened, the first booking token kept). ``read_via`` says which endpoint read
    them (``"search"``: the bucket's ordinary read; ``"fallback"``)."""

    __slots__ = (
        "city", "name", "neighborhood", "read_via", "slug", "time_zone", "times", "venue_id"
    )  # fmt: skip

    def __init__(
        self,
        venue_id: str,
        name: str,
        time_zone: str,
        neighborhood: str,
        slug: str = "",
        city: str = "",
    ) -> None:
        self.venue_id, self.name = venue_id, name
        self.time_zone, self.neighborhood = time_zone, neighborhood
        self.slug, self.city = slug, city  # the venue's booking-page slug and city
        self.times: dict[str, list[Any]] = {}  # actual_time -> [seating, pmin, pmax, token]
        self.read_via = READ_SEARCH

    def add(self, actual: str, seating: str, pmin: int, pmax: int, booking: str) -> None:
        got = self.times.get(actual)
        if got is None:
            self.times[actual] = [[seating] if seating else [], pmin, pmax, booking]
            return
        if seating and seating not in got[0]:
            got[0].append(seating)
        if pmin < got[1]:
            got[1] = pmin
        if pmax > got[2]:
            got[2] = pmax


class Collector:
    """The venues of one fetch, in the order they are built into slots."""

    __slots__ = ("ids", "provider", "venues")

    def __init__(self, provider: str, ids: SlotIds | None = None) -> None:
        self.provider = provider
        self.ids = ids or SlotIds(provider)
        self.venues: dict[str, VenueSlots] = {}

    def venue(
        self,
        venue_id: str,
        name: str,
        time_zone: str,
        neighborhood: str,
        slug: str = "",
        city: str = "",
    ) -> VenueSlots:
        got = self.venues.get(venue_id)
        if got is None:
            got = self.venues[venue_id] = VenueSlots(
                venue_id, name, time_zone, neighborhood, slug, city
            )
        return got

    def discard(self, venue_id: str) -> None:
        self.venues.pop(venue_id, None)

    def table(self) -> SlotTable:
        """The slots as record columns, sorted by venue id and start time (a stable order)."""
        table = SlotTable(self.provider)
        venues, venue_of, ids, rows = table.venues, table.venue_of, table.ids, table.rows
        dumps, from_bytes = orjson.dumps, int.from_bytes
        for vid in sorted(self.venues):
            v = self.venues[vid]
            times = v.times
            if not times:
                continue
            venue_of.extend([len(venues)] * len(times))
            venues.append((vid, v.name, v.time_zone, v.neighborhood, v.slug, v.city))
            head = venue_hash(self.ids.prefix(vid))  # the venue's prefix, hashed once
            via = v.read_via
            for actual in sorted(times):
                seating, pmin, pmax, token = times[actual]
                if len(seating) > 1:
                    seating.sort()
                h = head.copy()
                h.update(actual.encode())
                ids.append(from_bytes(h.digest()))
                if via == READ_SEARCH:  # the row of the ordinary read: five values
                    rows.append(dumps((actual, seating, pmin, pmax, token)))
                else:
                    rows.append(dumps((actual, seating, pmin, pmax, token, via)))
        return table


def merge_results(results: list[FetchResult]) -> FetchResult:
    """Fetches of one bucket with different party sizes as one: a slot is in it when any
    party size has it (seating types joined, party range widened). Complete only when every
    fetch was; every failure is kept, so the processor keeps those venues' slots."""
    first = results[0]
    acc = Collector(first.provider)
    for r in results:
        t = r.slots
        for j, row in zip(t.venue_of, t.rows, strict=True):
            actual, seating, pmin, pmax, booking, *via = orjson.loads(row)
            v = acc.venue(*t.venues[j])
            if via and not v.times:  # read by the fallback for every party size so far
                v.read_via = via[0]
            elif not via:
                v.read_via = READ_SEARCH  # the ordinary read saw the venue: say so
            for seat in seating or [""]:
                v.add(actual, seat, pmin, pmax, booking)
    return FetchResult(
        first.provider,
        acc.table(),
        all(r.complete for r in results),
        [f for r in results for f in r.failures],
        max(r.venues for r in results),
        sum(r.requests for r in results),
        sum(r.retries for r in results),
        sum(r.fallback_venues for r in results),
        sum(r.contradictions for r in results),
    )


def merge(provider: str, entries: list[SlotEntry]) -> list[Slot]:
    """One slot per (provider, venue, start time): seating types merged, party sizes widened,
    the first booking token kept. Sorted by venue and time, so the order is stable."""
    acc = Collector(provider)
    for e in entries:
        v = acc.venue(e.venue_id, e.venue_name, e.time_zone, e.neighborhood)
        v.add(e.actual_time, e.seating, e.party_min, e.party_max, e.booking)
    return acc.table().slots()


def start_minute(actual_time: str, date: str) -> int | None:
    """Minutes after midnight of ``"YYYY-MM-DD HH:MM[:SS]"`` when it falls on ``date``."""
    if len(actual_time) < 16 or actual_time[:10] != date:
        return None
    return MINUTE_OF.get(actual_time[11:16])
