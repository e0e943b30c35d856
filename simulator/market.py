"""A seeded, deterministic restaurant market: venues, their slots, and churn over time.

Pure: nothing here reads the wall clock or does I/O. Every answer is a function of
``(seed, venue count, churn, model time, overlay)``, so tests control time explicitly.

How a slot behaves
------------------
Each venue has candidate start times (a dinner service, sometimes a lunch one, every 15 or
30 minutes). A candidate slot ``(venue, date, minute)`` is open at model minute ``t`` when a
hash of ``(slot, epoch)`` falls under the venue's availability ``p``, with
``epoch = (t + phase) // period``. Each slot changes its state at most once a period, so
bookings close slots and cancellations open them, continuously and reproducibly. The period
is chosen so that a share ``churn`` of the open slots changes per minute:
``period = 2 (1 - p) / churn`` minutes (``churn = 0``: no churn).

Daily releases: a venue books ``horizon`` days ahead; the date ``today + horizon`` opens at
the venue's local release time. Slots that start before the model time are gone.

Scripted changes live in an :class:`Overlay` (open or close one slot), applied on top.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from producers.windows import REACH

MASK = (1 << 64) - 1
VENUE_TZ = "EST5EDT"  # what Resy puts in venue.location.time_zone
PROVIDERS = ("resy", "opentable")
SEATING = ("Dining Room", "Bar", "Patio", "Chef's Counter", "Lounge")
NEIGHBORHOODS = (
    "West Village", "East Village", "SoHo", "Tribeca", "Chelsea", "Flatiron", "NoHo",
    "Lower East Side", "Williamsburg", "Greenpoint", "Park Slope", "Upper West Side",
    "Upper East Side", "Harlem", "Midtown", "Nolita", "Chinatown", "Fort Greene",
    "Astoria", "Long Island City",
)  # fmt: skip
_WORDS_A = (
    "Golden", "Little", "Blue", "Wild", "Olive", "Copper", "Salt", "Ember", "Saffron",
    "Juniper", "Velvet", "Silver", "Smoke", "Cedar", "Fig", "Lantern", "Harbor", "Maple",
)  # fmt: skip
_WORDS_B = (
    "Table", "Kitchen", "Tavern", "Osteria", "Bistro", "Room", "House", "Bar", "Trattoria",
    "Izakaya", "Cantina", "Brasserie", "Diner", "Garden", "Counter", "Grill",
)  # fmt: skip
ID_BASE = {"resy": 1000, "opentable": 200000}


def mix(x: int) -> int:
    """splitmix64's finalizer: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


@dataclass(frozen=True, slots=True)
class Venue:
    provider: str
    index: int
    id: int
    name: str
    neighborhood: str
    key: int  # the venue's hash seed
    p_open: float  # share of candidate slots open at any time
    period: int  # minutes between possible changes of one slot (0 = never)
    seating: tuple[str, ...]
    lunch: bool
    dinner_from: int  # minutes after midnight
    dinner_to: int  # last start, inclusive
    step: int  # minutes between start times
    horizon: int  # days ahead the venue books
    release_at: int  # local minute when the next day is released
    time_zone: str = VENUE_TZ

    def candidates(self) -> Iterator[int]:
        if self.lunch:
            yield from range(12 * 60, 14 * 60 + 31, self.step)
        yield from range(self.dinner_from, self.dinner_to + 1, self.step)


