"""The Starlette app: the cursor feed, the SSE stream, the small endpoints and the live page.

``create_app(settings, ...)`` builds it; the lifespan opens ClickHouse (running the schema
migrations), optionally runs the sink in a thread of this process (required with chDB, where
one process owns the data folder), and starts the live tail (one Kafka consumer).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import anyio
import orjson
from anyio import to_thread
from prometheus_client.core import Metric
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import cursor as C
from api.data import Data, feed_body
from api.hub import CHUNK_BYTES, PLAIN, Client, Hub, chunked, render_parts
from api.items import sse_raw
from api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from api.metrics import Metrics
from api.openapi import openapi
from api.params import (
    KNOWN_PROVIDERS,
    Allowed,
    Filters,
    check_known,
    int_param,
    one_param,
    parse_feed,
    parse_just_opened,
    parse_stream,
)
from api.watches import ROUTES as WATCH_ROUTES
from api.watches import WatchStore
from drops.errors import BadRequest
from drops.log import get_log
from drops.markets import Market, configured_markets
from drops.stages import ApiSettings, SinkSettings
from store.clickhouse import ClickHouse, prepare

log = get_log("api")
STATIC = Path(__file__).resolve().parent / "static"
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/openapi.json"})  # and /static/...


class SinkView(Protocol):
    """What the API reads of a sink running in this process."""

    head: dict[int, int]
    paused: bool
    blocked: str  # why the sink will not store (a recreated topic), or ""

    @property
    def totals(self) -> Any: ...


class RetentionGaps(Protocol):
    """What the sink counts of records deleted by retention before it read them."""

    gaps: int
    offsets: int


class InProcessSink(Protocol):
    """A sink run by a thread of this process (``drops api --with-sink``; required with chDB,
    where one process owns the data folder). The shell builds it (``sinks.service.SinkThread``):
    the API starts it, reads it, serves its metrics (``collect``) and stops it, and never
    imports the sink stage."""

    restarts: int

    @property
    def gaps(self) -> RetentionGaps: ...

    def collect(self) -> Iterable[Metric]: ...

    @property
    def sink(self) -> SinkView: ...

    @property
    def alive(self) -> bool: ...

    def start(self) -> InProcessSink: ...

    def close(self, timeout: float = 30.0) -> None: ...


SinkFactory = Callable[[SinkSettings, ClickHouse], InProcessSink]


class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class State:
    def __init__(self, settings: ApiSettings) -> None:
        self.s = settings
        self.clock = settings.clock()
        self.metrics = Metrics()
        self.markets = {m.name: m for m in configured_markets(settings)}
        self.allowed = Allowed(
            markets=frozenset(self.markets),
            providers=KNOWN_PROVIDERS | frozenset(settings.market.providers),
            time_slots=frozenset(settings.producer.time_slots),
            max_limit=settings.api.feed_max_limit,
            partitions=settings.topics.drops_partitions,
        )
        self.keys = frozenset(k for k in settings.api.keys)
        self.ch: ClickHouse | None = None
        self.data: Data | None = None
        self.hub: Hub | None = None
        self.sink: InProcessSink | None = None
        self.watches: WatchStore | None = None
        self.closing = False
        self.exiting: Callable[[], bool] | None = None  # set by the server: shutdown begun
        # set by sse-starlette when it sees the server shut down (shared by every stream)
        self.sse_shutdown: anyio.Event | None = None

    def allowed_now(self) -> Allowed:
        """The accepted values, with the drops topic's partitions as the live tail found them
        (an operator may have raised them above ``drops_partitions``)."""
        n = self.hub.partitions if self.hub is not None else 0
        if n > self.allowed.partitions:
            self.allowed = dataclasses.replace(self.allowed, partitions=n)
        return self.allowed

    def market(self, q: dict[str, list[str]]) -> Market:
        """The market a single-market answer is for: ``?market=``, else the first one."""
        name = one_param(q, "market")
        if name is None:
            return next(iter(self.markets.values()))
        m = self.markets.get(name)
        if m is None:
            raise BadRequest("market", f"unknown market {name[:40]!r}")
        return m

    def db(self) -> Data:
        if self.data is None:
            raise RuntimeError("ClickHouse is not open")
        return self.data


def _q(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        out.setdefault(k, []).append(v)
    return out


def _st(request: Request) -> State:
    st: State = request.app.state.drops
    return st


async def _db(fn: Callable[..., Any], *args: Any) -> Any:
    return await to_thread.run_sync(fn, *args)


# --------------------------------------------------------------------------------- endpoints


async def feed(request: Request) -> Response:
    st = _st(request)
    req = parse_feed(_q(request), st.allowed_now())
    data = st.db()
    head = await _db(data.head)
    rows, nxt = await _db(data.feed_window, dict(req.since or {}), head, req.filters, req.limit)
    more = not C.covers(nxt, head)
    return Response(feed_body(rows, C.encode(nxt), more), media_type="application/json")


async def just_opened(request: Request) -> Response:
    st = _st(request)
    limit, filters = parse_just_opened(_q(request), st.allowed)
    items = await _db(st.db().just_opened, st.s.api.just_opened_minutes, filters, limit)
    return JSON(
        {"items": items, "minutes": st.s.api.just_opened_minutes, "as_of_ms": st.clock.now_ms()}
    )


async def markets(request: Request) -> Response:
    st = _st(request)
    check_known(_q(request), ())
    now = st.clock.now()
    return JSON(
        {
            "markets": [
                {
                    "name": m.name,
                    "time_zone": m.time_zone,
                    "today": now.astimezone(m.zone).date().isoformat(),
                }
                for m in st.markets.values()
            ]
        }
    )


async def buckets(request: Request) -> Response:
    st = _st(request)
    q = _q(request)
    check_known(q, ("market",))
    m = st.market(q)
    today = st.clock.now().astimezone(m.zone).date().isoformat()
    rows = await _db(st.db().buckets, m.name, today, st.s.producer.poll_interval)
    return JSON({"buckets": rows, "market": m.name, "time_zone": m.time_zone, "today": today})


async def venue(request: Request) -> Response:
    st = _st(request)
    q = _q(request)
    check_known(q, ("provider", "history"))
    vid = request.path_params["venue_id"]
    if not 0 < len(vid) <= 64 or not all(c.isalnum() or c in "_.:-" for c in vid):
        raise BadRequest("venue_id", "not a venue id")
    provider = one_param(q, "provider")
    if provider is not None and provider not in st.allowed.providers:
        raise BadRequest("provider", f"unknown provider {provider[:40]!r}")
    history = int_param(q, "history", 0, 1000, 50)
    doc = await _db(st.db().venue, vid, provider, history)
    if doc is None:
        return JSON({"error": "not_found", "param": "venue_id", "message": "no such venue"}, 404)
    return JSON(doc)


async def by_hour(request: Request) -> Response:
    st = _st(request)
    q = _q(request)
    check_known(q, ("hours", "market"))
    hours = int_param(q, "hours", 1, 24 * 14, 24)
    m = st.market(q)
    rows = await _db(st.db().by_hour, hours, m.name, m.time_zone)
    return JSON(
        {
            "hours": rows,
            "market": m.name,
            "time_zone": m.time_zone,
            "as_of_ms": st.clock.now_ms(),
        }
    )


async def healthz(request: Request) -> Response:
    return JSON({"status": "ok"})


async def readyz(request: Request) -> Response:
    st = _st(request)
    ch_ok = st.ch is not None and bool(await _db(st.ch.ping))
    checks: dict[str, Any] = {"clickhouse": ch_ok}
    if st.hub is not None:
        checks["kafka"] = st.hub.ready.is_set() and st.hub.error is None
    else:
        checks["kafka"] = await _db(_kafka_ok, st.s)
    if st.sink is not None:
        checks["sink"] = st.sink.alive and not st.sink.sink.paused and not st.sink.sink.blocked
    ok = all(bool(v) for v in checks.values()) and not st.closing
    body: dict[str, Any] = {"ready": ok, "checks": checks}
    if st.sink is not None:
        # records deleted by retention before the sink read them: lost for the feed (not a
        # readiness failure: restarting brings nothing back; see docs/operations.md)
        body["retention_gaps"] = st.sink.gaps.gaps
    return JSON(body, 200 if ok else 503)


def _kafka_ok(settings: ApiSettings) -> bool:
    from drops import kafka

    try:
        kafka.admin(settings).list_topics(timeout=3)
        return True
    except Exception:
        return False


async def metrics(request: Request) -> Response:
    return Response(_st(request).metrics.render(), media_type=METRICS_CONTENT_TYPE)


async def openapi_json(request: Request) -> Response:
    return JSON(openapi(_st(request).s))


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


# --------------------------------------------------------------------------------- SSE


async def stream(request: Request) -> Response:
    st = _st(request)
    since, filters = parse_stream(
        _q(request), request.headers.get("last-event-id"), st.allowed_now()
    )
    hub = st.hub
    if hub is None or not hub.ready.is_set():
        return JSON(
            {"error": "unavailable", "param": "", "message": "live tail not ready, retry"},
            503,
            headers={"Retry-After": "2"},
        )
    if len(hub.clients) >= st.s.sse.max_clients:
        st.metrics.inc("drops_sse_refused_total", help_text="SSE clients refused: at the cap")
        return JSON(
            {"error": "unavailable", "param": "", "message": "too many live clients, retry"},
            503,
            headers={"Retry-After": "5"},
        )
    client = hub.subscribe(filters)
    start = dict(hub.position) if since is None else dict(since)
    st.metrics.inc("drops_sse_connections_total", help_text="SSE connections accepted")
    return LiveStream(st, hub, client, _events(st, hub, client, start, since is not None, filters))


_PING = ServerSentEvent(comment="ping", sep="\n")
SHUTDOWN_GRACE_S = 2.0  # below uvicorn's graceful shutdown timeout (5 s in api.server)


class LiveStream(EventSourceResponse):
    """sse-starlette's response for one client of the live tail.

    The generator yields the hub's pre-encoded bytes (one shared bytes object per batch for
    clients without filters; sse-starlette sends bytes as they are). sse-starlette does the
    rest: a ping comment every ``sse_ping`` seconds, ``send_timeout`` on every send (a client
    that stopped reading is cut; it resumes with Last-Event-ID), the disconnect listener, and
    shutdown. The one addition: its ``SendTimeoutError`` is caught here, counted and logged,
    so a cut client is an info line and a metric rather than an application error; the
    response is left incomplete, so the server closes the connection.
    """

    def __init__(self, st: State, hub: Hub, client: Client, body: AsyncIterator[bytes]) -> None:
        super().__init__(
            body,
            ping=st.s.sse.ping,
            send_timeout=st.s.sse.send_timeout,
            sep="\n",
            ping_message_factory=lambda: _PING,
            shutdown_event=st.sse_shutdown,
            # the hub's tick ends every stream within a second of shutdown: let the
            # generators return so each response completes, instead of being cancelled
            shutdown_grace_period=SHUTDOWN_GRACE_S,
            # a HEAD request never starts the generator: unsubscribe here too
            background=BackgroundTask(hub.unsubscribe, client),
        )
        self.hub = hub
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            self.hub.cut_clients += 1
            self.hub.unsubscribe(self.client)
            log.info("sse_client_cut", dropped=self.client.dropped)


async def _events(
    st: State, hub: Hub, client: Client, pos: C.Cursor, resume: bool, filters: Filters
) -> AsyncIterator[bytes]:
    try:
        yield (
            f"retry: {st.s.sse.retry_ms}\nid: {C.encode(pos)}\nevent: ready\n"
            f'data: {{"cursor":"{C.encode(pos)}"}}\n\n'
        ).encode()
        if resume:
            caught = pos
            async for chunk, at in _catch_up(st, hub, client, pos, filters):
                caught = at
                if chunk:
                    yield chunk
            pos = caught
        while not st.closing:
            if not client.busy():
                client.wake.clear()
                await client.wake.wait()
            if client.closing:
                return
            if client.resync:  # the live tail restarted: what it skipped comes from ClickHouse
                client.resync = False
                client.queue.clear()
                st.metrics.inc(
                    "drops_sse_resyncs_total", help_text="SSE catch-ups after a live-tail restart"
                )
                async for chunk, at in _catch_up(st, hub, client, pos, filters):
                    pos = at
                    if chunk:
                        yield chunk
                continue
            if client.dropped:  # counted by the hub (drops_sse_dropped_clients_total)
                yield b": too slow, reconnect with Last-Event-ID\n\n"
                return
            if client.queue:
                # the queue holds batches the client's group already selected: sent whole
                parts, pos, n = render_parts(client.drain(), pos, PLAIN)
                if client.group is not None:
                    # every batch published to the group since is rendered or matched none
                    pos = C.merge(pos, client.group.position)
                if n:
                    st.metrics.inc("drops_sse_events_sent_total", n, "SSE events sent")
                    first = True
                    for chunk in chunked(parts):
                        if not first:
                            await anyio.sleep(0)  # a long backlog does not hold the loop
                        first = False
                        yield chunk
    finally:
        hub.unsubscribe(client)


async def _catch_up(
    st: State, hub: Hub, client: Client, pos: C.Cursor, filters: Filters
) -> AsyncIterator[tuple[bytes, C.Cursor]]:
    """From ClickHouse until the ring covers ``pos``, then from the ring (no gap, no repeat).

    What it yields is cut into chunks of at most ``CHUNK_BYTES``, with a yield to the event
    loop after each, and the ring is replayed from a snapshot in slices: one client's
    backlog never holds the loop for more than a chunk's work."""
    data = st.db()
    page = min(500, st.s.api.feed_max_limit)
    waited = 0.0
    while not st.closing and not client.closing:
        head = await _db(data.head)
        while True:
            begin = pos
            rows, nxt = await _db(data.feed_window, pos, head, filters, page)
            chunks: list[bytes] = []
            size = 0
            for offset, partition, item in rows:
                pos = C.after(pos, head, offset, partition)
                chunks.append(sse_raw(item, pos))
                size += len(chunks[-1])
                if size >= CHUNK_BYTES:
                    yield b"".join(chunks), pos
                    await anyio.sleep(0)
                    chunks, size = [], 0
            pos = C.merge(nxt, begin)
            if chunks:
                yield b"".join(chunks), pos
            if C.covers(pos, head):  # a short page may end before the head (scan bound)
                break
        if client.dropped:  # the queue overflowed while catching up: the ring has those events
            client.dropped = False
            client.queue.clear()
        if C.covers(pos, hub.base):
            # no await between this check and the ring snapshot: the ring cannot move. What
            # the live tail publishes after the snapshot is in the client's queue
            snapshot = list(hub.ring_after(pos))
            chunks = []
            size = 0
            for i, ev in enumerate(snapshot):
                new = C.merge(pos, ev.after)
                if filters.matches(ev.item):
                    chunks.append(ev.data if new == ev.after else sse_raw(ev.json, new))
                    size += len(chunks[-1])
                pos = new
                if size >= CHUNK_BYTES or (i & 2047) == 2047:
                    if chunks:
                        yield b"".join(chunks), pos
                        chunks, size = [], 0
                    await anyio.sleep(0)
            yield b"".join(chunks), pos
            return
        # ClickHouse is behind the ring: wait for the sink
        await anyio.sleep(0.1)
        waited += 0.1
        if waited > 60:
            log.warning("sse_catch_up_waiting", position=pos, ring_base=hub.base)
            waited = 0.0


