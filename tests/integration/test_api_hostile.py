"""Hostile requests against the real API (broker and chDB)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import pytest
import uvicorn

from api import cursor as C
from drops.settings import Settings
from tests.integration.test_api_feed import Server

pytestmark = pytest.mark.kafka


def test_an_oversized_cursor_is_refused(kafka_settings: Settings) -> None:
    """A 4,096-partition cursor against a one-partition topic: 400 on /feed and on the stream
    (before: 200, and each event for such a stream copied the 4,096-entry cursor)."""
    huge = C.encode(dict.fromkeys(range(4096), 0))  # 16,000 characters
    with Server(kafka_settings, with_sink=True) as srv:
        feed = httpx.get(srv.url + "/feed", params={"since": huge}, timeout=10)
        assert feed.status_code == 400 and feed.json()["param"] == "since"
        stream = httpx.get(srv.url + "/feed/stream", headers={"Last-Event-ID": huge}, timeout=10)
        assert stream.status_code == 400 and stream.json()["param"] == "Last-Event-ID"
        ok = httpx.get(srv.url + "/feed", params={"since": C.encode({0: 3})}, timeout=10)
        assert ok.status_code == 200


class Served(Server):
    """The test server with the product's uvicorn configuration (api.server)."""

    def __init__(self, settings: Settings, **kw: Any) -> None:
        super().__init__(settings, **kw)
        from api.server import uvicorn_config

        self.server = uvicorn.Server(
            uvicorn_config(self.app, self.settings, host="127.0.0.1", timeout_graceful_shutdown=2)
        )
        server = self.server
        self.app.state.drops.exiting = lambda: bool(server.should_exit)
        self.thread = threading.Thread(target=self.server.run, daemon=True)


def test_sse_clients_beyond_the_cap_get_503_with_retry_after(kafka_settings: Settings) -> None:
    s = kafka_settings.model_copy(update={"sse_max_clients": 2})
    with Served(s) as srv, httpx.Client(timeout=10) as http:
        streams = [http.stream("GET", srv.url + "/feed/stream") for _ in range(2)]
        opened = [cm.__enter__() for cm in streams]
        assert all(r.status_code == 200 for r in opened)
        refused = http.get(srv.url + "/feed/stream")
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) > 0
        assert refused.json()["error"] == "unavailable"
        assert http.get(srv.url + "/healthz").status_code == 200  # the rest still answers
        streams[0].__exit__(None, None, None)
        deadline = time.monotonic() + 10
        while True:
            with http.stream("GET", srv.url + "/feed/stream") as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "a freed place was not given again"
            time.sleep(0.1)
        streams[1].__exit__(None, None, None)


def test_a_request_head_sent_slowly_is_cut_at_the_head_timeout(kafka_settings: Settings) -> None:
    """Slowloris: a head sent a byte every 0.2 s; with a 1 s head timeout the server closes
    the connection (before: no read timeout, the connection stayed open for as long as the
    client kept trickling)."""
    s = kafka_settings.model_copy(update={"api_head_timeout": 1.0})
    with Served(s, live=False) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        started = time.monotonic()
        closed_after = None
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
                if time.monotonic() - started > 6:
                    break
        except OSError:
            closed_after = time.monotonic() - started
        if closed_after is None:
            sock.settimeout(1)
            try:
                closed_after = time.monotonic() - started if sock.recv(1) == b"" else None
            except TimeoutError:
                closed_after = None  # still open
            except OSError:
                closed_after = time.monotonic() - started
        sock.close()
        assert closed_after is not None and closed_after < 4, "the slow head was not cut"
        # a normal request on a fresh connection is not affected
        assert httpx.get(srv.url + "/healthz", timeout=5).status_code == 200


GUARDED = [
    "/feed",
    "/feed/stream",
    "/just-opened",
    "/markets",
    "/buckets",
    "/venues/1001",
    "/stats/by-hour",
    "/metrics",
    "/no-such-route",
    "/healthz/../metrics",
    "/healthzx",
    "/readyz/..%2fmetrics",
    "/openapi.jsonx",
    "/static/..%2f..%2fapp.py",
]
OPEN = ["/", "/healthz", "/readyz", "/openapi.json", "/static/style.css"]


def test_with_keys_every_route_and_method_needs_one(kafka_settings: Settings) -> None:
    """401 for every method on every route that is not meant to be open, including HEAD,
    OPTIONS (CORS preflights are answered before the key check), unknown paths and encoded
    ``../``; security headers on every answer; keys compared in constant time."""
    s = kafka_settings.model_copy(update={"api_keys": "k-123456,k-abcdef"})
    with Served(s, with_sink=True) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        for path in GUARDED:
            for method in ("GET", "HEAD", "OPTIONS", "POST", "DELETE"):
                r = http.request(method, path)
                assert r.status_code == 401, (method, path, r.status_code)
                assert r.headers["x-content-type-options"] == "nosniff"
            wrong = http.get(path, headers={"X-API-Key": "k-123457"})
            assert wrong.status_code == 401, path
        for path in OPEN:
            r = http.get(path)
            assert r.status_code == 200, path
            assert r.headers["x-content-type-options"] == "nosniff"
        page = http.get("/")
        csp = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
        assert page.headers["x-frame-options"] == "DENY"
        inside = http.get("/static/..%2f..%2fapp.py", headers={"X-API-Key": "k-abcdef"})
        assert inside.status_code == 404  # with a key: still nothing outside the folder
        ok = http.get("/feed", headers={"X-API-Key": "k-abcdef"})
        assert ok.status_code == 200 and ok.headers["x-content-type-options"] == "nosniff"
        assert http.get("/metrics", params={"api_key": "k-123456"}).status_code == 200
        with http.stream("GET", "/feed/stream", headers={"X-API-Key": "k-123456"}) as r:
            assert r.status_code == 200


def test_a_feed_read_that_matches_nothing_is_bounded_and_returns_its_cursor(
    kafka_settings: Settings,
) -> None:
    """/feed from the beginning with a filter that matches nothing: one request reads at most
    ``feed_scan_max`` offsets and says where to go on (before: every request read the whole
    range up to the head)."""
    from sinks.testdata import DropWriter, make_drop

    s = kafka_settings.model_copy(update={"feed_scan_max": 500})
    w = DropWriter(s)
    w.write([make_drop(i) for i in range(1000)])
    w.write([make_drop(2000, neighborhood="Red Hook")])
    w.write([make_drop(i) for i in range(1001, 2000)])
    with Served(s, with_sink=True) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        deadline = time.monotonic() + 60
        while srv.app.state.drops.sink.sink.totals.drops < 2000:
            assert time.monotonic() < deadline, "the sink did not store the drops"
            time.sleep(0.2)
        cursors, found = [], []
        cur: str | None = None
        for _ in range(20):
            params = {"neighborhood": "Red Hook", **({"since": cur} if cur else {})}
            doc = http.get("/feed", params=params).json()
            found += doc["items"]
            cur = doc["next"]
            cursors.append(C.decode(cur).get(0, -1))
            if not doc.get("more"):
                break
        assert [i["neighborhood"] for i in found] == ["Red Hook"]
        assert len(cursors) >= 4, cursors  # 2,000 rows and transaction markers, 500 a request
        assert all(b - a <= 501 for a, b in zip([-1, *cursors], cursors, strict=False))
    w.close()
