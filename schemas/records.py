"""The records that cross Kafka, as Python types, with strict decoding.

- :class:`Slot`: one normalized reservation slot (provider-neutral).
- :class:`Snapshot`: one part of one poll of one bucket by one provider (snapshot topic).
- :class:`DropEvent`: a slot that opened (``event="open"``) or a reported slot that closed
  (``event="close"``) (drops topic; the public contract, see ``schemas/json/``).

Decoding checks types and required fields and raises :class:`SchemaError` naming the field;
unknown extra fields are tolerated (newer producers may add some).
"""

from __future__ import annotations

import struct
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from drops.errors import DropsError, InvariantError
from schemas import ids

SNAPSHOT_VERSION = 1  # the JSON form (``Snapshot.to_dict``), still read
SNAPSHOT_V2 = 2  # the binary form written by :func:`encode` (``schemas/SNAPSHOT_FORMAT.md``)
DROP_VERSION = 2  # v2 adds the optional ``opened_after_ms``; v1 records are still read
DROP_VERSIONS = (1, 2)  # the drop versions this build reads
STATS_VERSION = 1

ReadVia = Literal["search", "fallback"]
READ_SEARCH: ReadVia = "search"  # read by its bucket's ordinary read (area search, availability)
READ_FALLBACK: ReadVia = "fallback"  # read by the fallback endpoint (Resy's per-venue find)
READ_VIA: tuple[ReadVia, ...] = (READ_SEARCH, READ_FALLBACK)

# "rebaseline" is an operator's marker (``drops rebaseline``): no slots, it tells the processor
# that the stream's next snapshot is its new baseline
SnapshotKind = Literal["baseline", "poll", "close", "rebaseline"]
STATS_KINDS = ("baseline", "poll", "close")
EventKind = Literal["open", "close"]


class SchemaError(DropsError, ValueError):
    """A record that cannot be decoded; the message names the field."""


# a field's value when a record on the wire leaves it out, for a field the constructor still
# requires (field metadata); a field with a default takes its default
WIRE_DEFAULT = "wire_default"


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
    read_via: ReadVia = READ_SEARCH  # which endpoint read it (READ_VIA)
    # what the provider's answer gives for the venue's booking page (domain/booking.py):
    # Resy's venue url_slug and its location's url_slug (the city); "" when not given
    venue_slug: str = ""
    venue_city: str = ""

    def __post_init__(self) -> None:
        if not self.slot_id:
            sid = ids.slot_id(self.provider, self.venue_id, self.actual_time)
            object.__setattr__(self, "slot_id", sid)

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "venue_id": self.venue_id,
            "venue_name": self.venue_name,
            "actual_time": self.actual_time,
            "time_zone": self.time_zone,
            "neighborhood": self.neighborhood,
            "seating_types": list(self.seating_types),
            "party_min": self.party_min,
            "party_max": self.party_max,
            "booking": self.booking,
            "slot_id": self.slot_id,
            "read_via": self.read_via,
            "venue_slug": self.venue_slug,
            "venue_city": self.venue_city,
        }


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
            **_header_fields(self),
            "slots": [s.to_dict() for s in self.slots],
        }


_HEADER: tuple[str, ...] = tuple(f.name for f in fields(Snapshot) if f.name not in ("slots", "v"))
"""The snapshot's header fields (everything but its slots and version), from the dataclass."""
_HEADER_REQUIRED: dict[str, type] = {
    f.name: typing.get_type_hints(Snapshot)[f.name]
    for f in fields(Snapshot)
    if f.default is MISSING and f.name != "kind"  # kind: checked with the version
}
"""The header fields a decoder requires, with their type."""


