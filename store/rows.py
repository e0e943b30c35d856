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


def validate_drop(ev: DropEvent) -> None:
    """Checks the columns need beyond the schema's types (raises ValueError naming the field)."""
    try:
        _date(ev.date)
    except ValueError:
        raise ValueError(f"drop: field 'date' is not YYYY-MM-DD: {ev.date!r}") from None
    if not 0 <= ev.opened_at_ms < 32503680000000:
        raise ValueError(f"drop: field 'opened_at_ms' out of range: {ev.opened_at_ms}")
    for name, ms in (("closed_at_ms", ev.closed_at_ms), ("opened_after_ms", ev.opened_after_ms)):
        if ms is not None and not 0 <= ms < 32503680000000:
            raise ValueError(f"drop: field {name!r} out of range: {ms}")
    if not ev.dedupe_key:
        raise ValueError("drop: field 'dedupe_key' is empty")


def validate_stats(st: BucketStats) -> None:
    try:
        _date(st.date)
    except ValueError:
        raise ValueError(f"bucket_stats: field 'date' is not YYYY-MM-DD: {st.date!r}") from None
    if not 0 <= st.polled_at_ms < 32503680000000:
        raise ValueError(f"bucket_stats: field 'polled_at_ms' out of range: {st.polled_at_ms}")


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
