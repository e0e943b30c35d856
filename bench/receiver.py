"""A real HTTP receiver of alerts for the chaos run and benchmarks: signed webhooks and
Apprise's ``json://`` posts, every request recorded with its idempotency key and answer."""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

IDEMPOTENCY_HEADER = "Idempotency-Key"  # what the delivery worker sends (delivery.worker)


class AlertReceiver:
    """Answers 503 to the first post of a share (``fail_share``) of the idempotency keys,
    chosen by the key's hash (so the sender's retry is exercised), 200 otherwise."""

    def __init__(self, fail_share: float = 0.2) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.fail_share = fail_share
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = self.headers.get(IDEMPOTENCY_HEADER, "")
                with recv.lock:
                    seen = any(r["key"] == key for r in recv.requests)
                    code = 503 if (not seen and recv.fails(key)) else 200
                    recv.requests.append(
                        {
                            "path": self.path,
                            "key": key,
                            "code": code,
                            "body": body,
                            "at": time.monotonic(),
                        }
                    )
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fails(self, key: str) -> bool:
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big")
        return h < self.fail_share * 2**32

    def accepted(self, path: str) -> list[dict[str, Any]]:
        """The posts to ``path`` answered 2xx, their bodies decoded."""
        with self.lock:
            got = [r for r in self.requests if r["path"] == path and r["code"] == 200]
        out = []
        for r in got:
            try:
                doc = orjson.loads(r["body"])
            except orjson.JSONDecodeError:
                doc = {}
            out.append({**r, "doc": doc})
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