def _header_fields(snap: Snapshot | SnapshotView) -> dict[str, Any]:
    """The header fields as JSON values (failures as objects)."""
    doc = {n: getattr(snap, n) for n in _HEADER}
    doc["failures"] = [asdict(f) for f in snap.failures]
    return doc


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
    venue_name: str = field(metadata={WIRE_DEFAULT: ""})
    neighborhood: str = field(metadata={WIRE_DEFAULT: ""})
    actual_time: str
    time_zone: str = field(metadata={WIRE_DEFAULT: ""})
    seating_types: tuple[str, ...] = field(metadata={WIRE_DEFAULT: ()})
    party_min: int = field(metadata={WIRE_DEFAULT: 0})
    party_max: int = field(metadata={WIRE_DEFAULT: 0})
    booking: str = field(metadata={WIRE_DEFAULT: ""})
    opened_at_ms: int
    snapshot_id: str = field(metadata={WIRE_DEFAULT: ""})
    closed_at_ms: int | None = None
    open_seconds: float | None = None
    # the event time of the stream's last complete poll before the one that saw the slot
    # open: the slot opened in (opened_after_ms, opened_at_ms]; None when unknown (v1
    # records, a stream with no complete poll yet). After an outage it is the last poll
    # before the gap.
    opened_after_ms: int | None = None
    # (optional fields of v2 go here, each with a default: readers of v2 treat them as
    # absent when missing; see docs/operations.md, "Upgrades")
    read_via: ReadVia = READ_SEARCH  # how the slot was read: "search" or "fallback"
    # the venue's booking-page slug and city as the provider gave them ("" when it did not)
    venue_slug: str = ""
    venue_city: str = ""
    # the provider's booking page for this venue, date, time and party size
    # (domain/booking.py); "" when the provider's answer did not give what it needs
    booking_url: str = ""
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


def _versioned(
    doc: Any, w: str, version: int | tuple[int, ...], name: str, allowed: tuple[str, ...]
) -> tuple[int, Any]:
    """Check the object, its version ``v`` (``version``, or one of them) and its kind field
    (one of ``allowed``)."""
    if not isinstance(doc, dict):
        raise SchemaError(f"{w}: not an object")
    v = _req(doc, "v", int, w)
    versions = version if isinstance(version, tuple) else (version,)
    if v not in versions:
        known = " or ".join(map(str, versions))
        raise SchemaError(f"{w}: field 'v' is {v}, this build reads {known}")
    value = _req(doc, name, str, w)
    if value not in allowed:
        raise SchemaError(f"{w}: field {name!r} is {value!r}")
    return v, value


def stats_from_dict(doc: Any) -> BucketStats:
    w = "bucket_stats"
    v, kind = _versioned(doc, w, STATS_VERSION, "kind", STATS_KINDS)
    return BucketStats(v=v, kind=kind, **_decode_fields(doc, _STATS_RULES, w))


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
        read_via=_read_via(_opt(doc, "read_via", str, READ_SEARCH, where), where),
        venue_slug=_opt(doc, "venue_slug", str, "", where),
        venue_city=_opt(doc, "venue_city", str, "", where),
    )
    try:
        expected = ids.slot_id(slot.provider, slot.venue_id, slot.actual_time)
    except ValueError as exc:
        raise SchemaError(f"{where}: field 'actual_time': {exc}") from None
    if slot.slot_id != expected:
        raise SchemaError(f"{where}: field 'slot_id' is not hash(provider, venue_id, actual_time)")
    return slot


def _read_via(value: str, where: str) -> ReadVia:
    for via in READ_VIA:
        if value == via:
            return via
    raise SchemaError(f"{where}: field 'read_via' is {value!r}, not one of {READ_VIA}")


def snapshot_from_dict(doc: Any) -> Snapshot:
    """A v1 (JSON) snapshot document, every slot decoded and checked."""
    head = _header_from_dict(doc, "snapshot", SNAPSHOT_VERSION)
    slots = tuple(
        slot_from_dict(s, f"snapshot.slots[{i}]")
        for i, s in enumerate(_opt(doc, "slots", list, [], "snapshot"))
    )
    return Snapshot(**head, slots=slots)


