"""The records that cross Kafka, as Python types, with strict decoding.

- :class:`Slot`: one normalized reservation slot (provider-neutral).
- :class:`Snapshot`: one part of one poll of one bucket by one provider (snapshot topic).
- :class:`DropEvent`: a slot that opened (``event="open"``) or a reported slot that closed
  (``event="close"``) (drops topic; the public contract, see ``schemas/json/``).

Decoding checks types and required fields and raises :class:`SchemaError` naming the field;
unknown extra fields are tolerated (newer producers may add some).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from schemas import ids

SNAPSHOT_VERSION = 1
DROP_VERSION = 1
STATS_VERSION = 1

SnapshotKind = Literal["baseline", "poll", "close"]
EventKind = Literal["open", "close"]


class SchemaError(ValueError):
    """A record that cannot be decoded; the message names the field."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A part of a fetch that did not succeed: its slots are unknown, never absent."""

    scope: str  # "provider" | "page" | "venue"
    ref: str  # page number, venue id, ...
    error: str


@dataclass(frozen=True, slots=True)
class Slot:
    provider: str
    venue_id: str
    venue_name: str
    actual_time: str  # venue-local start, "YYYY-MM-DD HH:MM:SS"
    time_zone: str  # the venue's zone, as the provider gives it
    neighborhood: str = ""
    seating_types: tuple[str, ...] = ()
    party_min: int = 0
    party_max: int = 0
    booking: str = ""  # a booking link or token (tokens rotate: never an identity)
    slot_id: str = ""

    def __post_init__(self) -> None:
        if not self.slot_id:
            sid = ids.slot_id(self.provider, self.venue_id, self.actual_time)
            object.__setattr__(self, "slot_id", sid)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seating_types"] = list(self.seating_types)
        return d


@dataclass(frozen=True, slots=True)
class Snapshot:
    snapshot_id: str
    kind: SnapshotKind
    market: str
    provider: str
    bucket_id: str
    date: str
    time_slot: str
    polled_at_ms: int  # when the fetch started (event time of the whole pipeline)
    complete: bool  # every page and venue of the fetch succeeded
    part: int = 0
    parts: int = 1
    failures: tuple[Failure, ...] = ()
    slots: tuple[Slot, ...] = ()
    v: int = SNAPSHOT_VERSION

    @property
    def key(self) -> str:
        return ids.stream_key(self.bucket_id, self.provider)

    @property
    def is_last_part(self) -> bool:
        return self.part == self.parts - 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "snapshot_id": self.snapshot_id,
            "kind": self.kind,
            "market": self.market,
            "provider": self.provider,
            "bucket_id": self.bucket_id,
            "date": self.date,
            "time_slot": self.time_slot,
            "polled_at_ms": self.polled_at_ms,
            "complete": self.complete,
            "part": self.part,
            "parts": self.parts,
            "failures": [asdict(f) for f in self.failures],
            "slots": [s.to_dict() for s in self.slots],
        }


@dataclass(frozen=True, slots=True)
class DropEvent:
    event: EventKind
    dedupe_key: str
    bucket_id: str
    market: str
    provider: str
    date: str
    time_slot: str
    slot_id: str
    venue_id: str
    venue_name: str
    neighborhood: str
    actual_time: str
    time_zone: str
    seating_types: tuple[str, ...]
    party_min: int
    party_max: int
    booking: str
    opened_at_ms: int
    snapshot_id: str
    closed_at_ms: int | None = None
    open_seconds: float | None = None
    v: int = DROP_VERSION
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        return self.bucket_id

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d["seating_types"] = list(self.seating_types)
        return d


