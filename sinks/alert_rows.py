"""Rows of the ClickHouse copies of the watches topic and the delivery log (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.watches import decode_delivery, decode_watch

WATCH_COLUMNS = (
    "watch_id",
    "owner",
    "name",
    "deleted",
    "closes",
    "criteria",
    "channel_types",
    "created_at",
    "updated_at",
    "kafka_offset",
)
DELIVERY_COLUMNS = (
    "alert_id",
    "channel",
    "watch_id",
    "channel_type",
    "target",
    "status",
    "attempts",
    "latency_ms",
    "error",
    "at",
)
EPOCH = datetime.fromtimestamp(0, UTC)


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def watch_row(key: bytes | None, value: bytes | None, offset: int) -> list[Any]:
    """A watch record, or its tombstone (``value`` empty), as a row (SchemaError if bad)."""
    wid = (key or b"").decode()
    if not wid:
        raise ValueError("watch record without a key")
    if not value:
        return [wid, "", "", 1, 0, "{}", [], EPOCH, EPOCH, offset]
    w = decode_watch(value)
    if w.watch_id != wid:
        raise ValueError(f"watch record key {wid!r} is not its watch_id {w.watch_id!r}")
    return [
        w.watch_id,
        w.owner,
        w.name,
        0,
        int(w.closes),
        orjson.dumps(w.criteria.model_dump(mode="json")).decode(),
        [c.type for c in w.channels],
        _ts(w.created_at_ms),
        _ts(w.updated_at_ms),
        offset,
    ]


def delivery_row(value: bytes | None) -> list[Any]:
    d = decode_delivery(value or b"")
    return [
        d.alert_id,
        d.channel,
        d.watch_id,
        d.channel_type,
        d.target,
        d.status,
        d.attempts,
        d.latency_ms,
        d.error,
        _ts(d.at_ms),
    ]
