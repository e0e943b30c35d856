"""Two `drops api --with-sink` replicas on one data folder (embedded chDB): each claims its
own ClickHouse folder and sink group, loads the whole drops topic, and a cursor or
Last-Event-ID from one replica works on the other."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.pipeline import free_port, settings_env
from drops.settings import Settings
from sinks.testdata import DropWriter, make_drop
from tests.integration.test_api_stream import SSE

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]


def api(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shell.cli", "api", "--with-sink"],
        cwd=ROOT,
        env=settings_env(settings, DROPS_API_PORT=str(port)),
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def feed(url: str, **params: str) -> dict:  # type: ignore[type-arg]
    r = httpx.get(url + "/feed", params=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_two_embedded_replicas_serve_one_feed(kafka_settings: Settings, tmp_path: Path) -> None:
    s = kafka_settings
    w = DropWriter(s)
    first = [make_drop(i) for i in range(30)]
    w.write(first)
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [api(s, ports[0], logs[0]), api(s, ports[1], logs[1])]
    try:
        for url, proc, log in zip(urls, procs, logs, strict=True):
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                try:
                    if len(feed(url, limit="1000")["items"]) == 30:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
        text = logs[0].read_text() + logs[1].read_text()
        assert "slot=0" in text.replace('"slot": 0', "slot=0")
        assert "slot=1" in text.replace('"slot": 1', "slot=1")
        # a cursor from one replica, the rest from the other: no gap, no repeat
        page = feed(urls[0], limit="12")
        rest = feed(urls[1], since=page["next"], limit="1000")
        keys = [i["dedupe_key"] for i in page["items"] + rest["items"]]
        assert keys == [d.dedupe_key for d in first]
        # an SSE client of replica A resumes on replica B with its Last-Event-ID
        client = SSE(urls[0], last_id=rest["next"])
        client.ready()
        later = [make_drop(100 + i) for i in range(10)]
        w.write(later[:5])
        got = client.take(5)
        client.close()
        w.write(later[5:])
        client = SSE(urls[1], last_id=got[-1]["id"])
        client.ready()
        got += client.take(5)
        client.close()
        assert [e["doc"]["dedupe_key"] for e in got] == [d.dedupe_key for d in later]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
        w.close()
    chdb = Path(s.clickhouse_url.removeprefix("chdb://"))
    assert chdb.is_dir() and chdb.with_name(chdb.name + "-1").is_dir()
