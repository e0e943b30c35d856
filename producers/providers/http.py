"""The HTTP connection under the providers' ``httpx.AsyncClient``: aiohttp.

The clients and the transport speak httpx (its request and response types, its errors, and its
``MockTransport`` in the tests); this adapter sends each request with one pooled
``aiohttp.ClientSession`` and hands back the whole body at once. httpx's own connection layer
(httpcore with h11) reads a response in pieces of a few KB, each through several Python
layers: measured on 550 KB search pages here it cost 2.5-3.5 ms of CPU a request against
1.0-1.3 ms through aiohttp (its parser is compiled), more than decoding the page itself
(``python -m bench.producer_bench``, docs/benchmarks.md).

Errors come back as httpx's: a timeout is ``httpx.ReadTimeout`` (``timeout`` for the
transport), anything else that broke the exchange an ``httpx.TransportError``. The timeout of a
request covers the whole exchange, body included.
"""

from __future__ import annotations

import aiohttp
import httpx


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, connections: int, keepalive_s: float = 60.0) -> None:
        self._connections, self._keepalive = connections, keepalive_s
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # made on the first request: a session belongs to the running event loop
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._connections, keepalive_timeout=self._keepalive
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        limit = max((t for t in timeouts.values() if t is not None), default=None)
        try:
            async with self._open().request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=limit),
            ) as resp:
                body = await resp.read()
                return httpx.Response(
                    resp.status,
                    headers=resp.raw_headers,
                    content=body,  # still encoded as sent: httpx decodes it
                    request=request,
                )
        except TimeoutError as exc:
            raise httpx.ReadTimeout(type(exc).__name__, request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
