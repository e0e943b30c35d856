"""Thin ClickHouse adapter (clickhouse-connect), one code path for chDB and a server.

A :class:`ClickHouse` hands each thread its own client (chDB clients on one path share the
engine inside this process; HTTP clients must not run two queries at once on one session).
All clients are closed by :meth:`ClickHouse.close` (chDB can open another path only then).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from drops.log import get_log
from drops.markets import configured_markets
from drops.runtime import Backoff
from drops.stages import ClickHouseSettings
from store import tables as schema

log = get_log("clickhouse")

INSERT_SETTINGS: dict[str, Any] = {"async_insert": 0, "wait_for_async_insert": 1}


class ClickHouse:
    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Client] = []
        self._closed = False

    @property
    def is_chdb(self) -> bool:
        return self.url.startswith("chdb:")

    def client(self) -> Client:
        c: Client | None = getattr(self._local, "client", None)
        if c is None:
            if self._closed:
                raise RuntimeError("ClickHouse adapter is closed")
            if self.is_chdb:
                c = clickhouse_connect.get_client(dsn=self.url)
            else:
                c = clickhouse_connect.get_client(dsn=self.url, autogenerate_session_id=False)
            with self._lock:
                self._clients.append(c)
            self._local.client = c
        return c

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, []
        for c in clients:
            try:
                c.close()
            except Exception as exc:  # closing is best effort
                log.warning("clickhouse_close_failed", error=str(exc))

    # ----------------------------------------------------------------------------- basics

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.client().query(sql, parameters=params or {}).result_rows]

    def query_dicts(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        res = self.client().query(sql, parameters=params or {})
        names = res.column_names
        return [dict(zip(names, row, strict=True)) for row in res.result_rows]

    def raw(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "TSV") -> bytes:
        """The result in a ClickHouse output format, as bytes (no conversion in Python)."""
        return self.client().raw_query(sql, parameters=params or {}, fmt=fmt)

    def command(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        return self.client().command(sql, parameters=params or {})

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        token: str | None = None,
    ) -> None:
        if not rows:
            return
        settings = dict(INSERT_SETTINGS)
        if token:
            settings["insert_deduplication_token"] = token
        self.client().insert(table, rows, column_names=list(columns), settings=settings)

    def ping(self) -> bool:
        try:
            return bool(self.query("SELECT 1") == [(1,)])
        except Exception:
            return False

    # ----------------------------------------------------------------------------- schema

    def migrate(self, retention_days: int, zones: Mapping[str, str]) -> list[int]:
        """Apply missing numbered migrations, then TTLs and views (local days and hours in
        ``zones``: market name to time zone). Returns the versions applied."""
        self.command(schema.MIGRATIONS_TABLE)
        done = {int(r[0]) for r in self.query("SELECT version FROM schema_migrations")}
        applied: list[int] = []
        for m in schema.MIGRATIONS:
            if m.version in done:
                continue
            for stmt in m.statements:
                self.command(stmt)
            self.insert("schema_migrations", [[m.version, m.name]], ["version", "name"])
            applied.append(m.version)
            log.info("migration_applied", version=m.version, name=m.name)
        self._apply_ttls(retention_days)
        for stmt in schema.view_statements(zones):
            self.command(stmt)
        return applied

    def _apply_ttls(self, days: int) -> None:
        rows = self.query(
            "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()"
        )
        engines = {str(n): str(e) for n, e in rows}
        for table in schema.TTL_TABLES:
            current = re.search(r"toIntervalDay\((\d+)\)", engines.get(table, ""))
            if current and int(current.group(1)) == days:
                continue
            self.command(schema.ttl_statement(table, days))
            log.info("retention_set", table=table, days=days)

    # ----------------------------------------------------------------------------- sink side

    def progress(self, topic: str) -> dict[int, int]:
        """Per partition, the log position whose rows (and all before it) are stored."""
        rows = self.query(
            "SELECT kafka_partition, max(position) FROM sink_progress "
            "WHERE topic = %(t)s GROUP BY kafka_partition",
            {"t": topic},
        )
        return {int(p): int(o) for p, o in rows}

    def stored_upto(self, table: str, partition: int, floor: int) -> int:
        """Highest offset of ``partition`` stored in ``table`` (at least ``floor``)."""
        order_first = table == "drop_events"  # its primary key starts with kafka_offset
        where = "kafka_partition = %(p)s"
        if order_first and floor >= 0:
            where += " AND kafka_offset > %(f)s"
        rows = self.query(
            f"SELECT max(kafka_offset), count() FROM {table} WHERE {where}",
            {"p": partition, "f": floor},
        )
        top, n = rows[0]
        if not n:
            return floor
        return max(floor, int(top))

    def stored_offsets(
        self,
        table: str,
        partition: int,
        offsets: Sequence[int],
        window: tuple[str, datetime, datetime] | None = None,
    ) -> set[int]:
        """Which of ``offsets`` of ``partition`` are stored in ``table``. ``window``: a time
        column and the range its rows fall in (prunes the table's time partitions)."""
        if not offsets:
            return set()
        params: dict[str, Any] = {"p": partition, "lo": min(offsets), "hi": max(offsets)}
        where = "kafka_partition = %(p)s AND kafka_offset >= %(lo)s AND kafka_offset <= %(hi)s"
        if window is not None:
            column, params["tlo"], params["thi"] = window
            if column not in ("opened_at", "polled_at"):
                raise ValueError(f"not a time column: {column!r}")
            where += f" AND {column} >= %(tlo)s AND {column} <= %(thi)s"
        rows = self.query(f"SELECT DISTINCT kafka_offset FROM {table} WHERE {where}", params)
        wanted = set(offsets)
        return {int(r[0]) for r in rows} & wanted

    def existing_dedupe_keys(self, keys: Sequence[str], lo: datetime, hi: datetime) -> set[str]:
        if not keys:
            return set()
        rows = self.query(
            "SELECT DISTINCT dedupe_key FROM drop_events "
            "WHERE opened_at >= %(lo)s AND opened_at <= %(hi)s AND dedupe_key IN %(keys)s",
            {
                "lo": lo - timedelta(minutes=1),
                "hi": hi + timedelta(minutes=1),
                "keys": list(keys),
            },
        )
        return {str(r[0]) for r in rows}

    def topic_identity(self, topic: str) -> tuple[str, str] | None:
        """The ``(cluster_id, topic_id)`` the stored offsets of ``topic`` belong to."""
        rows = self.query(
            "SELECT cluster_id, topic_id FROM sink_topics FINAL WHERE topic = %(t)s", {"t": topic}
        )
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def save_topic_identity(self, topic: str, cluster_id: str, topic_id: str) -> None:
        self.insert(
            "sink_topics", [[topic, cluster_id, topic_id]], ["topic", "cluster_id", "topic_id"]
        )

    def save_progress(self, topic: str, positions: dict[int, int]) -> None:
        rows = [[topic, p, o] for p, o in positions.items()]
        self.insert("sink_progress", rows, ["topic", "kafka_partition", "position"])


def prepare(settings: ClickHouseSettings) -> ClickHouse:
    """Open ClickHouse and bring its schema up to date (idempotent)."""
    zones = {m.name: m.time_zone for m in configured_markets(settings)}
    ch = ClickHouse(settings.clickhouse_url)
    backoff = Backoff(0.5, settings.sink.backoff_max)
    while True:
        try:
            ch.migrate(settings.clickhouse.retention_days, zones)
            return ch
        except Exception as exc:
            if ch.is_chdb:
                ch.close()
                raise
            delay = backoff.next()
            log.warning("clickhouse_unavailable", error=str(exc)[:300], retry_in_s=delay)
            time.sleep(delay)
