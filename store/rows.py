"""Pure mapping from records to ClickHouse rows, and the dedupe plan of one batch."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any

import orjson

from schemas import BucketStats, DropEvent

_RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(DropEvent) if f.name != "extra")
_AS_DATETIME = {
    "opened_at_ms": "opened_at",
    "closed_at_ms": "closed_at",
    "opened_after_ms": "opened_after",
}

DROP_COLUMNS: tuple[str, ...] = (
    *(_AS_DATETIME.get(name, name) for name in _RECORD_FIELDS),
    "extra",
    "kafka_partition",
    "kafka_offset",
    "item",
)
"""The columns of ``drop_events``: the drop record's fields (times as DateTime64), then ours."""

ITEM_KEYS: tuple[str, ...] = (*_RECORD_FIELDS, "kafka_partition", "kafka_offset")
"""The keys of one feed item (``/feed``, ``/feed/stream``), in order."""

STATS_COLUMNS: tuple[str, ...] = (
    *(
        "polled_at" if f.name == "polled_at_ms" else f.name
        for f in fields(BucketStats)
        if f.name != "v"
    ),
    "kafka_partition",
    "kafka_offset",
)
"""The columns of ``discovery_buckets``: the stats record's fields (its time as DateTime64)."""

VENUE_COLUMNS: tuple[str, ...] = (
    "market",
    "provider",
    "venue_id",
    "venue_name",
    "neighborhood",
    "time_zone",
    "last_seen",
)


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def dt_to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return round(value.timestamp() * 1000)


def _date(text: str) -> date:
    return date.fromisoformat(text)


def _u16(value: int) -> int:
    return max(0, min(int(value), 65535))


def item_dict(ev: DropEvent, partition: int, offset: int) -> dict[str, Any]:
    """The feed item of one drop record at its log position (keys :data:`ITEM_KEYS`)."""
    d = ev.to_dict()
    d["kafka_partition"] = partition
    d["kafka_offset"] = offset
    return {k: d.get(k) for k in ITEM_KEYS}


def item_json(ev: DropEvent, partition: int, offset: int) -> bytes:
    """The feed item as JSON bytes: stored per row (column ``item``) and sent as is."""
    return orjson.dumps(item_dict(ev, partition, offset))


def _opt_dt(ms: int | None) -> datetime | None:
    return None if ms is None else ms_to_dt(ms)


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


# how a record field becomes its column's value (a field not named here is stored as is):
# a new optional field of the drop record needs only its column (a numbered migration) and,
# when it is not stored as is, a line here
_TO_COLUMN: dict[str, Any] = {
    "date": _date,
    "seating_types": list,
    "party_min": _u16,
    "party_max": _u16,
    "opened_at_ms": ms_to_dt,
    "closed_at_ms": _opt_dt,
    "opened_after_ms": _opt_dt,
    "open_seconds": _opt_float,
}


def drop_row(ev: DropEvent, partition: int, offset: int) -> list[Any]:
    """The row of :data:`DROP_COLUMNS` for one drop record at its log position."""
    row: list[Any] = []
    for name in _RECORD_FIELDS:
        value = getattr(ev, name)
        conv = _TO_COLUMN.get(name)
        row.append(value if conv is None else conv(value))
    row += [
        orjson.dumps(ev.extra).decode() if ev.extra else "",
        partition,
        offset,
        item_json(ev, partition, offset).decode(),
    ]
    return row


def stats_row(st: BucketStats, partition: int, offset: int) -> list[Any]:
    return [
        st.market,
        st.provider,
        st.bucket_id,
        _date(st.date),
        st.time_slot,
        st.kind,
        st.snapshot_id,
        ms_to_dt(st.polled_at_ms),
        max(0, st.duration_ms),
        max(0, st.venues),
        max(0, st.slots),
        st.complete,
        max(0, st.failures),
        max(0, st.requests),
        max(0, st.retries),
        partition,
        offset,
    ]


