"""A slow SSE client over a real socket: it stops reading, the API cuts it, and it resumes
with Last-Event-ID with no gap and no repeat."""

from __future__ import annotations

import re
import socket
import time

import httpx
import pytest

from api import cursor as C
from drops.settings import Settings
from sinks.testdata import DropWriter, make_drop
from tests.integration.test_api_feed import Server
from tests.integration.test_api_stream import SSE

pytestmark = pytest.mark.kafka

_KEY = re.compile(rb'"dedupe_key":"([^"]+)"')


def _events(raw: bytes) -> list[tuple[str, str]]:
    """Complete ``drop`` events of a raw stream: ``(id, dedupe_key)``."""
    out = []
    for block in raw.split(b"\n\n")[:-1]:  # the last piece may be cut short
        lines = dict(line.split(b": ", 1) for line in block.split(b"\n") if line and b": " in line)
        if lines.get(b"event") == b"drop":
            key = _KEY.search(lines[b"data"])
            assert key is not None
            out.append((lines[b"id"].decode(), key.group(1).decode()))
    return out


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_a_client_that_stops_reading_is_cut_and_resumes_without_gap(
    kafka_settings: Settings,
) -> None:
    s = kafka_settings.model_copy(update={"sse_queue": 8, "sse_send_timeout": 1.0})
    w = DropWriter(s)
    with Server(s, with_sink=True) as srv:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        sock.sendall(b"GET /feed/stream HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
        sock.settimeout(10)
        head = b""
        while b"event: ready" not in head:
            head += sock.recv(4096)
        # stop reading; write until the API gives up on this client
        written: list[str] = []
        n = 0
        deadline = time.monotonic() + 60
        while _metric(srv.url, "drops_sse_cut_clients_total") < 1:
            assert time.monotonic() < deadline, "the stalled client was never cut"
            batch = [make_drop(5000 + n + i, venue=n % 50) for i in range(50)]
            w.write(batch)
            written += [d.dedupe_key for d in batch]
            n += 50
            time.sleep(0.05)
        # what the client still has in its buffers, up to the close
        raw = head
        sock.settimeout(10)
        while True:
            try:
                chunk = sock.recv(1 << 16)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            raw += chunk
        sock.close()
        body = raw.split(b"\r\n\r\n", 1)[1]
        got = _events(body)
        assert len(got) < len(written), "the client was not slow enough to be cut"
        print(f"written {len(written)}, read before the cut {len(got)}")
        assert [k for _, k in got] == written[: len(got)]
        # resume from the last complete event
        last_id = got[-1][0] if got else C.encode({})
        client = SSE(srv.url, last_id=last_id)
        client.ready()
        rest = client.take(len(written) - len(got), timeout=60)
        client.close()
        keys = [k for _, k in got] + [e["doc"]["dedupe_key"] for e in rest]
        assert keys == written, "a gap or a repeat after the resume"
    w.close()
