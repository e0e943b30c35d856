"""The aiohttp connection under the provider clients' httpx client, against a real local
server: what comes back is httpx's (status, headers, the body decoded as httpx decodes it), and
every way an exchange can break is a failure of the transport (timeout, refused, cut short),
never an answer."""

from __future__ import annotations

import asyncio
import gzip
import random

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from producers.providers.base import Counters
from producers.providers.transport import Policy, ProviderError, Transport
from simulator.control import serve

PORT = 29396  # issue-16's range of ports


async def echo(request: Request) -> Response:
    body = await request.body()
    doc = {"method": request.method, "ua": request.headers.get("user-agent"), "n": len(body),
           "q": request.query_params.get("q"), "pad": "x" * 300_000}  # fmt: skip
    return Response(orjson.dumps(doc), media_type="application/json")


async def zipped(request: Request) -> Response:
    raw = gzip.compress(orjson.dumps({"ok": True}))
    return Response(raw, headers={"content-encoding": "gzip"}, media_type="application/json")


async def slow(request: Request) -> Response:
    await asyncio.sleep(1.0)
    return Response(b"{}", media_type="application/json")


async def status(request: Request) -> Response:
    return Response(b'{"message": "no"}', int(request.path_params["code"]))


APP = Starlette(
    routes=[
        Route("/echo", echo, methods=["GET", "POST"]),
        Route("/zipped", zipped),
        Route("/slow", slow),
        Route("/status/{code}", status),
    ]
)


@pytest.mark.parametrize("http", ["aiohttp", "wire"])
def test_the_connection_gives_httpx_answers_and_failures(http: str) -> None:
    """The same answers and failures through httpx over aiohttp and through the wire pool."""

    async def run(url: str) -> None:
        t = Transport(
            Policy(timeout=0.4, max_retries=1, retry_base=0.0, http=http), rng=random.Random(0)
        )
        if http == "aiohttp":
            assert t.client is not None
            assert type(t.client._transport).__name__ == "AiohttpTransport"
        else:
            assert t.client is None and t.wire is not None
        c = Counters()
        ua = {"User-Agent": "Mozilla/5.0 t"}
        doc = await t.request_json(
            "p", "POST", f"{url}/echo", c, params={"q": "é"}, json={"a": [1, 2]}, headers=ua
        )
        assert (doc["method"], doc["ua"], doc["n"], doc["q"]) == ("POST", "Mozilla/5.0 t", 11, "é")
        assert len(doc["pad"]) == 300_000  # a large body, whole
        assert await t.request_json("p", "GET", f"{url}/zipped", c) == {"ok": True}
        failures = []
        for path, kind in (("/slow", "timeout"), ("/status/503", "server_error"),
                           ("/status/404", "rejected")):  # fmt: skip
            try:
                await t.request_json("p", "GET", f"{url}{path}", c)
            except ProviderError as err:
                failures.append(err.kind)
            else:
                failures.append("answered")
            assert failures[-1] == kind
        try:  # nothing listens there
            await t.request_json("p", "GET", "http://127.0.0.1:9/echo", c)
        except ProviderError as err:
            assert err.kind == "transport"
        else:
            raise AssertionError("a refused connection answered")
        await t.aclose()

    with serve(APP, port=PORT) as url:
        asyncio.run(run(url))


def test_httpx_own_connection_is_still_there() -> None:
    t = Transport(Policy(http="httpx"))
    assert t.client is not None
    assert type(t.client._transport).__name__ == "AsyncHTTPTransport"
    asyncio.run(t.aclose())
