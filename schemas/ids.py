"""Stable identities: bucket ids, stream keys, slot ids and dedupe keys.

These are part of the wire contract: every process, every release and every language must
compute the same value, so they use BLAKE2b over a fixed text layout, never Python's ``hash()``.
"""

from __future__ import annotations

import hashlib
from functools import partial

SEP = b"\x1f"  # ASCII unit separator: cannot occur in provider, venue or time text


def bucket_id(market: str, date: str, time_slot: str) -> str:
    """``nyc:2026-11-29:1900`` for the 19:00 bucket of 29 Nov 2026 in market ``nyc``."""
    return f"{market}:{date}:{time_slot.replace(':', '')}"


def parse_bucket_id(value: str) -> tuple[str, str, str]:
    """Inverse of :func:`bucket_id`: ``(market, date, "HH:MM")``."""
    market, date, hhmm = value.rsplit(":", 2)
    if len(hhmm) != 4 or not hhmm.isdigit() or len(date) != 10:
        raise ValueError(f"not a bucket id: {value!r}")
    return market, date, f"{hhmm[:2]}:{hhmm[2:]}"


def stream_key(bucket: str, provider: str) -> str:
    """Kafka key of snapshot records: one bucket as seen by one provider.

    State is kept per stream key, so a failing provider never makes another provider's
    slots look closed.
    """
    return f"{bucket}/{provider}"


def slot_id_int(provider: str, venue_id: str, actual_time: str) -> int:
    """``hash(provider, venue_id, actual_time)`` as an unsigned 64-bit integer.

    ``actual_time`` is the provider's local start time, ``YYYY-MM-DD HH:MM:SS``.
    """
    head = slot_prefix(provider, str(venue_id))
    return int.from_bytes(_slot_hash(head + normalize_time(actual_time).encode()).digest(), "big")


# The one slot hash: the first 8 bytes of BLAKE2b over ``provider␟venue_id␟time`` (a partial:
# no Python frame per slot on the producers' hot path)
_slot_hash = partial(hashlib.blake2b, digest_size=8)


def slot_prefix(provider: str, venue_id: str) -> bytes:
    """The bytes of the hashed text before the start time: ``provider␟venue_id␟``."""
    return provider.encode() + SEP + venue_id.encode() + SEP


def venue_hash(prefix: bytes) -> hashlib.blake2b:
    """The slot hash after ``prefix`` (:func:`slot_prefix`): ``.copy()`` it and ``.update()``
    with a normalized start time to get a slot's id without hashing the prefix again."""
    return _slot_hash(prefix)


class SlotIds:
    """:func:`slot_id` for one provider, with the ``provider␟venue␟`` prefix encoded once per
    venue (the producers' hot path). Same text, same hash, same value."""

    __slots__ = ("_prefix", "provider")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._prefix: dict[str, bytes] = {}

    def prefix(self, venue_id: str) -> bytes:
        pre = self._prefix.get(venue_id)
        if pre is None:
            pre = self._prefix[venue_id] = slot_prefix(self.provider, venue_id)
        return pre

    def __call__(self, venue_id: str, actual_time: str) -> str:
        """The id of a normalized ``YYYY-MM-DD HH:MM:SS`` start time."""
        return _slot_hash(self.prefix(venue_id) + actual_time.encode()).hexdigest()


def slot_id(provider: str, venue_id: str, actual_time: str) -> str:
    """The slot id as 16 lowercase hex digits (the form on the wire)."""
    return f"{slot_id_int(provider, venue_id, actual_time):016x}"


def slot_int(slot_hex: str) -> int:
    return int(slot_hex, 16)


def slot_hex(value: int) -> str:
    return f"{value:016x}"


def normalize_time(actual_time: str) -> str:
    """``2026-02-18T20:30`` and ``2026-02-18 20:30:00`` are the same start time."""
    text = actual_time.strip().replace("T", " ")
    if len(text) == 16:
        text += ":00"
    if len(text) != 19:
        raise ValueError(f"not a local start time YYYY-MM-DD HH:MM[:SS]: {actual_time!r}")
    return text


def dedupe_key(bucket: str, slot: str, opened_at_ms: int, event: str = "open") -> str:
    """``(bucket_id, slot_id, opened_at minute)``: the same drop replayed gets the same key."""
    key = f"{bucket}|{slot}|{opened_at_ms // 60_000}"
    return key if event == "open" else f"{key}|{event}"