@dataclass(frozen=True, slots=True)
class SimSlot:
    venue: Venue
    day: date
    minute: int  # start, venue-local minutes after midnight
    seating: tuple[str, ...]
    party_min: int
    party_max: int
    config_id: int

    @property
    def actual_time(self) -> str:
        return f"{self.day.isoformat()} {self.minute // 60:02d}:{self.minute % 60:02d}:00"

    @property
    def end_time(self) -> str:
        end = self.minute + 90
        day = self.day + timedelta(days=end // 1440)
        end %= 1440
        return f"{day.isoformat()} {end // 60:02d}:{end % 60:02d}:00"


@dataclass(frozen=True, slots=True)
class Override:
    open: bool
    seating: tuple[str, ...] = ("Dining Room",)
    party_min: int = 1
    party_max: int = 8


@dataclass(slots=True)
class Overlay:
    """Scripted changes on top of the model.

    ``(provider, venue_id, date) -> minute -> Override``.
    """

    changes: dict[tuple[str, int, str], dict[int, Override]] = field(default_factory=dict)
    version: int = 0  # bumped on every change (keys the simulator's response cache)
    # per (provider, venue_id, date): the version of its last change (0: never changed, or
    # cleared since), so a cache of one venue's answer knows whether it still holds
    versions: dict[tuple[str, int, str], int] = field(default_factory=dict)

    def set(self, provider: str, venue_id: int, actual_time: str, override: Override) -> None:
        day, minute = parse_actual_time(actual_time)
        key = (provider, venue_id, day.isoformat())
        self.changes.setdefault(key, {})[minute] = override
        self.version += 1
        self.versions[key] = self.version

    def get(self, provider: str, venue_id: int, day: date) -> dict[int, Override]:
        return self.changes.get((provider, venue_id, day.isoformat()), {})

    def clear(self) -> None:
        self.changes.clear()
        self.versions.clear()
        self.version += 1

    def __len__(self) -> int:
        return sum(len(v) for v in self.changes.values())


def parse_actual_time(actual_time: str) -> tuple[date, int]:
    """``"2026-02-18 20:30:00"`` → ``(date(2026, 2, 18), 1230)``."""
    text = actual_time.strip().replace("T", " ")
    day = date.fromisoformat(text[:10])
    hh, mm = int(text[11:13]), int(text[14:16])
    if not (0 <= hh < 24 and 0 <= mm < 60) or len(text) < 16:
        raise ValueError(f"not a start time YYYY-MM-DD HH:MM[:SS]: {actual_time!r}")
    return day, hh * 60 + mm


class Market:
    """The venues of each provider and their slots at any model time."""

    def __init__(
        self,
        seed: int = 7,
        venues: int = 200,
        churn: float = 0.02,
        providers: tuple[str, ...] = PROVIDERS,
        reach: tuple[int, int] = (REACH, REACH),
    ) -> None:
        self.seed, self.churn, self.providers = seed, churn, providers
        if min(reach) < 0:
            raise ValueError(f"a search reach is minutes before and after, not {reach!r}")
        self.reach = reach  # minutes a time query answers before and after the asked time
        self.venues: dict[str, list[Venue]] = {
            p: [self._venue(p, i) for i in range(venues)] for p in providers
        }
        self._by_id: dict[tuple[str, int], Venue] = {
            (p, v.id): v for p, vs in self.venues.items() for v in vs
        }
        self._tz = ZoneInfo(VENUE_TZ)

    def _venue(self, provider: str, i: int) -> Venue:
        pk = PROVIDERS.index(provider) if provider in PROVIDERS else len(provider)
        key = mix((self.seed << 32) ^ (pk << 24) ^ i)
        h = [mix(key ^ n) for n in range(8)]
        p_open = 0.1 + (h[0] % 500) / 1000  # 0.10 .. 0.60
        period = round(2 * (1 - p_open) / self.churn) if self.churn > 0 else 0
        n_seat = 1 + h[1] % 3
        seating = tuple(
            dict.fromkeys(SEATING[(h[1] >> (8 + 4 * k)) % len(SEATING)] for k in range(n_seat))
        )
        return Venue(
            provider=provider,
            index=i,
            id=ID_BASE.get(provider, 0) + i + 1,
            name=f"{_WORDS_A[h[2] % len(_WORDS_A)]} {_WORDS_B[(h[2] >> 16) % len(_WORDS_B)]}"
            f" {i + 1}",
            neighborhood=NEIGHBORHOODS[h[3] % len(NEIGHBORHOODS)],
            key=key,
            p_open=p_open,
            period=max(period, 1) if self.churn > 0 else 0,
            seating=seating,
            lunch=h[4] % 10 < 4,
            dinner_from=16 * 60 + 30 + 30 * ((h[4] >> 8) % 3),
            dinner_to=21 * 60 + 30 + 15 * ((h[5] >> 3) % 6),
            step=15 if h[5] % 2 else 30,
            horizon=(7, 10, 14, 21, 28, 30)[(h[6]) % 6],
            release_at=(0, 9 * 60, 10 * 60, 12 * 60)[(h[7]) % 4],
        )

    # ------------------------------------------------------------------ lookups

    def venue(self, provider: str, venue_id: int) -> Venue | None:
        return self._by_id.get((provider, venue_id))

    def local_now(self, model_ms: int) -> datetime:
        return datetime.fromtimestamp(model_ms / 1000, tz=self._tz)

    # ------------------------------------------------------------------ slots

    def slots(
        self,
        venue: Venue,
        day: date,
        lo: int,
        hi: int,
        party_size: int,
        model_ms: int,
        overlay: Overlay | None = None,
        local_now: datetime | None = None,
    ) -> list[SimSlot]:
        """The venue's open slots on ``day`` starting in ``[lo, hi)`` (local minutes)."""
        now = local_now or self.local_now(model_ms)
        t = model_ms // 60_000
        today = now.date()
        ahead = (day - today).days
        released = ahead < venue.horizon or (
            ahead == venue.horizon and now.hour * 60 + now.minute >= venue.release_at
        )
        past = now.hour * 60 + now.minute if ahead == 0 else (-1 if ahead > 0 else 1440)
        out: dict[int, SimSlot] = {}
        if released:
            base = venue.key ^ (day.toordinal() * 1440)
            threshold = int(venue.p_open * 10_000)
            for minute in venue.candidates():
                if minute < lo or minute >= hi or minute <= past:
                    continue
                sk = mix(base + minute)
                epoch = (t + sk % venue.period) // venue.period if venue.period else 0
                if (mix(sk ^ (epoch * 0x632BE59BD9B4E019 & MASK)) >> 11) % 10_000 >= threshold:
                    continue
                pmin = 1 + (sk >> 20) % 2
                pmax = (2, 4, 4, 6, 8)[(sk >> 24) % 5]
                if not pmin <= party_size <= pmax:
                    continue
                seating = tuple(
                    s for k, s in enumerate(venue.seating) if k == 0 or (sk >> (30 + k)) & 1
                )
                out[minute] = SimSlot(venue, day, minute, seating, pmin, pmax, sk % 900_000)
        if overlay is not None:
            for minute, ov in overlay.get(venue.provider, venue.id, day).items():
                if not lo <= minute < hi:
                    continue
                if not ov.open or not ov.party_min <= party_size <= ov.party_max:
                    out.pop(minute, None)
                    continue
                cfg = mix(venue.key ^ (day.toordinal() * 1440 + minute)) % 900_000
                out[minute] = SimSlot(
                    venue, day, minute, ov.seating, ov.party_min, ov.party_max, cfg
                )
        return [out[m] for m in sorted(out)]

    def around(
        self, requested: int, before: int | None = None, after: int | None = None
    ) -> tuple[int, int]:
        """What a provider answers for a time query, as ``[lo, hi)``: the starts within
        ``[t - reach_before, t + reach_after]`` (the market's reach, ±150 by default), or less
        when the query asks for less (OpenTable's ``backwardMinutes``/``forwardMinutes``)."""
        back, fwd = self.reach
        back = back if before is None else min(before, back)
        fwd = fwd if after is None else min(after, fwd)
        return max(requested - back, 0), min(requested + fwd + 1, 24 * 60)

    def open_slots(
        self,
        provider: str,
        day: date,
        lo: int,
        hi: int,
        party_size: int,
        model_ms: int,
        overlay: Overlay | None = None,
    ) -> list[SimSlot]:
        """Every open slot of ``provider`` on ``day`` in ``[lo, hi)``: the reference set."""
        now = self.local_now(model_ms)
        out: list[SimSlot] = []
        for venue in self.venues.get(provider, []):
            out.extend(self.slots(venue, day, lo, hi, party_size, model_ms, overlay, now))
        return out