@dataclass(frozen=True, slots=True)
class BucketStats:
    """What one fetch of one bucket cost and found (topic ``drops.buckets``, key = stream key).

    The producers write one per baseline build and per poll; the sink keeps them in
    ClickHouse ``discovery_buckets`` for ``GET /buckets`` and for analysts.
    """

    market: str
    provider: str
    bucket_id: str
    date: str
    time_slot: str
    kind: SnapshotKind
    snapshot_id: str
    polled_at_ms: int
    duration_ms: int
    venues: int
    slots: int
    complete: bool
    failures: int = 0
    requests: int = 0
    retries: int = 0
    v: int = STATS_VERSION

    @property
    def key(self) -> str:
        return ids.stream_key(self.bucket_id, self.provider)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stats_from_dict(doc: Any) -> BucketStats:
    w = "bucket_stats"
    if not isinstance(doc, dict):
        raise SchemaError(f"{w}: not an object")
    v = _req(doc, "v", int, w)
    if v != STATS_VERSION:
        raise SchemaError(f"{w}: field 'v' is {v}, this build reads {STATS_VERSION}")
    kind = _req(doc, "kind", str, w)
    if kind not in ("baseline", "poll", "close"):
        raise SchemaError(f"{w}: field 'kind' is {kind!r}")
    return BucketStats(
        v=v,
        market=_req(doc, "market", str, w),
        provider=_req(doc, "provider", str, w),
        bucket_id=_req(doc, "bucket_id", str, w),
        date=_req(doc, "date", str, w),
        time_slot=_req(doc, "time_slot", str, w),
        kind=kind,
        snapshot_id=_req(doc, "snapshot_id", str, w),
        polled_at_ms=_req(doc, "polled_at_ms", int, w),
        duration_ms=_req(doc, "duration_ms", int, w),
        venues=_req(doc, "venues", int, w),
        slots=_req(doc, "slots", int, w),
        complete=_req(doc, "complete", bool, w),
        failures=_opt(doc, "failures", int, 0, w),
        requests=_opt(doc, "requests", int, 0, w),
        retries=_opt(doc, "retries", int, 0, w),
    )


# ------------------------------------------------------------------------------ decoding


def _req(doc: dict[str, Any], name: str, typ: type | tuple[type, ...], where: str) -> Any:
    if name not in doc:
        raise SchemaError(f"{where}: missing field {name!r}")
    value = doc[name]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise SchemaError(f"{where}: field {name!r} has type {type(value).__name__}")
    return value


def _opt(
    doc: dict[str, Any], name: str, typ: type | tuple[type, ...], default: Any, where: str
) -> Any:
    if doc.get(name) is None:
        return default
    return _req(doc, name, typ, where)


def slot_from_dict(doc: Any, where: str = "slot") -> Slot:
    if not isinstance(doc, dict):
        raise SchemaError(f"{where}: not an object")
    seating = _opt(doc, "seating_types", list, [], where)
    slot = Slot(
        provider=_req(doc, "provider", str, where),
        venue_id=str(_req(doc, "venue_id", (str, int), where)),
        venue_name=_opt(doc, "venue_name", str, "", where),
        actual_time=_req(doc, "actual_time", str, where),
        time_zone=_opt(doc, "time_zone", str, "", where),
        neighborhood=_opt(doc, "neighborhood", str, "", where),
        seating_types=tuple(str(s) for s in seating),
        party_min=_opt(doc, "party_min", int, 0, where),
        party_max=_opt(doc, "party_max", int, 0, where),
        booking=_opt(doc, "booking", str, "", where),
        slot_id=_opt(doc, "slot_id", str, "", where),
    )
    try:
        expected = ids.slot_id(slot.provider, slot.venue_id, slot.actual_time)
    except ValueError as exc:
        raise SchemaError(f"{where}: field 'actual_time': {exc}") from None
    if slot.slot_id != expected:
        raise SchemaError(f"{where}: field 'slot_id' is not hash(provider, venue_id, actual_time)")
    return slot


