"""The provider interface: fetch one bucket → normalized slots plus coverage.

A fetch never turns a failure into "no slots": every page, batch or venue that could not be
read becomes a :class:`~schemas.Failure` and makes the result ``complete=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, Protocol

from schemas import Failure, Slot


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


SlotRow = dict[str, Any]  # a Slot in its wire form: Slot.to_dict(), keys in field order


@dataclass(slots=True)
class FetchResult:
    """One fetch of one bucket. ``slots`` are wire-form rows (``Slot.to_dict()``): the client
    parses straight into what the snapshot record carries; :meth:`as_slots` gives ``Slot``s."""

    provider: str
    slots: list[SlotRow]
    complete: bool
    failures: list[Failure] = field(default_factory=list)
    venues: int = 0  # venues whose availability was read
    requests: int = 0
    retries: int = 0

    def as_slots(self) -> list[Slot]:
        return [to_slot(r) for r in self.slots]


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
_SEP = b"\x1f"  # the separator of schemas.ids.slot_id_int


class SlotIds:
    """``schemas.ids.slot_id`` for one provider, with the ``provider␟venue␟`` prefix of the
    hashed text encoded once per venue. Same BLAKE2b text, same value (a test checks it)."""

    __slots__ = ("_head", "_prefix")

    def __init__(self, provider: str) -> None:
        self._head = provider.encode() + _SEP
        self._prefix: dict[str, bytes] = {}

    def prefix(self, venue_id: str) -> bytes:
        pre = self._prefix.get(venue_id)
        if pre is None:
            pre = self._prefix[venue_id] = self._head + venue_id.encode() + _SEP
        return pre

    def __call__(self, venue_id: str, actual_time: str) -> str:
        """The id of a normalized ``YYYY-MM-DD HH:MM:SS`` start time."""
        return blake2b(self.prefix(venue_id) + actual_time.encode(), digest_size=8).hexdigest()


class VenueSlots:
    """One venue's slots in one fetch, merged: one per start time (seating types joined,
    party sizes widened, the first booking token kept)."""

    __slots__ = ("name", "neighborhood", "time_zone", "times", "venue_id")

    def __init__(self, venue_id: str, name: str, time_zone: str, neighborhood: str) -> None:
        self.venue_id, self.name = venue_id, name
        self.time_zone, self.neighborhood = time_zone, neighborhood
        self.times: dict[str, list[Any]] = {}  # actual_time -> [seating, pmin, pmax, token]

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

    def venue(self, venue_id: str, name: str, time_zone: str, neighborhood: str) -> VenueSlots:
        got = self.venues.get(venue_id)
        if got is None:
            got = self.venues[venue_id] = VenueSlots(venue_id, name, time_zone, neighborhood)
        return got

    def discard(self, venue_id: str) -> None:
        self.venues.pop(venue_id, None)

    def rows(self) -> list[SlotRow]:
        """The slots in their wire form (``Slot.to_dict()``, same keys in the same order),
        sorted by venue id and start time so the order is stable."""
        out: list[SlotRow] = []
        append, provider, hash_ = out.append, self.provider, blake2b
        for vid in sorted(self.venues):
            v = self.venues[vid]
            if not v.times:
                continue
            pre, name, tz, hood = self.ids.prefix(vid), v.name, v.time_zone, v.neighborhood
            times = v.times
            for actual in sorted(times):
                seating, pmin, pmax, token = times[actual]
                if len(seating) > 1:
                    seating.sort()
                append(
                    {
                        "provider": provider,
                        "venue_id": vid,
                        "venue_name": name,
                        "actual_time": actual,
                        "time_zone": tz,
                        "neighborhood": hood,
                        "seating_types": seating,
                        "party_min": pmin,
                        "party_max": pmax,
                        "booking": token,
                        "slot_id": hash_(pre + actual.encode(), digest_size=8).hexdigest(),
                    }
                )
        return out


def merge(provider: str, entries: list[SlotEntry]) -> list[Slot]:
    """One slot per (provider, venue, start time): seating types merged, party sizes widened,
    the first booking token kept. Sorted by venue and time, so the order is stable."""
    acc = Collector(provider)
    for e in entries:
        v = acc.venue(e.venue_id, e.venue_name, e.time_zone, e.neighborhood)
        v.add(e.actual_time, e.seating, e.party_min, e.party_max, e.booking)
    return [to_slot(r) for r in acc.rows()]


def to_slot(row: SlotRow) -> Slot:
    """A wire-form slot row as the contract type (tests and readers; the hot path keeps rows)."""
    return Slot(**{**row, "seating_types": tuple(row["seating_types"])})


def start_minute(actual_time: str, date: str) -> int | None:
    """Minutes after midnight of ``"YYYY-MM-DD HH:MM[:SS]"`` when it falls on ``date``."""
    if len(actual_time) < 16 or actual_time[:10] != date:
        return None
    return MINUTE_OF.get(actual_time[11:16])
