"""The API's reads from ClickHouse (thin; the SQL text is built from pure parts).

Blocking calls: the app runs them in worker threads (each thread has its own client).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from api import cursor as C
from api.items import SELECT_COLUMNS, item_bytes, item_from_row
from api.params import Filters
from drops.clock import Clock
from store.clickhouse import ClickHouse
from store.tables import sql_zone

FeedRow = tuple[int, int, bytes]
"""One feed row: ``(kafka_offset, kafka_partition, item JSON bytes)``."""


class Data:
    """``live_head``: the in-process sink's stored positions (exact, no query); else the head
    is read from ``sink_progress`` and reused for ``head_ttl`` seconds."""

    def __init__(
        self,
        ch: ClickHouse,
        drops_topic: str,
        *,
        live_head: Callable[[], Mapping[int, int]] | None = None,
        head_ttl: float = 0.0,
        clock: Clock | None = None,
        scan_max: int | None = None,
    ) -> None:
        self.ch = ch
        self.clock = clock or Clock()
        self.scan_max = scan_max
        self.topic = drops_topic
        self.live_head = live_head
        self.head_ttl = head_ttl
        self._base: C.Cursor | None = None
        self._head: tuple[float, C.Cursor] | None = None

    def head(self) -> C.Cursor:
        """Per partition, the log position stored in full by the sink (the feed's upper bound).

        Any position at or below the true head is correct (a page just ends earlier), so a
        slightly stale head never skips a row."""
        if self.live_head is not None:
            if self._base is None:
                self._base = self.ch.progress(self.topic)
            return C.merge(self._base, self.live_head())
        if self.head_ttl > 0:
            now = time.monotonic()
            cached = self._head
            if cached is not None and now - cached[0] < self.head_ttl:
                return dict(cached[1])
            head = self.ch.progress(self.topic)
            self._head = (now, head)
            return dict(head)
        return self.ch.progress(self.topic)

    def feed_page(
        self, start: Mapping[int, int], head: Mapping[int, int], filters: Filters, limit: int
    ) -> list[FeedRow]:
        where, params = filters.sql()
        sql = (
            "SELECT kafka_offset, kafka_partition, item FROM drop_events "
            f"WHERE {C.range_sql(start, head)} AND {where} "
            f"ORDER BY kafka_offset, kafka_partition LIMIT {int(limit)} "
            # a primary-key range read: projections and (unless a venue is asked for) the
            # skip indexes cannot help it, and weighing them costs planning time per part
            "SETTINGS optimize_use_projections = 0"
            + ("" if filters.venue else ", use_skip_indexes = 0")
        )
        rows = parse_rows(self.ch.raw(sql, params, "TabSeparatedRaw"))
        if any(not item for _, _, item in rows):
            rows = self._render_legacy(rows)
        return rows

    def _render_legacy(self, rows: list[FeedRow]) -> list[FeedRow]:
        """Rows stored before ``item`` existed: rendered from their columns."""
        keys = [(p, o) for o, p, item in rows if not item]
        found = self.ch.query_dicts(
            f"SELECT {SELECT_COLUMNS} FROM drop_events "
            "WHERE (kafka_partition, kafka_offset) IN %(keys)s",
            {"keys": keys},
        )
        by_pos = {(r["kafka_partition"], r["kafka_offset"]): r for r in found}
        return [(o, p, item or item_bytes(item_from_row(by_pos[(p, o)]))) for o, p, item in rows]

    def feed(
        self, start: Mapping[int, int] | None, filters: Filters, limit: int
    ) -> tuple[list[FeedRow], C.Cursor]:
        begin = dict(start or {})
        return self.feed_window(begin, self.head(), filters, limit)

    def feed_window(
        self, start: Mapping[int, int], head: Mapping[int, int], filters: Filters, limit: int
    ) -> tuple[list[FeedRow], C.Cursor]:
        """A page read through growing offset windows (see :func:`api.cursor.windows`), of at
        most ``scan_max`` offsets a partition: a filter that matches little cannot make one
        request read the whole table; the page then ends early, and its cursor (short of the
        head) is where the next request goes on.

        A read ordered by the primary key but open to the head merges every part after the
        cursor (one or more per partition of the table); a window of offsets touches one or two.
        """
        items: list[FeedRow] = []
        pos = dict(start)
        for bound in C.windows(start, head, limit, span=self.scan_max):
            want = limit - len(items)
            got = self.feed_page(pos, bound, filters, want)
            items += got
            pos = C.next_cursor(pos, bound, [(o, p) for o, p, _ in got], want)
            if len(got) == want:
                break
        return items, pos

    def just_opened(
        self, minutes: int, filters: Filters, limit: int, now: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Open events of the last ``minutes`` whose slot has not closed since, newest first."""
        since = (now or self.clock.now()) - timedelta(minutes=minutes)
        where, params = filters.sql()
        params["since"] = since
        sql = (
            f"SELECT {SELECT_COLUMNS} FROM drop_events "
            "WHERE event = 'open' AND opened_at >= %(since)s "
            "AND (bucket_id, slot_id, opened_at) NOT IN ("
            "  SELECT bucket_id, slot_id, opened_at FROM drop_events "
            "  WHERE event = 'close' AND opened_at >= %(since)s) "
            f"AND {where} ORDER BY opened_at DESC, kafka_offset DESC LIMIT 1 BY dedupe_key "
            f"LIMIT {int(limit)}"
        )
        return [item_from_row(r) for r in self.ch.query_dicts(sql, params)]

    def buckets(self, market: str, today: str, poll_interval: float) -> list[dict[str, Any]]:
        """Each bucket of the window: baseline size, last poll, lag and status."""
        rows = self.ch.query_dicts(*buckets_query(market, today))
        now = self.clock.now()
        return [_bucket_status(r, now, poll_interval) for r in rows]

    def venue(self, venue_id: str, provider: str | None, history: int) -> dict[str, Any] | None:
        params: dict[str, Any] = {"v": venue_id}
        pf = ""
        if provider:
            pf = " AND provider = %(p)s"
            params["p"] = provider
        info = self.ch.query_dicts(
            "SELECT market, provider, venue_id, venue_name, neighborhood, time_zone, last_seen "
            f"FROM venues FINAL WHERE venue_id = %(v)s{pf} ORDER BY provider",
            params,
        )
        if not info:
            return None
        stats = self.ch.query_dicts(
            "SELECT countIf(event = 'open') AS drops, countIf(event = 'close') AS closes, "
            "uniqExactIf(date, event = 'open') AS days_with_drop, "
            "quantileExactIf(0.5)(open_seconds, event = 'close') AS median_open_seconds, "
            "minIf(opened_at, event = 'open') AS first_drop_at, "
            "maxIf(opened_at, event = 'open') AS last_drop_at "
            f"FROM drop_events WHERE venue_id = %(v)s{pf}",
            params,
        )[0]
        watched = self.ch.query(*watched_query(provider))[0][0]
        recent = self.ch.query(
            "SELECT kafka_offset, kafka_partition, item FROM drop_events "
            f"WHERE venue_id = %(v)s{pf} ORDER BY kafka_offset DESC LIMIT {int(history)}",
            params,
        )
        rows = [(int(o), int(p), str(i).encode()) for o, p, i in recent]
        if any(not i for _, _, i in rows):
            rows = self._render_legacy(rows)
        tz = sql_zone(str(info[0]["time_zone"]) or "UTC")  # the venue's own days
        by_day = self.ch.query(
            f"SELECT toDate(opened_at, '{tz}') AS day, count() FROM drop_events "
            f"WHERE venue_id = %(v)s{pf} AND event = 'open' GROUP BY day ORDER BY day DESC "
            "LIMIT 60",
            params,
        )
        drops = int(stats["drops"])
        return {
            "venue": {**info[0], "last_seen": _ms(_aware(info[0]["last_seen"]))},
            "providers": [i["provider"] for i in info],
            "stats": {
                "drops": drops,
                "closes": int(stats["closes"]),
                "days_with_drop": int(stats["days_with_drop"]),
                "days_watched": int(watched),
                "drop_day_ratio": (int(stats["days_with_drop"]) / watched) if watched else None,
                "median_open_seconds": _num(stats["median_open_seconds"])
                if stats["closes"]
                else None,
                "first_drop_at_ms": _ms(_aware(stats["first_drop_at"])) if drops else None,
                "last_drop_at_ms": _ms(_aware(stats["last_drop_at"])) if drops else None,
            },
            "drops_per_day": [{"day": d.isoformat(), "drops": int(n)} for d, n in by_day],
            "history": [orjson.loads(i) for _, _, i in rows],
        }

    def by_hour(self, hours: int, market: str, time_zone: str) -> list[dict[str, Any]]:
        """A market's open events per clock hour of its time zone (hours start on the zone's
        hour: India's half-hour offset included) over the last ``hours`` hours."""
        rows = self.ch.query(
            f"SELECT toUnixTimestamp(toStartOfHour(opened_at, '{sql_zone(time_zone)}')) AS h, "
            "count() FROM drop_events WHERE event = 'open' AND market = %(m)s "
            "AND opened_at >= %(since)s GROUP BY h ORDER BY h",
            {"m": market, "since": self.clock.now() - timedelta(hours=hours)},
        )
        return [{"hour_ms": int(h) * 1000, "drops": int(n)} for h, n in rows]


def watched_query(provider: str | None) -> tuple[str, dict[str, Any]]:
    """The days a provider (or any) was polled: from ``watched_days`` (a row per provider and
    day), not from every bucket fetch of ``discovery_buckets``."""
    if provider:
        return "SELECT uniqExact(date) FROM watched_days WHERE provider = %(p)s", {"p": provider}
    return "SELECT uniqExact(date) FROM watched_days", {}


WINDOW_POLL_DAYS = 15
"""A bucket of the window (today .. today+13) is first fetched when it enters it: its rows
were all polled within the last 15 days (a margin for the slide time and the zones)."""


def buckets_query(market: str, today: str) -> tuple[str, dict[str, Any]]:
    """``/buckets``: the window's buckets, reading only the day partitions (``polled_at``)
    that can hold them instead of every day of retention."""
    day = datetime.fromisoformat(today).date()
    since = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=WINDOW_POLL_DAYS)
    return (
        "SELECT bucket_id, provider, any(date) AS bdate, any(time_slot) AS bslot, "
        # the baseline: the last baseline build, else the stream's first fetch (the
        # processor takes a stream's first snapshot as its baseline when it has none)
        "if(countIf(kind = 'baseline') > 0, argMaxIf(slots, polled_at, kind = 'baseline'), "
        "argMin(slots, polled_at)) AS baseline_slots, "
        "if(countIf(kind = 'baseline') > 0, maxIf(polled_at, kind = 'baseline'), "
        "min(polled_at)) AS baseline_at, "
        "maxIf(polled_at, kind = 'poll') AS last_poll_at, "
        "argMaxIf(slots, polled_at, kind = 'poll') AS last_poll_slots, "
        "argMaxIf(complete, polled_at, kind = 'poll') AS last_poll_complete, "
        "argMaxIf(duration_ms, polled_at, kind = 'poll') AS last_poll_ms, "
        "countIf(kind = 'poll') AS polls "
        "FROM discovery_buckets WHERE market = %(m)s AND date >= %(today)s "
        "AND polled_at >= %(since)s "
        "GROUP BY bucket_id, provider ORDER BY bdate, bslot, provider",
        {"m": market, "today": day, "since": since},
    )


