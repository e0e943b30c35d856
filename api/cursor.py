"""The feed cursor: a position in the drops log (pure).

A cursor maps each partition of the drops topic to the last offset *considered* in it
(``-1`` = nothing yet): every record at or below that offset has been delivered or skipped by
the filters. It is not a time, so a record that reaches ClickHouse late (its partition lagged)
is still after the cursor and is never skipped; a record is never delivered twice because
offsets are unique per partition.

Wire form: ``base64url(version byte 1, varint n, n x (varint partition, varint offset + 1))``
with partitions ascending and no padding. It is opaque to clients.

The feed reads rows in the order ``(kafka_offset, kafka_partition)``, bounded by the *head*
(per partition, the position the sink has fully stored). :func:`after` gives the cursor just
after one row of such a read; :func:`next_cursor` the cursor after a page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence

from drops.errors import DropsError

Cursor = dict[int, int]

VERSION = 1
MAX_PARTITIONS = 4096
MAX_OFFSET = (1 << 63) - 1


class CursorError(DropsError, ValueError):
    """A cursor that cannot be decoded."""


def _varint(value: int, out: bytearray) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise CursorError("truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and shift:
                raise CursorError("non-canonical number")
            return value, pos
        shift += 7
        if shift > 63:
            raise CursorError("number too large")


def encode(cursor: Mapping[int, int]) -> str:
    out = bytearray([VERSION])
    items = sorted((p, o) for p, o in cursor.items() if o >= 0)
    _varint(len(items), out)
    for p, o in items:
        if not 0 <= p < MAX_PARTITIONS or o > MAX_OFFSET:
            raise ValueError(f"cursor position out of range: {p}:{o}")
        _varint(p, out)
        _varint(o + 1, out)
    return base64.urlsafe_b64encode(bytes(out)).rstrip(b"=").decode()


def decode(text: str) -> Cursor:
    """Strict inverse of :func:`encode` (raises :class:`CursorError`)."""
    if not text or len(text) > 20_000:
        raise CursorError("empty or too long")
    if text.strip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"):
        raise CursorError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise CursorError("not base64url") from None
    if not data or data[0] != VERSION:
        raise CursorError("unknown cursor version")
    n, pos = _read_varint(data, 1)
    if n > MAX_PARTITIONS:
        raise CursorError("too many partitions")
    cursor: Cursor = {}
    last = -1
    for _ in range(n):
        p, pos = _read_varint(data, pos)
        o, pos = _read_varint(data, pos)
        if p <= last or p >= MAX_PARTITIONS:
            raise CursorError("partitions out of order")
        if o == 0 or o - 1 > MAX_OFFSET:
            raise CursorError("offset out of range")
        cursor[p] = o - 1
        last = p
    if pos != len(data):
        raise CursorError("trailing bytes")
    if encode(cursor) != text:
        raise CursorError("non-canonical cursor")
    return cursor


def merge(a: Mapping[int, int], b: Mapping[int, int]) -> Cursor:
    """The later of two positions, partition by partition."""
    out = dict(a)
    for p, o in b.items():
        if o > out.get(p, -1):
            out[p] = o
    return out


def covers(a: Mapping[int, int], b: Mapping[int, int]) -> bool:
    """``a`` is at or past ``b`` in every partition of ``b``."""
    return all(a.get(p, -1) >= o for p, o in b.items())


def after(start: Mapping[int, int], head: Mapping[int, int], offset: int, partition: int) -> Cursor:
    """The cursor just after row ``(offset, partition)`` of a read ordered by
    ``(kafka_offset, kafka_partition)`` over ``start < offset <= head``: every row of partition
    ``q`` sorting at or before it was part of the read."""
    out = dict(start)
    for q, h in head.items():
        bound = offset if q <= partition else offset - 1
        pos = min(h, bound)
        if pos > out.get(q, -1):
            out[q] = pos
    if offset > out.get(partition, -1):
        out[partition] = offset
    return out


def next_cursor(
    start: Mapping[int, int],
    head: Mapping[int, int],
    page: Sequence[tuple[int, int]],
    limit: int,
) -> Cursor:
    """The cursor after a page of ``(offset, partition)`` rows read with ``LIMIT limit``.

    A short page means the read reached the head: the next read starts there.
    """
    if len(page) < limit:
        return merge(start, head)
    offset, partition = page[-1]
    return after(start, head, offset, partition)


def range_sql(start: Mapping[int, int], head: Mapping[int, int]) -> str:
    """``WHERE`` text selecting rows after ``start`` and at or below ``head`` (ints only)."""
    terms = []
    for p, h in sorted(head.items()):
        lo = start.get(p, -1)
        if h > lo:
            terms.append(
                f"(kafka_partition = {int(p)} AND kafka_offset > {int(lo)} "
                f"AND kafka_offset <= {int(h)})"
                if lo >= 0
                else f"(kafka_partition = {int(p)} AND kafka_offset <= {int(h)})"
            )
    return "(" + " OR ".join(terms) + ")" if terms else "0"


def windows(
    start: Mapping[int, int],
    head: Mapping[int, int],
    limit: int,
    first: int = 0,
    span: int | None = None,
) -> list[Cursor]:
    """Growing upper bounds for a page read, the last one being ``head`` (or, with ``span``,
    ``head`` capped at ``lo + span``: one request reads at most ``span`` offsets a partition).

    Each bound caps every partition at ``lo + width`` (``lo`` = the lowest start) and never
    passes the head; widths grow eightfold from ``max(4 * limit, 1000)``. Reading window after
    window, with the cursor advanced by :func:`next_cursor` against each bound, gives the same
    rows as one read bounded by the last bound.
    """
    live = {p: h for p, h in head.items() if h > start.get(p, -1)}
    if not live:
        return [dict(head)]
    lo = min(start.get(p, -1) for p in live)
    if span is not None:
        head = {p: min(h, lo + max(span, 1)) for p, h in head.items()}
    top = max(live.values()) if span is None else max(head.values())
    width = first or max(4 * limit, 1000)
    out: list[Cursor] = []
    while lo + width < top:
        out.append({p: min(h, lo + width) for p, h in head.items()})
        width *= 8
    out.append(dict(head))
    return out