@dataclass(frozen=True, slots=True)
class FieldRule:
    """How one field of a record is read from its JSON object (derived from the dataclass)."""

    name: str
    types: type | tuple[type, ...]  # the JSON types it may have
    required: bool  # a missing (or null) value is a SchemaError
    default: Any  # its value when it is missing
    as_tuple: bool = False  # a JSON array kept as a tuple
    choices: tuple[str, ...] = ()  # a Literal: the values it may take


def field_rules(record: type, skip: tuple[str, ...] = ()) -> tuple[FieldRule, ...]:
    """The decoding rules of a record dataclass's fields (but ``skip``), in declaration order:
    each field's JSON type from its annotation; required when it has neither a default nor a
    :data:`WIRE_DEFAULT`. A field added to the dataclass is decoded with no other change."""
    hints = typing.get_type_hints(record)
    out = []
    for f in fields(record):
        if f.name in skip:
            continue
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        origin = typing.get_origin(hint)
        if WIRE_DEFAULT in f.metadata:
            required, default = False, f.metadata[WIRE_DEFAULT]
        elif f.default is not MISSING:
            required, default = False, f.default
        else:
            required, default = True, None
        if origin is Literal:
            rule = FieldRule(f.name, str, required, default, choices=tuple(map(str, args)))
        elif origin in (tuple, list):
            rule = FieldRule(f.name, list, required, default, as_tuple=origin is tuple)
        elif args and len(args) == 1:  # X | None
            types: type | tuple[type, ...] = (int, float) if args[0] is float else args[0]
            rule = FieldRule(f.name, types, required, default)
        elif hint is float:
            rule = FieldRule(f.name, (int, float), required, default)
        elif hint in (str, int, bool):
            rule = FieldRule(f.name, hint, required, default)
        else:
            raise InvariantError(f"{record.__name__}.{f.name}: no JSON reading for {hint!r}")
        out.append(rule)
    return tuple(out)


