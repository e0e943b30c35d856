"""The API on the real broker and chDB: /feed, /just-opened, the small endpoints, the 400s."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from api import cursor as C
from api.app import create_app
from bench.pipeline import free_port
from drops.settings import Settings
from sinks.service import SinkThread
from sinks.testdata import DropWriter, close_of, make_drop, make_stats

pytestmark = pytest.mark.kafka


class Server:
    def __init__(self, settings: Settings, **kw: Any) -> None:
        self.port = free_port()
        self.settings = settings.model_copy(update={"api_port": self.port})
        if kw.pop("with_sink", False):
            kw["sink"] = SinkThread
        self.app = create_app(self.settings, **kw)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                timeout_graceful_shutdown=2,
            )
        )
        server = self.server
        self.app.state.drops.exiting = lambda: bool(server.should_exit)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("API did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture
def api(kafka_settings: Settings) -> Iterator[Server]:
    with Server(kafka_settings, with_sink=True) as s:
        yield s


def wait_for(fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError("timed out")


def read_all(
    url: str, since: str | None, limit: int, **filters: str
) -> tuple[list[dict[str, Any]], str]:
    items: list[dict[str, Any]] = []
    cur = since
    while True:
        params: dict[str, Any] = {"limit": limit, **filters}
        if cur:
            params["since"] = cur
        r = httpx.get(url + "/feed", params=params, timeout=10)
        assert r.status_code == 200, r.text
        doc = r.json()
        items += doc["items"]
        cur = doc["next"]
        if len(doc["items"]) < limit:
            return items, cur


def test_feed_pages_in_log_order_without_skip_or_repeat(
    api: Server, kafka_settings: Settings
) -> None:
    w = DropWriter(kafka_settings)
    drops = [make_drop(i) for i in range(25)]
    w.write(drops[:10])
    w.write(drops[10:])
    wait_for(lambda: len(read_all(api.url, None, 100)[0]) == 25)
    items, nxt = read_all(api.url, None, 7)
    assert [i["dedupe_key"] for i in items] == [d.dedupe_key for d in drops]
    offsets = [i["kafka_offset"] for i in items]
    assert offsets == sorted(offsets)
    # later rows arrive: the old cursor gives exactly them
    late = [make_drop(i) for i in range(100, 104)]
    w.write(late[:2])
    w.write([*late[2:], close_of(drops[0], drops[0].opened_at_ms + 30000)])
    more = wait_for(lambda: (got := read_all(api.url, nxt, 3)[0]) and len(got) == 5 and got)
    assert [i["dedupe_key"] for i in more][:4] == [d.dedupe_key for d in late]
    assert more[4]["event"] == "close" and more[4]["open_seconds"] == 30.0
    # the same cursor read again gives the same rows (a cursor is a position, not a session)
    assert read_all(api.url, nxt, 100)[0] == more
    # filters
    only_close, _ = read_all(api.url, None, 100, event="close")
    assert [i["dedupe_key"] for i in only_close] == [more[4]["dedupe_key"]]
    v = drops[3].venue_id
    by_venue, _ = read_all(api.url, None, 2, venue=v)
    assert by_venue and all(i["venue_id"] == v for i in by_venue)
    assert {i["dedupe_key"] for i in by_venue} == {
        d.dedupe_key for d in drops + late if d.venue_id == v
    } | ({more[4]["dedupe_key"]} if drops[0].venue_id == v else set())
    w.close()


@pytest.mark.clock
def test_just_opened_and_the_small_endpoints(api: Server, kafka_settings: Settings) -> None:
    w = DropWriter(kafka_settings)
    now = kafka_settings.clock().now_ms()  # the API's clock: "the last 10 minutes" of it
    fresh = [make_drop(i, opened_at_ms=now - 1000 * i) for i in range(4)]
    old = make_drop(50, opened_at_ms=now - 20 * 60_000)
    w.write([*fresh, old, close_of(fresh[1], now)])
    w.write_stats(
        [
            make_stats(kind="baseline", slots=300, date="2099-01-01", polled_at_ms=now),
            make_stats(slots=310, date="2099-01-01", polled_at_ms=now),
            # a bucket without a baseline build: its first fetch is the processor's baseline
            make_stats(slots=200, date="2099-01-02", polled_at_ms=now - 30_000),
            make_stats(slots=210, date="2099-01-02", polled_at_ms=now),
        ]
    )
    wait_for(lambda: len(read_all(api.url, None, 100)[0]) == 6)
    r = httpx.get(api.url + "/just-opened")
    assert r.status_code == 200
    keys = [i["dedupe_key"] for i in r.json()["items"]]
    assert keys == [fresh[0].dedupe_key, fresh[2].dedupe_key, fresh[3].dedupe_key]
    assert httpx.get(api.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(api.url + "/readyz").json()
    assert ready["ready"] and ready["checks"]["kafka"] and ready["checks"]["clickhouse"]
    b = wait_for(lambda: (r := httpx.get(api.url + "/buckets").json()["buckets"])[1:] and r)
    assert b[0]["baseline_slots"] == 300 and b[0]["last_poll_slots"] == 310
    assert b[0]["status"] == "ok" and b[0]["lag_seconds"] is not None
    assert (b[1]["baseline_slots"], b[1]["baseline_at_ms"]) == (200, now - 30_000)
    assert b[1]["last_poll_slots"] == 210 and b[1]["polls"] == 2
    vr = httpx.get(api.url + f"/venues/{fresh[1].venue_id}")
    assert vr.status_code == 200
    vdoc = vr.json()
    assert vdoc["venue"]["venue_name"] == fresh[1].venue_name
    assert vdoc["stats"]["closes"] == 1 and vdoc["stats"]["median_open_seconds"] == pytest.approx(
        1.0
    )
    assert httpx.get(api.url + "/venues/nope-404").status_code == 404
    hours = httpx.get(api.url + "/stats/by-hour").json()["hours"]
    assert sum(h["drops"] for h in hours) == 5
    m = httpx.get(api.url + "/metrics").text
    assert 'drops_http_requests_total{route="/just-opened",status="200"}' in m
    assert "drops_sink_rows_total 6.0" in m
    assert "# TYPE drops_sink_rows_total counter" in m and "drops_build_info{" in m
    spec = httpx.get(api.url + "/openapi.json").json()
    assert "/feed" in spec["paths"] and "/feed/stream" in spec["paths"]
    page = httpx.get(api.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    w.close()


BAD_INPUTS = [
    ("/feed?since=%%%", "since"),
    ("/feed?since=AQEAAA", "since"),
    ("/feed?limit=0", "limit"),
    ("/feed?limit=100000", "limit"),
    ("/feed?provider=yelp", "provider"),
    ("/feed?time_slot=11:00", "time_slot"),
    ("/feed?date_from=2026-02-30", "date_from"),
    ("/feed?party_size=x", "party_size"),
    ("/feed?bogus=1", "bogus"),
    ("/feed/stream?since=zzz", "since"),
    ("/just-opened?limit=-1", "limit"),
    ("/venues/a%20b", "venue_id"),
    ("/venues/123?history=9999", "history"),
    ("/stats/by-hour?hours=0", "hours"),
    ("/buckets?x=1", "x"),
]


def test_bad_input_is_a_400_naming_the_parameter(api: Server) -> None:
    for path, param in BAD_INPUTS:
        r = httpx.get(api.url + path)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["param"] == param and r.json()["error"] == "bad_request", path
    r = httpx.get(api.url + "/feed/stream", headers={"Last-Event-ID": "garbage!"})
    assert r.status_code == 400 and r.json()["param"] == "Last-Event-ID"


def test_api_keys_and_cors(kafka_settings: Settings) -> None:
    s = kafka_settings.model_copy(
        update={"api_keys": "k1,k2", "api_cors_origins": "https://a.example"}
    )
    with Server(s, with_sink=True) as srv:
        assert httpx.get(srv.url + "/feed").status_code == 401
        assert httpx.get(srv.url + "/feed", headers={"X-API-Key": "k2"}).status_code == 200
        assert httpx.get(srv.url + "/feed?api_key=k1").status_code == 200
        assert httpx.get(srv.url + "/healthz").status_code == 200
        r = httpx.get(srv.url + "/feed?api_key=k1", headers={"Origin": "https://a.example"})
        assert r.headers["access-control-allow-origin"] == "https://a.example"
        r = httpx.get(srv.url + "/feed?api_key=k1", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_cursor_encodes_a_log_position(api: Server) -> None:
    doc = httpx.get(api.url + "/feed").json()
    assert (doc["items"] == [] and C.decode(doc["next"]) == {0: -1}) or C.decode(doc["next"]) == {}


def test_rows_stored_before_the_item_column_are_rendered_the_same(
    api: Server, kafka_settings: Settings
) -> None:
    w = DropWriter(kafka_settings)
    drops = [make_drop(i) for i in range(6)]
    w.write([*drops, close_of(drops[0], drops[0].opened_at_ms + 1500)])
    before = wait_for(lambda: (got := read_all(api.url, None, 100)[0]) and len(got) == 7 and got)
    ch = api.app.state.drops.ch
    ch.command(
        "ALTER TABLE drop_events UPDATE item = '' WHERE kafka_offset % 2 = 0 "
        "SETTINGS mutations_sync = 2"
    )
    assert ch.query("SELECT countIf(item = '') FROM drop_events")[0][0] > 0
    assert read_all(api.url, None, 3)[0] == before
    w.close()