# --------------------------------------------------------------------------------- plumbing


class Guard:
    """API keys, metrics, and JSON errors (400 names the parameter; never a bare 500)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        st: State = scope["app"].state.drops
        path: str = scope["path"]
        route = _route(path)
        started = time.perf_counter()
        status = {"code": 500, "sent": False}

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
                st.metrics.observe(route, message["status"], time.perf_counter() - started)
                message = {**message, "headers": [*message.get("headers", []), *SECURITY]}
            await send(message)

        # every method on every path but the open ones (CORS preflights never reach here:
        # the CORS middleware, outside this one, answers them)
        if st.keys and not _open(path):
            request = Request(scope)
            # the header first; ?api_key= because EventSource (the page) cannot send headers
            key = request.headers.get("x-api-key") or request.query_params.get("api_key")
            if not _key_ok(key, st.keys):
                await JSON(
                    {"error": "unauthorized", "param": "api_key", "message": "API key required"},
                    401,
                )(scope, receive, _send)
                return
        try:
            await self.app(scope, receive, _send)
        except BadRequest as exc:
            if not status["sent"]:
                await JSON(exc.body(), 400)(scope, receive, _send)
        except Exception:
            log.exception("request_failed", path=path)
            if not status["sent"]:
                await JSON({"error": "internal", "param": "", "message": "internal error"}, 500)(
                    scope, receive, _send
                )


async def _http_error(request: Request, exc: Exception) -> Response:
    code = getattr(exc, "status_code", 404)
    name = "not_found" if code == 404 else "method_not_allowed"
    return JSON({"error": name, "param": "", "message": str(getattr(exc, "detail", name))}, code)


def _open(path: str) -> bool:
    """Paths served without a key: exactly these, and files under ``/static/``."""
    return path in OPEN_PATHS or (path.startswith("/static/") and ".." not in path)


def _key_ok(key: str | None, keys: frozenset[str]) -> bool:
    """Whether ``key`` is one of ``keys``, compared in constant time (each key is compared,
    whatever matched)."""
    given = (key or "").encode()
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(given, k.encode())
    return ok and bool(key)


SECURITY: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
]
"""Headers on every answer: no MIME sniffing, no framing (clickjacking), no referrer (the
page's URL may carry ``?api_key=``), and a content policy that allows only the page's own
files."""


def _route(path: str) -> str:
    if path.startswith("/venues/"):
        return "/venues/{id}"
    if path.startswith("/static/"):
        return "/static"
    if path.startswith("/watches/"):
        return "/watches/{id}"
    return path if path in _ROUTES else "other"


_ROUTES = {
    "/",
    "/feed",
    "/feed/stream",
    "/just-opened",
    "/markets",
    "/buckets",
    "/stats/by-hour",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/watches",
}


def create_app(
    settings: ApiSettings,
    *,
    ch: ClickHouse | None = None,
    sink: SinkFactory | None = None,
    live: bool = True,
    watches: bool = True,
) -> Starlette:
    """The API. ``ch``: an open ClickHouse (else opened and migrated here, closed at the end);
    ``sink``: builds the sink run in this process; ``live``: run the Kafka live tail for SSE;
    ``watches``: serve ``/watches`` (read from and written to the watches topic)."""
    st = State(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = ch is None
        st.ch = ch if ch is not None else await to_thread.run_sync(prepare, settings)
        if sink is not None:
            st.sink = sink(settings, st.ch).start()
        thread = st.sink  # its sink is replaced if it fails: always read it through the thread
        st.data = Data(
            st.ch,
            settings.topics.drops,
            live_head=(lambda: thread.sink.head) if thread is not None else None,
            head_ttl=settings.api.head_cache_ms / 1000,
            clock=st.clock,
            scan_max=settings.api.feed_scan_max,
        )
        if live:
            st.hub = Hub(settings)
            st.sse_shutdown = shutdown = anyio.Event()
            st.hub.exiting = lambda: shutdown.is_set() or (st.exiting is not None and st.exiting())
            st.hub.start(asyncio.get_running_loop())
        if watches:
            st.watches = WatchStore(settings).start()
        _gauges(st)
        log.info("api_started", with_sink=sink is not None, live=live, chdb=st.ch.is_chdb)
        try:
            yield
        finally:
            st.closing = True
            if st.hub is not None:
                st.hub.close_clients()
                await to_thread.run_sync(st.hub.stop)
            if st.watches is not None:
                await to_thread.run_sync(st.watches.stop)
            if st.sink is not None:
                await to_thread.run_sync(st.sink.close)
            if owned and st.ch is not None:
                st.ch.close()
            log.info("api_stopped")

    origins = [o for o in settings.api.cors_origins]
    middleware = [Middleware(Guard)]
    if origins:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET"],
                allow_headers=["X-API-Key", "Last-Event-ID"],
            ),
        )
    app = Starlette(
        exception_handlers={404: _http_error, 405: _http_error},
        routes=[
            Route("/", index),
            Route("/feed", feed),
            Route("/feed/stream", stream),
            Route("/just-opened", just_opened),
            Route("/markets", markets),
            Route("/buckets", buckets),
            Route("/venues/{venue_id:str}", venue),
            Route("/stats/by-hour", by_hour),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/openapi.json", openapi_json),
            *WATCH_ROUTES,
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.drops = st
    return app


def _gauges(st: State) -> None:
    m = st.metrics
    if st.hub is not None:
        hub = st.hub
        m.gauge("drops_sse_clients", lambda: len(hub.clients), "Connected SSE clients")
        m.counter("drops_live_events_total", lambda: hub.events_in, "Events read by the live tail")
        m.gauge("drops_sse_ring_events", lambda: len(hub.ring), "Events in the reconnect ring")
        m.gauge(
            "drops_sse_filter_groups",
            lambda: len(hub.groups),
            "Distinct normalized filters of connected SSE clients",
        )
        m.counter(
            "drops_sse_filter_matches_total",
            lambda: hub.matched,
            "Live events matched against a filter (once per event per filter group)",
        )
        m.counter(
            "drops_sse_dropped_clients_total", lambda: hub.dropped_clients, "Slow clients dropped"
        )
        m.counter(
            "drops_sse_cut_clients_total",
            lambda: hub.cut_clients,
            "Clients disconnected because a send stalled",
        )
    if st.sink is not None:
        m.register(st.sink)  # the sink's own metrics (sinks.service.sink_readings)


Handler = Callable[[Request], Awaitable[Response]]
