"""The live page in headless Chromium against a running API with drops in it."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from api import cursor as C
from drops.settings import Settings
from sinks.testdata import DropWriter, close_of, make_drop
from tests.integration.test_api_feed import Server

pytestmark = pytest.mark.kafka


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("headless Chromium is missing: apt-get install -y chromium")


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (no extra package)."""

    def __init__(self, profile: Path) -> None:
        self.r_ours, self.w_chrome = os.pipe()  # chrome writes to fd 4
        self.r_chrome, self.w_ours = os.pipe()  # chrome reads from fd 3
        cmd = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]

        def fds() -> None:
            os.dup2(self.r_chrome, 3)
            os.dup2(self.w_chrome, 4)

        self.proc = subprocess.Popen(
            cmd,
            preexec_fn=fds,
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(self.r_chrome)
        os.close(self.w_chrome)
        self.buf = b""
        self.next_id = 0
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call(
            "Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}
        )["sessionId"]

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w_ours, orjson.dumps(msg) + b"\0")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                doc = orjson.loads(raw)
                if doc.get("id") == self.next_id:
                    assert "error" not in doc, doc
                    result: dict[str, Any] = doc["result"]
                    return result
            ready, _, _ = select.select([self.r_ours], [], [], 1.0)
            if ready:
                chunk = os.read(self.r_ours, 1 << 20)
                assert chunk, "chromium closed the pipe"
                self.buf += chunk
        raise AssertionError(f"no answer to {method}")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", {"url": url}, self.session)

    def html(self) -> str:
        res = self.call(
            "Runtime.evaluate",
            {"expression": "document.documentElement.outerHTML", "returnByValue": True},
            self.session,
        )
        return str(res.get("result", {}).get("value", ""))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self.r_ours)
        os.close(self.w_ours)


@pytest.mark.clock
def test_page_shows_drops_closes_and_the_chart(kafka_settings: Settings, tmp_path: Path) -> None:
    w = DropWriter(kafka_settings)
    clock = kafka_settings.clock()  # the API's clock: the chart is its last 24 hours
    now = clock.now_ms()
    a = make_drop(1, opened_at_ms=now - 60_000, neighborhood="SoHo")
    b = make_drop(2, opened_at_ms=now - 30_000, neighborhood="Tribeca")
    with Server(kafka_settings, with_sink=True) as srv:
        w.write([a, b])
        w.write([close_of(a, now - 60_000 + 240_000)])
        deadline = time.monotonic() + 30
        while len(httpx.get(srv.url + "/feed").json()["items"]) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # ?since= makes the page's stream replay the log: the closed drop comes only from SSE
        browser = Browser(tmp_path / "profile")
        try:
            browser.goto(f"{srv.url}/?since={C.encode({})}")
            deadline = time.monotonic() + 30
            dom = browser.html()
            while "gone in" not in dom or 'data-state="live"' not in dom:
                assert time.monotonic() < deadline, dom[-3000:]
                time.sleep(0.2)
                dom = browser.html()
            # a drop written while the page is open appears live
            c = make_drop(3, opened_at_ms=clock.now_ms(), neighborhood="Harlem")
            w.write([c])
            while c.slot_id not in dom:
                assert time.monotonic() < deadline + 30, dom[-3000:]
                time.sleep(0.2)
                dom = browser.html()
        finally:
            browser.close()
    cards = re.findall(r'<li class="drop( closed)?" data-key="([^"]+)"', dom)
    shown = {key.split("|")[1]: bool(closed) for closed, key in cards}
    assert shown == {a.slot_id: True, b.slot_id: False, c.slot_id: False}, dom[-3000:]
    assert "gone in 4 min" in dom
    assert a.venue_name in dom and "Tribeca" in dom
    bars = re.findall(r'class="bar"[^>]*data-drops="(\d+)"', dom)
    assert len(bars) == 24 and sum(int(n) for n in bars) >= 3
    assert 'data-state="live"' in dom
    # venue-local times as people read them, and one tap to book
    assert "Tue 1 Dec, 6:00 pm" in dom and a.actual_time not in dom
    assert f'class="book" href="{a.booking}"' in dom
    w.close()