def _decode_fields(doc: dict[str, Any], rules: tuple[FieldRule, ...], w: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in rules:
        if r.required:
            value = _req(doc, r.name, r.types, w)
        else:
            value = _opt(doc, r.name, r.types, r.default, w)
        if r.choices and value not in r.choices:
            raise SchemaError(f"{w}: field {r.name!r} is {value!r}, not one of {r.choices}")
        out[r.name] = tuple(value) if r.as_tuple else value
    return out


_DROP_RULES = field_rules(DropEvent, skip=("v", "event", "extra"))
_DROP_FIELDS = {f.name for f in fields(DropEvent) if f.name != "extra"}
_STATS_RULES = field_rules(BucketStats, skip=("v", "kind"))


def drop_from_dict(doc: Any) -> DropEvent:
    w = "drop"
    v, event = _versioned(doc, w, DROP_VERSIONS, "event", ("open", "close"))
    return DropEvent(
        v=v,
        event=event,
        **_decode_fields(doc, _DROP_RULES, w),
        extra={k: val for k, val in doc.items() if k not in _DROP_FIELDS},
    )


# ------------------------------------------------------------------------------ snapshot v2
#
# The byte layout is specified in schemas/SNAPSHOT_FORMAT.md (keep the two in step).

MAGIC_V2 = b"DDS\x02"
_PRE = struct.Struct("<4sIIIIII")  # magic, header, slots, venues, venue ids, venue table, rows
_U32_MAX = 2**32 - 1

# provider, venue_id, venue_name, time_zone, neighborhood, venue_slug, venue_city
Venue = tuple[str, str, str, str, str, str, str]
# provider, venue_name, time_zone, neighborhood, venue_slug, venue_city
VenueDetails = tuple[str, str, str, str, str, str]


def venue_row(details: VenueDetails) -> tuple[str, ...]:
    """A venue's row of the v2 venue table: 4 strings, or 6 when it has a booking slug/city
    (readers of the 4-string rows keep working; the row of a venue without them is unchanged)."""
    return details if details[4] or details[5] else details[:4]


def _venue_of(s: Slot) -> Venue:
    return (
        s.provider, s.venue_id, s.venue_name, s.time_zone, s.neighborhood, s.venue_slug,
        s.venue_city,
    )  # fmt: skip


IdArray = npt.NDArray[np.uint64]


def _align8(n: int) -> int:
    return (n + 7) & ~7


def _header_doc(snap: Snapshot | SnapshotView) -> dict[str, Any]:
    return {"v": SNAPSHOT_V2, **_header_fields(snap)}


def pack_snapshot(
    header: Snapshot,
    slot_ids: npt.NDArray[np.uint64],
    venue_index: npt.NDArray[np.uint32],
    venue_ids_json: bytes,
    venues_json: bytes,
    n_venues: int,
    offsets: npt.NDArray[np.uint32],
    rows: bytes,
) -> bytes:
    """The v2 bytes from columns (``header.slots`` is ignored): the one writer of the layout.

    ``venue_ids_json`` is a JSON array of the ``n_venues`` venue ids, ``venues_json`` a JSON
    array of their details, ``rows`` the concatenated per-slot JSON rows, ``offsets``
    (``len(slot_ids) + 1`` values) where each row starts.
    :func:`encode` builds the columns from ``Slot`` objects; a bulk writer may build them itself.
    """
    n = len(slot_ids)
    if len(venue_index) != n or len(offsets) != n + 1:
        raise ValueError("slot_ids, venue_index and offsets are not aligned")
    if max(len(rows), len(venues_json), len(venue_ids_json)) > _U32_MAX:
        raise ValueError("snapshot part too large")
    head = orjson.dumps(_header_doc(header))
    start = _align8(_PRE.size + len(head))
    return b"".join(
        (
            _PRE.pack(
                MAGIC_V2, len(head), n, n_venues, len(venue_ids_json), len(venues_json), len(rows)
            ),
            head,
            bytes(start - _PRE.size - len(head)),
            np.ascontiguousarray(slot_ids, dtype="<u8").tobytes(),
            np.ascontiguousarray(venue_index, dtype="<u4").tobytes(),
            np.ascontiguousarray(offsets, dtype="<u4").tobytes(),
            venue_ids_json,
            venues_json,
            rows,
        )
    )


def _encode_v2(snap: Snapshot) -> bytes:
    venues: dict[Venue, int] = {}
    vidx: list[int] = []
    rows: list[bytes] = []
    for s in snap.slots:
        vk = _venue_of(s)
        j = venues.get(vk)
        if j is None:
            j = venues[vk] = len(venues)
        vidx.append(j)
        row: tuple[Any, ...] = (
            s.actual_time, s.seating_types, s.party_min, s.party_max, s.booking
        )  # fmt: skip
        rows.append(orjson.dumps(row if s.read_via == READ_SEARCH else (*row, s.read_via)))
    n = len(rows)
    offsets = np.zeros(n + 1, dtype=np.uint32)
    offsets[1:] = np.cumsum(np.fromiter(map(len, rows), dtype=np.int64, count=n))
    return pack_snapshot(
        snap,
        np.fromiter((int(s.slot_id, 16) for s in snap.slots), dtype=np.uint64, count=n),
        np.array(vidx, dtype=np.uint32),
        orjson.dumps([v[1] for v in venues]),
        orjson.dumps([venue_row((v[0], v[2], v[3], v[4], v[5], v[6])) for v in venues]),
        len(venues),
        offsets,
        b"".join(rows),
    )


class SnapshotView:
    """A decoded snapshot part whose slots are decoded only when asked for.

    ``ids`` (uint64, row order, possibly with repeats) and ``venue_index`` (into
    ``venue_keys``, the venue ids of the record's venue table) are read from the record's bytes
    without a copy; :meth:`slot` decodes one row (and, the first time, the venue details) and
    checks its ``slot_id`` hash. A v1 (JSON) record gives a view over its decoded slots.
    """

    __slots__ = (
        "_details",
        "_details_raw",
        "_offsets",
        "_rows",
        "_slots",
        "bucket_id",
        "complete",
        "date",
        "failures",
        "ids",
        "kind",
        "market",
        "part",
        "parts",
        "polled_at_ms",
        "provider",
        "snapshot_id",
        "time_slot",
        "v",
        "venue_index",
        "venue_keys",
    )  # fmt: skip

    v: int
    snapshot_id: str
    kind: SnapshotKind
    market: str
    provider: str
    bucket_id: str
    date: str
    time_slot: str
    polled_at_ms: int
    complete: bool
    part: int
    parts: int
    failures: tuple[Failure, ...]
    ids: IdArray
    venue_index: npt.NDArray[np.uint32]
    venue_keys: list[str]
    _details: list[VenueDetails] | None
    _details_raw: memoryview | None
    _rows: memoryview | None
    _offsets: npt.NDArray[np.uint32] | None
    _slots: tuple[Slot, ...] | None

    def __init__(self, header: dict[str, Any]) -> None:
        for name, value in header.items():
            setattr(self, name, value)
        self._rows = self._offsets = self._slots = None
        self._details = self._details_raw = None

    @classmethod
    def of(cls, snap: Snapshot) -> SnapshotView:
        """A view over a ``Snapshot`` already in memory (a v1 record, a test)."""
        view = cls({name: getattr(snap, name) for name in _HEADER})
        view.v = snap.v
        venues: dict[Venue, int] = {}
        vidx = []
        for s in snap.slots:
            vk = _venue_of(s)
            vidx.append(venues.setdefault(vk, len(venues)))
        view.ids = np.fromiter(
            (int(s.slot_id, 16) for s in snap.slots), dtype=np.uint64, count=len(snap.slots)
        )
        view.venue_index = np.array(vidx, dtype=np.uint32)
        view.venue_keys = [v[1] for v in venues]
        view._details = [(v[0], v[2], v[3], v[4], v[5], v[6]) for v in venues]
        view._slots = snap.slots
        return view

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def key(self) -> str:
        return ids.stream_key(self.bucket_id, self.provider)

    @property
    def is_last_part(self) -> bool:
        return self.part == self.parts - 1

    def venue_id(self, i: int) -> str:
        return self.venue_keys[int(self.venue_index[i])]

    def venue_ids(self) -> set[str]:
        """The venues that have a slot in this part."""
        m = len(self.venue_keys)
        if not m:
            return set()
        used = np.bincount(self.venue_index, minlength=m)
        if used.all():
            return set(self.venue_keys)
        return {self.venue_keys[j] for j in np.flatnonzero(used).tolist()}

    def venue(self, j: int) -> Venue:
        """Venue ``j`` of the record's table (details decoded on first use)."""
        if self._details is None:
            self._details = _venue_details(self._details_raw, len(self.venue_keys))
            self._details_raw = None
        provider, name, zone, hood, slug, city = self._details[j]
        return provider, self.venue_keys[j], name, zone, hood, slug, city

    def slot(self, i: int) -> Slot:
        """Slot ``i`` (row order), decoded and checked against its id; :class:`SchemaError`."""
        if self._slots is not None:
            return self._slots[i]
        if self._rows is None or self._offsets is None:
            raise InvariantError("a lazy snapshot view without its rows")
        w = f"snapshot.slots[{i}]"
        a, b = int(self._offsets[i]), int(self._offsets[i + 1])
        try:
            row = orjson.loads(self._rows[a:b])
        except orjson.JSONDecodeError as exc:
            raise SchemaError(f"{w}: not JSON: {exc}") from None
        if not isinstance(row, list) or len(row) < 5:
            raise SchemaError(f"{w}: not a row of 5 values")
        actual_time, seating, party_min, party_max, booking = row[:5]
        via = row[5] if len(row) > 5 else READ_SEARCH  # the sixth value: only when not search
        if via not in READ_VIA:
            raise SchemaError(f"{w}: field 'read_via' is {via!r}, not one of {READ_VIA}")
        for name, value, typ in (
            ("actual_time", actual_time, str),
            ("seating_types", seating, list),
            ("party_min", party_min, int),
            ("party_max", party_max, int),
            ("booking", booking, str),
        ):
            if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
                raise SchemaError(f"{w}: field {name!r} has type {type(value).__name__}")
        if not all(isinstance(x, str) for x in seating):
            raise SchemaError(f"{w}: field 'seating_types' is not a list of strings")
        provider, venue_id, venue_name, time_zone, neighborhood, slug, city = self.venue(
            int(self.venue_index[i])
        )
        sid = int(self.ids[i])
        try:
            expected = ids.slot_id_int(provider, venue_id, actual_time)
        except ValueError as exc:
            raise SchemaError(f"{w}: field 'actual_time': {exc}") from None
        if sid != expected:
            raise SchemaError(f"{w}: field 'slot_id' is not hash(provider, venue_id, actual_time)")
        return Slot(
            provider=provider,
            venue_id=venue_id,
            venue_name=venue_name,
            actual_time=actual_time,
            time_zone=time_zone,
            neighborhood=neighborhood,
            seating_types=tuple(seating),
            party_min=party_min,
            party_max=party_max,
            booking=booking,
            slot_id=f"{sid:016x}",
            read_via=via,
            venue_slug=slug,
            venue_city=city,
        )

    @property
    def slots(self) -> tuple[Slot, ...]:
        """Every slot, decoded and checked (the slow path: for tools and tests)."""
        if self._slots is None:
            self._slots = tuple(self.slot(i) for i in range(len(self.ids)))
            self._rows = None
        return self._slots

    def to_snapshot(self) -> Snapshot:
        return Snapshot(**{n: getattr(self, n) for n in _HEADER}, slots=self.slots)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (Snapshot, SnapshotView)):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _HEADER) and tuple(
            self.slots
        ) == tuple(other.slots)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"SnapshotView({self.key!r}, {self.snapshot_id!r}, {self.kind}, part {self.part}/"
            f"{self.parts}, {len(self.ids)} slots, complete={self.complete})"
        )