def venue_rows(events: Iterable[DropEvent]) -> list[list[Any]]:
    """One row per venue seen in the batch (its latest name and neighborhood)."""
    latest: dict[tuple[str, str], DropEvent] = {}
    for ev in events:
        k = (ev.provider, ev.venue_id)
        if k not in latest or ev.opened_at_ms >= latest[k].opened_at_ms:
            latest[k] = ev
    return [
        [
            ev.market,
            ev.provider,
            ev.venue_id,
            ev.venue_name,
            ev.neighborhood,
            ev.time_zone,
            ms_to_dt(max(ev.opened_at_ms, ev.closed_at_ms or 0)),
        ]
        for ev in latest.values()
    ]


# The ranges of the column types (a value outside one fails the whole insert, for ever)
DATE_MIN, DATE_MAX = date(1970, 1, 1), date(2149, 6, 6)  # ClickHouse ``Date``
MS_MAX = 4_294_967_295_000  # the TTLs take ``toDateTime(...)``: a DateTime ends in 2106
U32_MAX = 2**32 - 1


def _check_date(what: str, name: str, text: str) -> None:
    try:
        day = _date(text)
    except ValueError:
        raise ValueError(f"{what}: field {name!r} is not YYYY-MM-DD: {text!r}") from None
    if not DATE_MIN <= day <= DATE_MAX:
        raise ValueError(f"{what}: field {name!r} is outside {DATE_MIN}..{DATE_MAX}: {text!r}")


def _check_ms(what: str, name: str, ms: int | None) -> None:
    if ms is not None and not 0 <= ms <= MS_MAX:
        raise ValueError(f"{what}: field {name!r} out of range: {ms}")


def validate_drop(ev: DropEvent) -> None:
    """Checks the columns need beyond the schema's types (raises ValueError naming the field):
    every value must fit its column's type, or the insert fails on every retry."""
    _check_date("drop", "date", ev.date)
    _check_ms("drop", "opened_at_ms", ev.opened_at_ms)
    _check_ms("drop", "closed_at_ms", ev.closed_at_ms)
    _check_ms("drop", "opened_after_ms", ev.opened_after_ms)
    if not ev.dedupe_key:
        raise ValueError("drop: field 'dedupe_key' is empty")
    if not all(isinstance(t, str) for t in ev.seating_types):
        raise ValueError("drop: field 'seating_types' is not a list of strings")


def validate_stats(st: BucketStats) -> None:
    _check_date("bucket_stats", "date", st.date)
    _check_ms("bucket_stats", "polled_at_ms", st.polled_at_ms)
    for name in ("duration_ms", "venues", "slots", "failures", "requests", "retries"):
        value = getattr(st, name)
        if value > U32_MAX:
            raise ValueError(f"bucket_stats: field {name!r} exceeds {U32_MAX}: {value}")


@dataclass(frozen=True, slots=True)
class Positioned:
    """A decoded drop with its place in the log."""

    partition: int
    offset: int
    event: DropEvent


def plan_drops(
    batch: Sequence[Positioned], stored_upto: int, existing_keys: set[str]
) -> list[Positioned]:
    """What of ``batch`` (one partition, offset order) still has to be inserted.

    Skips offsets at or below ``stored_upto`` (a replay or a retry of stored rows), dedupe keys
    already stored (the same drop written again under a new offset) and repeats inside the batch.
    """
    seen = set(existing_keys)
    out: list[Positioned] = []
    for item in batch:
        if item.offset <= stored_upto or item.event.dedupe_key in seen:
            continue
        seen.add(item.event.dedupe_key)
        out.append(item)
    return out


def dedupe_token(table: str, partition: int, offsets: Sequence[int]) -> str:
    """Token of one insert block: the same rows retried give the same token."""
    h = hashlib.blake2b(digest_size=12)
    for o in offsets:
        h.update(o.to_bytes(8, "big"))
    first, last = (offsets[0], offsets[-1]) if offsets else (-1, -1)
    return f"{table}:{partition}:{first}-{last}:{len(offsets)}:{h.hexdigest()}"


def opened_window(events: Iterable[DropEvent]) -> tuple[datetime, datetime] | None:
    """The opened_at range of the batch (the dedupe lookup reads only those day partitions)."""
    times = [ev.opened_at_ms for ev in events]
    if not times:
        return None
    return ms_to_dt(min(times)), ms_to_dt(max(times))
