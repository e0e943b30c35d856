"""``drops api``: serve the app with uvicorn until SIGTERM/SIGINT.

With the embedded chDB engine only one process may open the data folder, so the sink must
run inside this process (``drops api --with-sink``: the shell passes ``sink=SinkThread``); with
a ClickHouse server, the sink can run as its own process (``drops sink``) and any number of
API replicas.

Replicas with the embedded engine: each ``drops api --with-sink`` on one data folder claims
a replica slot of its own (:func:`embedded_replica`): slot 0 is the configured chDB folder
and sink group (one replica: as before), slot ``k`` the folder ``<folder>-k`` and the group
``<sink_group>-k``. Each loads the whole drops topic into its own ClickHouse, and the feed
cursor is a position in that topic, so a cursor or ``Last-Event-ID`` from one replica works
on any other.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.app import SinkFactory, create_app
from drops import slots
from drops.log import configure, get_log
from drops.runtime import tune_gc
from drops.stages import ApiSettings
from drops.topics import check_topics

log = get_log("api")


def run(settings: ApiSettings, sink: SinkFactory | None = None) -> None:
    configure(settings.log.level, settings.log.format)
    if settings.uses_chdb and sink is None:
        log.warning(
            "chdb_without_sink",
            hint="with chDB the sink cannot run in another process: use --with-sink",
        )
    if settings.uses_chdb and sink is not None:
        settings, slot = embedded_replica(settings)
        log.info("api_replica", slot=slot, clickhouse=settings.clickhouse_url,
                 sink_group=settings.sink.group)  # fmt: skip
    topics = [settings.topics.drops, settings.topics.watches]
    if sink is not None:  # the sink in this process reads and writes its own topics too
        topics += [settings.topics.stats, settings.topics.deliveries, settings.topics.deadletter]
    check_topics(settings, topics, "api")
    app = create_app(settings, sink=sink)
    server = uvicorn.Server(uvicorn_config(app, settings))
    tune_gc(*GC_THRESHOLD)
    app.state.drops.exiting = lambda: bool(server.should_exit)
    app.state.drops.metrics.counter(
        "drops_http_head_timeouts_total",
        lambda: HeadTimeout.timeouts,
        "Connections closed because the request head did not arrive in time",
    )
    logging.getLogger("uvicorn.error").addFilter(quiet_cut_clients)
    log.info("api_listening", url=f"http://{settings.api.host}:{settings.api.port}/")
    server.run()


def embedded_replica(settings: ApiSettings) -> tuple[ApiSettings, int]:
    """This replica's chDB folder and sink group: the first slot no live replica holds (the
    lock ``<folder>.lock`` is held until the process ends)."""
    base = Path(settings.clickhouse_url.removeprefix("chdb://"))

    def folder(k: int) -> Path:
        return base if k == 0 else base.with_name(f"{base.name}-{k}")

    k, _fd = slots.claim(lambda k: folder(k).with_name(folder(k).name + ".lock"))
    group = settings.sink.group if k == 0 else f"{settings.sink.group}-{k}"
    return settings.model_copy(
        update={"clickhouse_dsn": f"chdb://{folder(k)}", "sink_group": group}
    ), k


def uvicorn_config(app: ASGIApp, settings: ApiSettings, **overrides: Any) -> uvicorn.Config:
    """The server's configuration: connection cap (503 beyond ``api_max_connections``) and the
    request-head timeout (:class:`HeadTimeout`)."""
    HeadTimeout.head_timeout = settings.api.head_timeout
    values: dict[str, Any] = {
        "host": settings.api.host,
        "port": settings.api.port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 5,
        "backlog": 4096,
        "limit_concurrency": settings.api.max_connections,
        "http": HeadTimeout,
    }
    values.update(overrides)
    return uvicorn.Config(app, **values)


class HeadTimeout(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a deadline for each request's head (uvicorn has none: a
    client sending its headers a byte at a time, slowloris, would hold a connection for ever).

    The clock starts when the connection opens and again when a response completes; it stops
    when the head is complete. A connection past it is closed (``drops_http_head_timeouts``).
    """

    head_timeout = 10.0
    timeouts = 0  # connections closed for a slow head, in this process

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(
            self.head_timeout, self._head_timed_out
        )

    def _cancel_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            HeadTimeout.timeouts += 1
            log.info("http_head_timeout", client=str(self.client), seconds=self.head_timeout)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)


GC_THRESHOLD = (10_000, 10, 10)
"""Shorter and rarer full garbage collections while serving (``drops.runtime.tune_gc``).

A full collection walks every tracked object and holds the event loop meanwhile, so its
pause lands in the SSE delivery tail. Each idle sse-starlette client holds about 250
tracked objects (its task group: five tasks, their coroutines, cancel scopes, events), so
at 1,000 clients a full collection took 100-230 ms here (2 cores, other load). Freezing
what exists after start-up (about 100k objects of imported modules) takes them out of
every collection, and a larger young generation (10,000 instead of 700 allocations)
makes collections of all generations rarer: measured over a 20 s bench run at 1,000
clients x 200 drops/s, 7 -> 2 full collections, 1.3 s -> 0.3 s in the collector.
"""


def quiet_cut_clients(record: logging.LogRecord) -> bool:
    """A stalled SSE client is cut by ending its response unfinished (sse-starlette's send
    timeout, logged by ``api.app.LiveStream`` as ``sse_client_cut``); uvicorn's error line for
    it is noise."""
    return "returned without completing response" not in record.getMessage()