def _header_from_dict(doc: Any, w: str, version: int) -> dict[str, Any]:
    """The snapshot fields of a v1 document or a v2 header, checked."""
    v, kind = _versioned(doc, w, version, "kind", ("baseline", "poll", "close", "rebaseline"))
    part, parts = _opt(doc, "part", int, 0, w), _opt(doc, "parts", int, 1, w)
    if not 0 <= part < parts:
        raise SchemaError(f"{w}: field 'part' is {part} of {parts}")
    failures = []
    for i, f in enumerate(_opt(doc, "failures", list, [], w)):
        fw = f"{w}.failures[{i}]"
        if not isinstance(f, dict):
            raise SchemaError(f"{fw}: not an object")
        failures.append(
            Failure(
                scope=_req(f, "scope", str, fw),
                ref=str(_req(f, "ref", (str, int), fw)),
                error=_opt(f, "error", str, "", fw),
            )
        )
    out: dict[str, Any] = {"v": v, "kind": kind, "part": part, "parts": parts}
    for name, typ in _HEADER_REQUIRED.items():
        out[name] = _req(doc, name, typ, w)
    out["failures"] = tuple(failures)
    return out


def _venue_details(raw: memoryview | None, m: int) -> list[VenueDetails]:
    w = "snapshot.venues"
    try:
        table = orjson.loads(raw if raw is not None else b"[]")
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"{w}: not JSON: {exc}") from None
    if not isinstance(table, list) or len(table) != m:
        raise SchemaError(f"{w}: not a list of {m} venues")
    out: list[VenueDetails] = []
    for j, row in enumerate(table):
        if (
            not isinstance(row, list)
            or len(row) < 4
            or not all(isinstance(x, str) for x in row[:6])
        ):
            raise SchemaError(f"{w}[{j}]: not a row of 4 (or 6) strings")
        slug = row[4] if len(row) > 4 else ""
        city = row[5] if len(row) > 5 else ""
        out.append((row[0], row[1], row[2], row[3], slug, city))
    return out