def snapshot_from_dict(doc: Any) -> Snapshot:
    w = "snapshot"
    if not isinstance(doc, dict):
        raise SchemaError(f"{w}: not an object")
    v = _req(doc, "v", int, w)
    if v != SNAPSHOT_VERSION:
        raise SchemaError(f"{w}: field 'v' is {v}, this build reads {SNAPSHOT_VERSION}")
    kind = _req(doc, "kind", str, w)
    if kind not in ("baseline", "poll", "close"):
        raise SchemaError(f"{w}: field 'kind' is {kind!r}")
    part, parts = _opt(doc, "part", int, 0, w), _opt(doc, "parts", int, 1, w)
    if not 0 <= part < parts:
        raise SchemaError(f"{w}: field 'part' is {part} of {parts}")
    failures = tuple(
        Failure(
            scope=_req(f, "scope", str, f"{w}.failures[{i}]"),
            ref=str(_req(f, "ref", (str, int), f"{w}.failures[{i}]")),
            error=_opt(f, "error", str, "", f"{w}.failures[{i}]"),
        )
        for i, f in enumerate(_opt(doc, "failures", list, [], w))
    )
    slots = tuple(
        slot_from_dict(s, f"{w}.slots[{i}]") for i, s in enumerate(_opt(doc, "slots", list, [], w))
    )
    return Snapshot(
        v=v,
        snapshot_id=_req(doc, "snapshot_id", str, w),
        kind=kind,
        market=_req(doc, "market", str, w),
        provider=_req(doc, "provider", str, w),
        bucket_id=_req(doc, "bucket_id", str, w),
        date=_req(doc, "date", str, w),
        time_slot=_req(doc, "time_slot", str, w),
        polled_at_ms=_req(doc, "polled_at_ms", int, w),
        complete=_req(doc, "complete", bool, w),
        part=part,
        parts=parts,
        failures=failures,
        slots=slots,
    )


_DROP_FIELDS = {f for f in DropEvent.__dataclass_fields__ if f != "extra"}


def drop_from_dict(doc: Any) -> DropEvent:
    w = "drop"
    if not isinstance(doc, dict):
        raise SchemaError(f"{w}: not an object")
    v = _req(doc, "v", int, w)
    if v != DROP_VERSION:
        raise SchemaError(f"{w}: field 'v' is {v}, this build reads {DROP_VERSION}")
    event = _req(doc, "event", str, w)
    if event not in ("open", "close"):
        raise SchemaError(f"{w}: field 'event' is {event!r}")
    return DropEvent(
        v=v,
        event=event,
        dedupe_key=_req(doc, "dedupe_key", str, w),
        bucket_id=_req(doc, "bucket_id", str, w),
        market=_req(doc, "market", str, w),
        provider=_req(doc, "provider", str, w),
        date=_req(doc, "date", str, w),
        time_slot=_req(doc, "time_slot", str, w),
        slot_id=_req(doc, "slot_id", str, w),
        venue_id=_req(doc, "venue_id", str, w),
        venue_name=_opt(doc, "venue_name", str, "", w),
        neighborhood=_opt(doc, "neighborhood", str, "", w),
        actual_time=_req(doc, "actual_time", str, w),
        time_zone=_opt(doc, "time_zone", str, "", w),
        seating_types=tuple(_opt(doc, "seating_types", list, [], w)),
        party_min=_opt(doc, "party_min", int, 0, w),
        party_max=_opt(doc, "party_max", int, 0, w),
        booking=_opt(doc, "booking", str, "", w),
        opened_at_ms=_req(doc, "opened_at_ms", int, w),
        snapshot_id=_opt(doc, "snapshot_id", str, "", w),
        closed_at_ms=_opt(doc, "closed_at_ms", int, None, w),
        open_seconds=_opt(doc, "open_seconds", (int, float), None, w),
        extra={k: val for k, val in doc.items() if k not in _DROP_FIELDS},
    )


# ------------------------------------------------------------------------------ bytes


def encode(record: Snapshot | DropEvent | BucketStats) -> bytes:
    return orjson.dumps(record.to_dict())


def _loads(data: bytes | str | None, what: str) -> Any:
    if data is None:
        raise SchemaError(f"{what}: empty record")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"{what}: not JSON: {exc}") from None


def decode_snapshot(data: bytes | str | None) -> Snapshot:
    return snapshot_from_dict(_loads(data, "snapshot"))


def decode_drop(data: bytes | str | None) -> DropEvent:
    return drop_from_dict(_loads(data, "drop"))


def decode_stats(data: bytes | str | None) -> BucketStats:
    return stats_from_dict(_loads(data, "bucket_stats"))
