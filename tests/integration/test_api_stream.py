"""GET /feed/stream on the real broker and chDB: live tail, resume with no gap and no repeat."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import httpx
import orjson
import pytest

from api import cursor as C
from drops.settings import Settings
from sinks.testdata import DropWriter, close_of, make_drop
from tests.integration.test_api_feed import Server

pytestmark = pytest.mark.kafka


class SSE:
    """A test SSE client: a thread parsing events into a queue."""

    def __init__(self, url: str, last_id: str | None = None, params: dict[str, str] | None = None):
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.ended = threading.Event()
        self._stop = threading.Event()
        headers = {"Last-Event-ID": last_id} if last_id else {}
        self.thread = threading.Thread(
            target=self._run, args=(url, headers, params or {}), daemon=True
        )
        self.thread.start()

    def _run(self, url: str, headers: dict[str, str], params: dict[str, str]) -> None:
        try:
            with httpx.stream(
                "GET", url + "/feed/stream", headers=headers, params=params, timeout=None
            ) as r:
                assert r.status_code == 200, r.read()
                ev: dict[str, Any] = {}
                for line in r.iter_lines():
                    if self._stop.is_set():
                        return
                    if not line:
                        if "data" in ev or "event" in ev:
                            self.events.put(ev)
                        ev = {}
                    elif line.startswith(":"):
                        continue
                    else:
                        k, _, v = line.partition(":")
                        ev[k] = v[1:] if v.startswith(" ") else v
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def take(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"got {len(out)} of {n} events"
            ev = self.events.get(timeout=left)
            if ev.get("event") == "drop":
                ev["doc"] = orjson.loads(ev["data"])
                out.append(ev)
        return out

    def ready(self, timeout: float = 30.0) -> dict[str, Any]:
        ev = self.events.get(timeout=timeout)
        assert ev["event"] == "ready" and "retry" in ev
        return ev

    def close(self) -> None:
        self._stop.set()


def test_live_tail_and_graceful_shutdown(kafka_settings: Settings) -> None:
    w = DropWriter(kafka_settings)
    srv = Server(kafka_settings, with_sink=True).__enter__()
    try:
        client = SSE(srv.url)
        ready = client.ready()
        drops = [make_drop(i) for i in range(6)]
        w.write(drops[:3])
        w.write(drops[3:])
        got = client.take(6)
        assert [e["doc"]["dedupe_key"] for e in got] == [d.dedupe_key for d in drops]
        for e in got:
            assert C.decode(e["id"])[0] == e["doc"]["kafka_offset"]
        assert (
            C.decode(ready["id"]) == {} or C.decode(ready["id"])[0] < got[0]["doc"]["kafka_offset"]
        )
        closes = SSE(srv.url, params={"event": "close"})
        closes.ready()
        w.write([make_drop(10), close_of(drops[0], drops[0].opened_at_ms + 5000)])
        only = closes.take(1)
        assert only[0]["doc"]["event"] == "close" and only[0]["doc"]["open_seconds"] == 5.0
        assert client.take(2)[1]["doc"]["event"] == "close"
    finally:
        srv.__exit__(None, None, None)
    assert client.ended.wait(10), "stream did not end on shutdown"
    w.close()


@pytest.mark.parametrize("ring", [3, 20000])
def test_resume_with_last_event_id_has_no_gap_and_no_repeat(
    kafka_settings: Settings, ring: int
) -> None:
    """A writer keeps writing while a client disconnects and resumes several times."""
    s = kafka_settings.model_copy(update={"sse_ring": ring})
    w = DropWriter(s)
    written: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set() and n < 200:
            batch = [make_drop(1000 + n + i) for i in range(4)]
            w.write(batch)
            written.extend(d.dedupe_key for d in batch)
            n += 4
            time.sleep(0.03)

    with Server(s, with_sink=True) as srv:
        w.write([make_drop(1)])  # before the client's cursor: must not be delivered
        deadline = time.monotonic() + 30
        first = httpx.get(srv.url + "/feed").json()
        while not first["items"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
            first = httpx.get(srv.url + "/feed").json()
        t = threading.Thread(target=writer, daemon=True)
        received: list[dict[str, Any]] = []
        cursor_start = first["next"]
        last_id = cursor_start
        t.start()
        for _round in range(4):
            client = SSE(srv.url, last_id=last_id)
            client.ready()
            got = client.take(12)
            client.close()
            received += got
            last_id = got[-1]["id"]
            time.sleep(0.25)  # disconnected while the writer goes on
        stop.set()
        t.join(30)
        client = SSE(srv.url, last_id=last_id)
        client.ready()
        received += client.take(len(written) - len(received), timeout=60)
        client.close()
        time.sleep(0.5)
        assert client.events.empty() or all(
            e.get("event") != "drop" for e in list(client.events.queue)
        ), "an extra event after the end"
    keys = [e["doc"]["dedupe_key"] for e in received]
    assert len(keys) == len(set(keys)), "a repeated event"
    assert keys == written, "a gap or a reordering"
    w.close()


def _clients(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("drops_sse_clients "):
            return float(line.split()[1])
    raise AssertionError("no drops_sse_clients gauge")


def test_ping_retry_hint_and_head(kafka_settings: Settings) -> None:
    """sse-starlette's ping comment arrives every ``sse_ping`` seconds on an idle stream, the
    first event carries the ``retry:`` hint, and a HEAD request (whose body never starts)
    leaves no client subscribed to the hub."""
    s = kafka_settings.model_copy(update={"sse_ping": 0.3, "sse_retry_ms": 1234})
    with Server(s) as srv:
        head = httpx.head(srv.url + "/feed/stream", timeout=10)
        assert head.status_code == 200
        assert head.headers["content-type"].startswith("text/event-stream")
        assert head.headers["cache-control"] == "no-store"
        lines: list[str] = []
        # from before the request: the server cannot send its second ping sooner than two
        # intervals after that, however late this loaded machine reads the first one
        started = time.monotonic()
        with httpx.stream("GET", srv.url + "/feed/stream", timeout=10) as r:
            assert r.headers["x-accel-buffering"] == "no"
            assert _clients(srv.url) == 1
            for line in r.iter_lines():
                lines.append(line)
                if sum(x.startswith(": ping") for x in lines) >= 2:
                    break
            waited = time.monotonic() - started
        assert lines[0] == "retry: 1234"
        assert waited >= 0.5, "two pings came sooner than the interval allows"
        deadline = time.monotonic() + 10
        while _clients(srv.url) != 0:
            assert time.monotonic() < deadline, "a client stayed subscribed"
            time.sleep(0.1)


def test_clients_with_mixed_filters_get_what_their_own_filter_selects(
    kafka_settings: Settings,
) -> None:
    """Clients grouped by filter (three spellings of one filter, another filter, none): each
    gets exactly the events its filter selects, in order, with the full stream's ids, and a
    filtered client resuming from one of its ids gets the rest with no gap and no repeat."""
    w = DropWriter(kafka_settings)
    with Server(kafka_settings, with_sink=True) as srv:
        specs: list[dict[str, str]] = [
            {"event": "close"},
            {"event": "close,close"},
            {"event": "close", "market": "nyc"},  # a filter of its own
            {},
        ]
        clients = [SSE(srv.url, params=p) for p in specs]
        for c in clients:
            c.ready()
        assert _metric(srv.url, "drops_sse_filter_groups") == 3
        drops = [make_drop(i) for i in range(8)]
        closes = [close_of(d, d.opened_at_ms + 1000) for d in drops[:4]]
        w.write(drops[:4])
        w.write([*closes[:2], *drops[4:]])
        w.write(closes[2:])
        every = clients[3].take(12)
        ids = {e["doc"]["dedupe_key"]: e["id"] for e in every}
        want = [e for e in every if e["doc"]["event"] == "close"]
        for c in clients[:2]:
            got = c.take(len(want))
            assert [(e["id"], e["data"]) for e in got] == [(e["id"], e["data"]) for e in want]
        nyc = [e for e in want if e["doc"]["market"] == "nyc"]
        assert nyc  # (every test drop is in nyc: the check below is never empty)
        got = clients[2].take(len(nyc))
        assert [e["id"] for e in got] == [ids[e["doc"]["dedupe_key"]] for e in nyc]
        for c in clients:
            c.close()
        resumed = SSE(srv.url, last_id=want[1]["id"], params={"event": "close"})
        resumed.ready()
        rest = resumed.take(len(want) - 2)
        assert [e["id"] for e in rest] == [e["id"] for e in want[2:]]
        resumed.close()
    w.close()


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name}")