def _bucket_status(r: dict[str, Any], now: datetime, poll_interval: float) -> dict[str, Any]:
    last = _aware(r["last_poll_at"])
    base = _aware(r["baseline_at"])
    has_poll = r["polls"] > 0
    lag = (now - last).total_seconds() if has_poll else None
    if not has_poll:
        status = "baseline_only" if base.year > 1970 else "unknown"
    elif lag is not None and lag > 3 * poll_interval + 30:
        status = "stale"
    elif not r["last_poll_complete"]:
        status = "partial"
    else:
        status = "ok"
    return {
        "bucket_id": r["bucket_id"],
        "provider": r["provider"],
        "date": r["bdate"].isoformat(),
        "time_slot": r["bslot"],
        "baseline_slots": int(r["baseline_slots"]) if base.year > 1970 else None,
        "baseline_at_ms": _ms(base) if base.year > 1970 else None,
        "last_poll_at_ms": _ms(last) if has_poll else None,
        "last_poll_slots": int(r["last_poll_slots"]) if has_poll else None,
        "last_poll_ms": int(r["last_poll_ms"]) if has_poll else None,
        "lag_seconds": round(lag, 1) if lag is not None else None,
        "polls": int(r["polls"]),
        "status": status,
    }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _ms(value: datetime) -> int:
    return round(_aware(value).timestamp() * 1000)


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if f != f else f


def parse_rows(raw: bytes) -> list[FeedRow]:
    """``TabSeparatedRaw`` lines of ``kafka_offset, kafka_partition, item`` (the item JSON has
    no raw tab or newline: JSON escapes both inside strings)."""
    out: list[FeedRow] = []
    for line in raw.split(b"\n"):
        if line:
            o, p, item = line.split(b"\t", 2)
            out.append((int(o), int(p), item))
    return out


def feed_body(rows: list[FeedRow], cursor: str, more: bool = False) -> bytes:
    """The ``/feed`` response ``{"items": [...], "next": cursor, "more": bool}`` from stored
    item bytes; ``more``: the read stopped short of the head (ask again from ``next``)."""
    tail = b'","more":true}' if more else b'","more":false}'
    return b'{"items":[' + b",".join(r[2] for r in rows) + b'],"next":"' + cursor.encode() + tail