def _decode_v2(data: bytes) -> SnapshotView:
    w = "snapshot"
    size = len(data)
    if size < _PRE.size:
        raise SchemaError(f"{w}: {size} bytes, shorter than the v2 preamble")
    _, n_head, n, m, n_keys, n_table, n_rows = _PRE.unpack_from(data)
    at_ids = _align8(_PRE.size + n_head)
    at_vidx = at_ids + 8 * n
    at_offs = at_vidx + 4 * n
    at_keys = at_offs + 4 * (n + 1)
    at_table = at_keys + n_keys
    at_rows = at_table + n_table
    if at_rows + n_rows != size:
        raise SchemaError(
            f"{w}: the v2 lengths (header {n_head}, slots {n}, venue ids {n_keys}, venue table "
            f"{n_table}, rows {n_rows}) need {at_rows + n_rows} bytes, the record has {size}"
        )
    mv = memoryview(data)
    try:
        head = orjson.loads(mv[_PRE.size : _PRE.size + n_head])
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"{w}.header: not JSON: {exc}") from None
    view = SnapshotView(_header_from_dict(head, f"{w}.header", SNAPSHOT_V2))
    view.ids = np.frombuffer(data, dtype="<u8", count=n, offset=at_ids).astype(
        np.uint64, copy=False
    )
    view.venue_index = np.frombuffer(data, dtype="<u4", count=n, offset=at_vidx).astype(
        np.uint32, copy=False
    )
    offs = np.frombuffer(data, dtype="<u4", count=n + 1, offset=at_offs).astype(
        np.uint32, copy=False
    )
    if offs[0] != 0 or offs[n] != n_rows or (n and not (offs[1:] >= offs[:-1]).all()):
        raise SchemaError(f"{w}.offsets: not increasing from 0 to the rows' length {n_rows}")
    if n and int(view.venue_index.max()) >= m:
        raise SchemaError(f"{w}.venue_index: an index is past the {m} venues")
    try:
        keys = orjson.loads(mv[at_keys:at_table])
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"{w}.venue_ids: not JSON: {exc}") from None
    if not isinstance(keys, list) or len(keys) != m:
        raise SchemaError(f"{w}.venue_ids: not a list of {m} venue ids")
    if not all(type(k) is str for k in keys):
        raise SchemaError(f"{w}.venue_ids: not a list of strings")
    view.venue_keys = keys
    view._details_raw = mv[at_table:at_rows]
    view._rows = mv[at_rows:]
    view._offsets = offs
    return view


