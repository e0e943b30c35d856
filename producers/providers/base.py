"""The provider interface: fetch one bucket → normalized slots plus coverage.

A fetch never turns a failure into "no slots": every page, batch or venue that could not be
read becomes a :class:`~schemas.Failure` and makes the result ``complete=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

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


@dataclass(slots=True)
class FetchResult:
    provider: str
    slots: list[Slot]
    complete: bool
    failures: list[Failure] = field(default_factory=list)
    venues: int = 0  # venues whose availability was read
    requests: int = 0
    retries: int = 0


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


def merge(provider: str, entries: list[SlotEntry]) -> list[Slot]:
    """One slot per (provider, venue, start time): seating types merged, party sizes widened,
    the first booking token kept. Sorted by venue and time, so the order is stable."""
    acc: dict[tuple[str, str], tuple[SlotEntry, list[str], int, int]] = {}
    for e in entries:
        key = (e.venue_id, e.actual_time)
        got = acc.get(key)
        if got is None:
            acc[key] = (e, [e.seating] if e.seating else [], e.party_min, e.party_max)
            continue
        first, seating, pmin, pmax = got
        if e.seating and e.seating not in seating:
            seating.append(e.seating)
        acc[key] = (first, seating, min(pmin, e.party_min), max(pmax, e.party_max))
    return [
        Slot(
            provider=provider,
            venue_id=first.venue_id,
            venue_name=first.venue_name,
            actual_time=first.actual_time,
            time_zone=first.time_zone,
            neighborhood=first.neighborhood,
            seating_types=tuple(sorted(seating)),
            party_min=pmin,
            party_max=pmax,
            booking=first.booking,
        )
        for (_, _), (first, seating, pmin, pmax) in sorted(acc.items())
    ]


def start_minute(actual_time: str, date: str) -> int | None:
    """Minutes after midnight of ``"YYYY-MM-DD HH:MM[:SS]"`` when it falls on ``date``."""
    if len(actual_time) < 16 or actual_time[:10] != date:
        return None
    try:
        hh, mm = int(actual_time[11:13]), int(actual_time[14:16])
    except ValueError:
        return None
    if not (0 <= hh < 24 and 0 <= mm < 60):
        return None
    return hh * 60 + mm
