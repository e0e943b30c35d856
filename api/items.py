"""One feed item, the same whether it comes from ClickHouse or from the live tail (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import orjson

from api import cursor as C
from schemas import DropEvent
from sinks.rows import DROP_COLUMNS, dt_to_ms

SELECT_COLUMNS = ", ".join(c for c in DROP_COLUMNS if c != "extra")


def item_from_event(ev: DropEvent, partition: int, offset: int) -> dict[str, Any]:
    d = ev.to_dict()
    d["kafka_partition"] = partition
    d["kafka_offset"] = offset
    return d


def item_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    d = dict(row)
    opened = d.pop("opened_at")
    closed = d.pop("closed_at")
    d["opened_at_ms"] = dt_to_ms(opened) if isinstance(opened, datetime) else int(opened)
    d["closed_at_ms"] = (
        None if closed is None else dt_to_ms(closed) if isinstance(closed, datetime) else closed
    )
    if isinstance(d.get("date"), date):
        d["date"] = d["date"].isoformat()
    d["seating_types"] = list(d.get("seating_types") or [])
    d.pop("extra", None)
    return {k: d[k] for k in ITEM_KEYS if k in d}


ITEM_KEYS = (
    "event",
    "dedupe_key",
    "bucket_id",
    "market",
    "provider",
    "date",
    "time_slot",
    "slot_id",
    "venue_id",
    "venue_name",
    "neighborhood",
    "actual_time",
    "time_zone",
    "seating_types",
    "party_min",
    "party_max",
    "booking",
    "opened_at_ms",
    "snapshot_id",
    "closed_at_ms",
    "open_seconds",
    "v",
    "kafka_partition",
    "kafka_offset",
)


def canonical(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: item.get(k) for k in ITEM_KEYS}


def sse_bytes(item: Mapping[str, Any], cursor: Mapping[int, int]) -> bytes:
    """One SSE ``drop`` event whose id is the cursor just after it."""
    return (
        b"id: "
        + C.encode(cursor).encode()
        + b"\nevent: drop\ndata: "
        + orjson.dumps(canonical(item))
        + b"\n\n"
    )