@pytest.mark.clock
def test_page_picks_a_market_and_charts_its_hours(kafka_settings: Settings, tmp_path: Path) -> None:
    config = tmp_path / "markets.toml"
    config.write_text(
        '[[markets]]\nname = "nyc"\ntime_zone = "America/New_York"\n'
        '[[markets]]\nname = "del"\ntime_zone = "Asia/Kolkata"\n'
    )
    s = kafka_settings.model_copy(update={"config": config})
    now = s.clock().now_ms()
    ny = make_drop(1, market="nyc", opened_at_ms=now - 60_000)
    dl = make_drop(2, market="del", opened_at_ms=now - 30_000)
    w = DropWriter(s)
    with Server(s, with_sink=True) as srv:
        w.write([ny, dl])
        deadline = time.monotonic() + 30
        while len(httpx.get(srv.url + "/feed").json()["items"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        browser = Browser(tmp_path / "profile")
        try:
            browser.goto(f"{srv.url}/?market=del")
            dom = browser.html()
            while dl.slot_id not in dom or 'id="chart-market">del, ' not in dom:
                assert time.monotonic() < deadline + 30, dom[-3000:]
                time.sleep(0.2)
                dom = browser.html()
        finally:
            browser.close()
    assert ny.slot_id not in dom  # the picked market's drops only
    assert '<option value="del" selected' in dom or re.search(
        r'<select name="market">.*<option value="nyc">nyc \(America/New_York\)</option>'
        r'<option value="del">del \(Asia/Kolkata\)</option>',
        dom,
    ), dom[-3000:]
    # the chart's hour labels are Kolkata's (UTC+05:30), not the device's
    bars = re.findall(r'class="bar" data-hour="(\d+)" data-drops="(\d+)" title="(\d+):00', dom)
    assert len(bars) == 24 and sum(int(n) for _, n, _ in bars) == 1
    for h, _, label in bars:
        local = datetime.fromtimestamp(int(h) / 1000, ZoneInfo("Asia/Kolkata"))
        assert (int(label), local.minute) == (local.hour, 0), (h, label)
    w.close()


def test_page_creates_and_deletes_a_watch(kafka_settings: Settings, tmp_path: Path) -> None:
    with Server(kafka_settings, with_sink=True) as srv:
        browser = Browser(tmp_path / "profile")
        try:
            browser.goto(f"{srv.url}/?neighborhood=SoHo&party_size=4")
            deadline = time.monotonic() + 30
            while 'id="watch-form"' not in browser.html():
                assert time.monotonic() < deadline
                time.sleep(0.2)
            time.sleep(1.0)  # the page's script has run
            browser.call(
                "Runtime.evaluate",
                {
                    "expression": "const f = document.getElementById('watch-form');"
                    "f.elements.name.value = 'SoHo for four';"
                    "f.elements.url.value = 'https://example.invalid/hook';"
                    "f.elements.closes.checked = true;"
                    "f.querySelector('button').click();"
                },
                browser.session,
            )
            while not httpx.get(srv.url + "/watches").json()["watches"]:
                assert time.monotonic() < deadline, browser.html()[-3000:]
                time.sleep(0.2)
            [w] = httpx.get(srv.url + "/watches").json()["watches"]
            assert w["name"] == "SoHo for four" and w["closes"] is True
            assert w["criteria"]["neighborhoods"] == ["SoHo"] and w["criteria"]["party_size"] == 4
            assert w["channels"] == [{"type": "webhook", "url": "https://example.invalid/hook"}]
            while f'data-id="{w["watch_id"]}"' not in browser.html():
                assert time.monotonic() < deadline + 10
                time.sleep(0.2)
            assert "SoHo · party 4 · also closes" in browser.html()
            browser.call(
                "Runtime.evaluate",
                {"expression": "document.querySelector('#watch-list .del').click()"},
                browser.session,
            )
            while httpx.get(srv.url + "/watches").json()["watches"]:
                assert time.monotonic() < deadline + 20
                time.sleep(0.2)
            while f'data-id="{w["watch_id"]}"' in browser.html():
                assert time.monotonic() < deadline + 30
                time.sleep(0.2)
        finally:
            browser.close()
