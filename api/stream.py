"""The SSE response: a lean ASGI response for thousands of mostly idle clients.

One task per client writes what the hub hands it; each event's bytes are encoded once by the
hub and shared. No per-send timer: the hub's one-second tick cuts a client whose send has
been blocked longer than ``sse_send_timeout`` (a reader that stopped reading) or that was
dropped while blocked; the connection is closed and the client resumes with Last-Event-ID.
Pings come from the same tick (a flag, no timer per client). A second small task per client
waits for the disconnect message so a client that goes away is unsubscribed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from starlette.types import Receive, Scope, Send

from api.hub import Client

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]


class LiveResponse:
    def __init__(self, body: AsyncIterator[bytes], client: Client) -> None:
        self.body = body
        self.client = client

    async def _listen(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.client.closing = True
                self.client.wake.set()
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        c = self.client
        c.task = asyncio.current_task()
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        listener = asyncio.ensure_future(self._listen(receive))
        try:
            async for chunk in self.body:
                c.sending_since = time.monotonic()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                c.sending_since = 0.0
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not c.cut:
                raise
            # cut by the hub: returning leaves the response incomplete, so the server
            # closes the connection
        except OSError:
            pass
        finally:
            c.task = None
            listener.cancel()
            with contextlib.suppress(Exception):
                await self.body.aclose()  # type: ignore[attr-defined]
