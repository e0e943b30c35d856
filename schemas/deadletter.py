"""The dead-letter record (topic ``drops.deadletter``), bounded so that it can always be written.

A dead letter is the original record's bytes with headers naming the error and where the
record came from. Error texts quote the field that failed, and a hostile record's field can be
megabytes long: the error text is cut to :data:`ERROR_MAX` characters, and when the original
bytes and headers would not fit the topic's record limit the value is cut too (header
``value_truncated`` gives the original size; ``source_*`` locate the whole record).
"""

from __future__ import annotations

from collections.abc import Sequence

ERROR_MAX = 1000  # characters of an error text kept in logs and headers
OVERHEAD = 1024  # bytes of a record batch beyond key, value and headers (generous)

Headers = list[tuple[str, bytes]]


def error_text(error: str, limit: int = ERROR_MAX) -> str:
    """``error`` cut to at most ``limit`` characters (saying how long it was)."""
    if len(error) <= limit:
        return error
    tail = f"... ({len(error)} characters)"
    return error[: max(0, limit - len(tail))] + tail


def record(
    value: bytes | None,
    key: bytes | None,
    error: str,
    source: tuple[str, int, int],
    max_bytes: int,
    extra: Sequence[tuple[str, bytes]] = (),
) -> tuple[bytes, Headers]:
    """The dead letter's value and headers for a record of ``source`` (topic, partition,
    offset), together at most ``max_bytes`` with ``key``."""
    topic, partition, offset = source
    headers: Headers = [
        ("error", error_text(error).encode()),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
        *extra,
    ]
    raw = value or b""
    room = max_bytes - OVERHEAD - len(key or b"") - sum(len(k) + len(v) + 8 for k, v in headers)
    if len(raw) > room:
        headers.append(("value_truncated", str(len(raw)).encode()))
        raw = raw[: max(0, room - 40)]
    return raw, headers
