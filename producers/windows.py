"""Which reservation start times belong to which bucket: the one rule shared by the provider
clients and the simulator.

A bucket ``HH:MM`` stands for the start times around it. Providers answer a time query with
the slots within at most ±150 minutes of the asked time (Resy's ``time_filter``, OpenTable's
``backwardMinutes``/``forwardMinutes``), so the windows of 15:00 and 19:00 overlap. To give
each start time exactly one bucket, a bucket covers the half-open range ``[lo, hi)`` where

- ``lo`` is the midpoint with the previous bucket time, or ``T - 120`` for the first one;
- ``hi`` is the midpoint with the next bucket time, or ``T + 150`` for the last one;
- both are clamped to ``T ± 150`` (what a provider returns for one query).

With the default bucket times this gives: 15:00 → 13:00-16:59, 19:00 → 17:00-21:29.

The window is an upper bound, never an assumption of what a provider answers: a provider may
answer less (±120, say), and a snapshot holds only what the bucket's ordinary read covers
(the coverage rule, ``docs/architecture.md``; :mod:`producers.providers.resy`).
"""

from __future__ import annotations

REACH = 150  # minutes a provider answers either side of the asked time
FIRST_BACK = 120  # how far before the first bucket time its window starts


def minutes(hhmm: str) -> int:
    """``"19:30"`` → 1170 (minutes after midnight)."""
    hh, _, mm = hhmm.partition(":")
    value = int(hh) * 60 + int(mm or 0)
    if not 0 <= value < 24 * 60:
        raise ValueError(f"not a time of day HH:MM: {hhmm!r}")
    return value


def bucket_window(time_slot: str, time_slots: tuple[str, ...]) -> tuple[int, int]:
    """``[lo, hi)`` in minutes after midnight for the bucket ``time_slot`` among ``time_slots``."""
    times = sorted({minutes(t) for t in time_slots})
    t = minutes(time_slot)
    if t not in times:
        raise ValueError(f"{time_slot!r} is not one of the bucket times {time_slots!r}")
    i = times.index(t)
    lo = (times[i - 1] + t) // 2 if i > 0 else t - FIRST_BACK
    hi = (t + times[i + 1]) // 2 if i + 1 < len(times) else t + REACH
    return max(lo, t - REACH, 0), min(hi, t + REACH, 24 * 60)


def in_window(start_minute: int, window: tuple[int, int]) -> bool:
    return window[0] <= start_minute < window[1]


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
