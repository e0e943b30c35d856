"""One feed item, the same whether it comes from ClickHouse or from the live tail (pure).

The sink stores each item's JSON (``store.rows.item_json``) in ``drop_events.item``; the feed
and the SSE stream send those bytes as they are. :func:`item_from_row` renders rows stored
before that column existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import orjson

from api import cursor as C
from schemas import DropEvent
from store.rows import DROP_COLUMNS, ITEM_KEYS, dt_to_ms, item_dict

__all__ = ["ITEM_KEYS", "SELECT_COLUMNS", "canonical", "item_from_event", "item_from_row"]

SELECT_COLUMNS = ", ".join(c for c in DROP_COLUMNS if c not in ("extra", "item"))


def item_from_event(ev: DropEvent, partition: int, offset: int) -> dict[str, Any]:
    return item_dict(ev, partition, offset)


def item_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    d = dict(row)
    opened = d.pop("opened_at")
    d["opened_at_ms"] = dt_to_ms(opened) if isinstance(opened, datetime) else int(opened)
    for column, key in (("closed_at", "closed_at_ms"), ("opened_after", "opened_after_ms")):
        value = d.pop(column, None)
        d[key] = value if value is None or not isinstance(value, datetime) else dt_to_ms(value)
    if isinstance(d.get("date"), date):
        d["date"] = d["date"].isoformat()
    d["seating_types"] = list(d.get("seating_types") or [])
    d.pop("extra", None)
    return {k: d[k] for k in ITEM_KEYS if k in d}


def canonical(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: item.get(k) for k in ITEM_KEYS}


def item_bytes(item: Mapping[str, Any]) -> bytes:
    return orjson.dumps(canonical(item))


def sse_raw(data: bytes, cursor: Mapping[int, int]) -> bytes:
    """One SSE ``drop`` event from the item's JSON bytes; its id is the cursor just after it."""
    return b"id: " + C.encode(cursor).encode() + b"\nevent: drop\ndata: " + data + b"\n\n"


def sse_bytes(item: Mapping[str, Any], cursor: Mapping[int, int]) -> bytes:
    """One SSE ``drop`` event whose id is the cursor just after it."""
    return sse_raw(item_bytes(item), cursor)
