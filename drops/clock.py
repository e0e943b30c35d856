"""The product's clock: what time it is for the window, the time of day and event times.

Everything that asks "what time is it" for the domain (the bucket window and its daily
slide, the time a poll started, the simulator's market, the API's "last 10 minutes") reads
one :class:`Clock`. By default it is the machine's clock. ``DROPS_CLOCK__START`` (an ISO
instant) starts a process's clock at that instant, running at normal speed from there, so a
test or a demo can run the whole pipeline at a chosen moment (14:50 New York, a minute
before the 02:05 slide, a daylight-saving day) without touching the machine's clock.
``DROPS_CLOCK__ANCHOR`` (Unix seconds of the real clock) says when the clock read
``DROPS_CLOCK__START``; processes given the same pair share one clock, whenever each started.

Kafka, timeouts, retries, back-offs and latency figures keep the real clock
(``time.monotonic`` and ``time.time``): they measure durations, not the time of day.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import time as time_of_day

__all__ = ["Clock", "parse_instant"]


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant with its offset (``2026-12-01T19:50:00Z``), as an aware datetime.

    Raises ``ValueError`` naming what is wrong: an instant without an offset is ambiguous."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not an ISO 8601 instant: {text!r}") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"an instant needs its UTC offset (e.g. 'Z' or '-05:00'): {text!r}")
    return when.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Clock:
    """The real clock shifted by ``offset_s`` seconds (0: the machine's clock)."""

    offset_s: float = 0.0

    @classmethod
    def starting_at(cls, start: datetime, anchor: float | None = None) -> Clock:
        """A clock that reads ``start`` at real time ``anchor`` (default: now)."""
        real = time.time() if anchor is None else anchor
        return cls(start.timestamp() - real)

    @property
    def shifted(self) -> bool:
        return self.offset_s != 0.0

    def time(self) -> float:
        """Unix seconds."""
        return time.time() + self.offset_s

    def now_ms(self) -> int:
        return int(self.time() * 1000)

    def now(self) -> datetime:
        """The current instant, UTC."""
        return datetime.fromtimestamp(self.time(), UTC)


def parse_time_of_day(text: str) -> time_of_day:
    """``"HH:MM"`` as a time of day (a bad value raises ``ValueError`` naming it)."""
    try:
        hh, mm = (int(x) for x in text.split(":"))
        return time_of_day(hh, mm)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a time of day is HH:MM, not {text!r}") from exc