# ------------------------------------------------------------------------------ bytes


def encode(record: Snapshot | SnapshotView | DropEvent | BucketStats) -> bytes:
    """A snapshot as v2 bytes; a drop or bucket-stats record as JSON."""
    if isinstance(record, SnapshotView):
        record = record.to_snapshot()
    if isinstance(record, Snapshot):
        return _encode_v2(record)
    return orjson.dumps(record.to_dict())


def _loads(data: bytes | str | None, what: str) -> Any:
    if data is None:
        raise SchemaError(f"{what}: empty record")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"{what}: not JSON: {exc}") from None


def decode_snapshot(data: bytes | str | None) -> SnapshotView:
    """A snapshot record, v2 (binary) or v1 (JSON), as a :class:`SnapshotView`."""
    if isinstance(data, (bytes, bytearray, memoryview)) and bytes(data[:4]) == MAGIC_V2:
        return _decode_v2(bytes(data) if not isinstance(data, bytes) else data)
    return SnapshotView.of(snapshot_from_dict(_loads(data, "snapshot")))


def decode_drop(data: bytes | str | None) -> DropEvent:
    return drop_from_dict(_loads(data, "drop"))


def decode_stats(data: bytes | str | None) -> BucketStats:
    return stats_from_dict(_loads(data, "bucket_stats"))
