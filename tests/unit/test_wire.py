"""The wire pool (producers.providers.wire) against a real asyncio server on 127.0.0.1, whose
bytes each test writes itself: keep-alive reuse, the three ways a body is framed, a server
closing connections, the bounds and the timeout, and a 429 through the transport."""

from __future__ import annotations

import asyncio
import gzip
import random
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from producers.providers import wire
from producers.providers.base import Counters
from producers.providers.transport import Policy, ProviderError, Transport

Reader, Writer = asyncio.StreamReader, asyncio.StreamWriter
Handler = Callable[[Reader, Writer, int], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """One request: its request line, headers (lower-case names) and body; b"" at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b"", {}, b""
    line, *rest = head[:-4].split(b"\r\n")
    headers = {}
    for h in rest:
        k, _, v = h.partition(b":")
        headers[k.decode().strip().lower()] = v.decode().strip()
    n = int(headers.get("content-length", "0"))
    body = await reader.readexactly(n) if n else b""
    return line, headers, body


def answer(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Server:
    """Counts connections; ``handler(reader, writer, connection number)`` serves each one."""

    def __init__(self, handler: Handler) -> None:
        self.handler, self.connections = handler, 0
        self.server: asyncio.Server | None = None

    async def handler_for_connection(self, reader: Reader, writer: Writer) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handler_for_connection, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


async def keep_serving(reader: Reader, writer: Writer, n: int) -> None:
    """Answers every request on the connection with what it got (Content-Length)."""
    while True:
        line, headers, body = await read_request(reader)
        if not line:
            return
        doc = {"line": line.decode(), "n": len(body), "conn": n, "ua": headers.get("user-agent")}
        writer.write(answer(orjson.dumps(doc)))
        await writer.drain()


def test_one_connection_carries_sequential_requests() -> None:
    async def go() -> None:
        server = Server(keep_serving)
        async with server as url:
            pool = wire.Pool(4)
            for i in range(10):
                r = await pool.request(
                    "POST", f"{url}/x?q={i}", {"User-Agent": "t"}, b"abc", timeout=5
                )
                doc = orjson.loads(r.body)
                assert (r.status, doc["line"], doc["n"]) == (200, f"POST /x?q={i} HTTP/1.1", 3)
                assert doc["ua"] == "t"
            assert (server.connections, pool.opened) == (1, 1)
            await pool.aclose()

    run(go())


def test_bodies_by_length_chunks_and_close() -> None:
    big = orjson.dumps({"pad": "y" * 700_000})  # bigger than a read: it comes in pieces

    async def handler(reader: Reader, writer: Writer, n: int) -> None:
        while True:
            line, _, _ = await read_request(reader)
            if not line:
                return
            path = line.split()[1]
            if path == b"/length":
                writer.write(answer(big))
            elif path == b"/chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for i in range(0, len(big), 100_003):
                    part = big[i : i + 100_003]
                    writer.write(f"{len(part):x};ext=1\r\n".encode() + part + b"\r\n")
                    await writer.drain()
                writer.write(b"0\r\nX-Trailer: 1\r\n\r\n")
            elif path == b"/gzip":
                z = gzip.compress(big)
                writer.write(answer(z, extra="Content-Encoding: gzip\r\n"))
            elif path == b"/close":
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                for i in range(0, len(big), 65_536):
                    writer.write(big[i : i + 65_536])
                    await writer.drain()
                return  # the end of the connection ends the body
            await writer.drain()

    async def go() -> None:
        server = Server(handler)
        async with server as url:
            pool = wire.Pool(4)
            for path in ("/length", "/chunked", "/gzip", "/length", "/close", "/length"):
                r = await pool.request("GET", f"{url}{path}", timeout=5)
                assert (r.status, r.body) == (200, big), path
            assert server.connections == 2  # the close-delimited answer used its connection up
            await pool.aclose()

    run(go())


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def once(reader: Reader, writer: Writer, n: int) -> None:
        await read_request(reader)
        writer.write(answer(b'{"ok": 1}'))  # keep-alive by default, closed all the same
        await writer.drain()

    async def go() -> None:
        server = Server(once)
        async with server as url:
            pool = wire.Pool(4)
            for _ in range(3):
                r = await pool.request("GET", f"{url}/", timeout=5)
                assert r.body == b'{"ok": 1}'
                await asyncio.sleep(0.05)  # the close reaches the idle connection
            assert server.connections == 3
            await pool.aclose()

    run(go())


def test_a_pooled_connection_closed_as_the_request_goes_out_is_retried_once() -> None:
    """The race a pool cannot see: the server closes the kept-alive connection when the
    next request arrives, before a byte of an answer. The request goes again, on a fresh
    connection; a fresh connection that does the same is an error, not a loop."""

    async def first_only(reader: Reader, writer: Writer, n: int) -> None:
        await read_request(reader)
        writer.write(answer(orjson.dumps({"conn": n})))
        await writer.drain()
        await read_request(reader)  # the second request on this connection: hang up

    async def go() -> None:
        server = Server(first_only)
        async with server as url:
            pool = wire.Pool(4)
            docs = [orjson.loads((await pool.request("GET", f"{url}/", timeout=5)).body)]
            docs.append(orjson.loads((await pool.request("GET", f"{url}/", timeout=5)).body))
            assert [d["conn"] for d in docs] == [1, 2]
            await pool.aclose()

        async def never(reader: Reader, writer: Writer, n: int) -> None:
            await read_request(reader)

        server = Server(never)
        async with server as url:
            pool = wire.Pool(4)
            with pytest.raises(wire.WireError, match="closed before the answer"):
                await pool.request("GET", f"{url}/", timeout=5)
            assert server.connections == 1
            await pool.aclose()

    run(go())


def test_the_timeout_covers_a_trickling_body() -> None:
    async def trickle(reader: Reader, writer: Writer, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        while True:  # a byte now and then: every read makes progress, the whole never comes
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.02)

    async def go() -> None:
        async with Server(trickle) as url:
            pool = wire.Pool(4)
            with pytest.raises(wire.WireTimeout):
                await pool.request("GET", f"{url}/", timeout=0.3)
            await pool.aclose()

    run(go())


CHUNK = b"ffff\r\n" + b"z" * 65535 + b"\r\n"


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", "head over"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n", "body over"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNK * 2, "body over"),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"z" * 200_000, "body over"),
        (answer(gzip.compress(b"z" * 200_000), extra="Content-Encoding: gzip\r\n"), "inflated"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n", "Content-Length"),
        (b"SPDY/9 200 OK\r\nContent-Length: 0\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"cut":', "middle of the answer"),
    ],
)
def test_hostile_or_broken_answers_are_clear_errors(reply: bytes, error: str) -> None:
    async def hostile(reader: Reader, writer: Writer, n: int) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        await asyncio.sleep(0.01)

    async def go() -> None:
        async with Server(hostile) as url:
            pool = wire.Pool(4, max_head=16 << 10, max_body=100_000)
            with pytest.raises(wire.WireError, match=error) as caught:
                await pool.request("GET", f"{url}/", timeout=5)
            assert not isinstance(caught.value, wire.WireTimeout)
            await pool.aclose()

    run(go())


def test_the_connection_limit_holds_requests_back() -> None:
    async def go() -> None:
        server = Server(keep_serving)
        async with server as url:
            pool = wire.Pool(2)
            got = await asyncio.gather(
                *(pool.request("GET", f"{url}/", timeout=5) for _ in range(8))
            )
            assert {r.status for r in got} == {200}
            assert server.connections == 2
            await pool.aclose()

    run(go())


def test_header_injection_and_bad_urls_are_refused() -> None:
    async def go() -> None:
        pool = wire.Pool(2)
        with pytest.raises(wire.WireError, match="line break"):
            await pool.request("GET", "http://127.0.0.1:9/", {"X": "a\r\nEvil: 1"}, timeout=1)
        with pytest.raises(wire.WireError, match="not an http"):
            await pool.request("GET", "ftp://127.0.0.1/", timeout=1)
        with pytest.raises(wire.WireError, match="ConnectionRefused"):
            await pool.request("GET", "http://127.0.0.1:9/", timeout=1)

    run(go())


def test_the_transport_reads_a_429s_retry_after_and_maps_failures() -> None:
    """One request_json through Transport over the wire pool: a 429 with Retry-After pauses
    the provider for that long and is retried; the answer after it comes back decoded; a
    broken exchange is ``transport``, a slow one ``timeout``."""
    sleeps: list[float] = []
    now = [100.0]

    async def fake_sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    async def handler(reader: Reader, writer: Writer, n: int) -> None:
        k = 0
        while True:
            line, headers, body = await read_request(reader)
            if not line:
                return
            k += 1
            if b"/broken" in line:
                writer.write(b"HTTP/1.1 OK\r\n\r\n")
            elif b"/slow" in line:
                await asyncio.sleep(5)
            elif k == 1:
                writer.write(answer(b'{"message": "slow down"}', "429 Too Many Requests",
                                    "Retry-After: 7\r\n"))  # fmt: skip
            else:
                doc = {
                    "line": line.decode(),
                    "body": orjson.loads(body),
                    "ct": headers["content-type"],
                }
                writer.write(answer(orjson.dumps(doc)))
            await writer.drain()

    async def go() -> None:
        async with Server(handler) as url:
            t = Transport(
                Policy(timeout=0.3, max_retries=2, retry_base=0.0, http="wire"),
                sleep=fake_sleep,
                rng=random.Random(0),
                clock=lambda: now[0],
            )
            assert t.wire is not None and t.client is None
            c = Counters()
            doc = await t.request_json(
                "p", "POST", f"{url}/s", c, params={"q": "é", "on": True}, json={"a": 1}
            )
            assert doc == {
                "line": "POST /s?q=%C3%A9&on=true HTTP/1.1",
                "body": {"a": 1},
                "ct": "application/json",
            }
            assert (c.requests, c.retries) == (2, 1)
            assert sleeps == [7.0]
            assert t.lane("p").paused_until == 107.0
            for path, kind in (("/broken", "transport"), ("/slow", "timeout")):
                with pytest.raises(ProviderError) as err:
                    await t.request_json("q", "GET", f"{url}{path}", c)
                assert err.value.kind == kind
            await t.aclose()

    run(go())


def test_https_through_asyncio_ssl(tmp_path: Path) -> None:
    """An https URL goes through TLS (certificates verified): with the test CA trusted the
    answer comes back on a kept-alive connection; with the default trust it is refused."""
    from tests.integration.test_kafka_tls import make_ca, make_server_pem

    ca_key, ca = make_ca(tmp_path, "wire test CA")
    make_server_pem(tmp_path, ca_key, ca)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "server.pem")
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))

    async def go() -> None:
        server = Server(keep_serving)
        tls = await asyncio.start_server(
            server.handler_for_connection, "127.0.0.1", 0, ssl=server_ctx
        )
        port = tls.sockets[0].getsockname()[1]
        pool = wire.Pool(4, ssl_context=client_ctx)
        for _ in range(3):
            r = await pool.request("GET", f"https://127.0.0.1:{port}/t", timeout=5)
            assert orjson.loads(r.body)["line"] == "GET /t HTTP/1.1"
        assert server.connections == 1
        await pool.aclose()
        with pytest.raises(wire.WireError, match="CERTIFICATE_VERIFY_FAILED"):
            await wire.Pool(4).request("GET", f"https://127.0.0.1:{port}/t", timeout=5)
        tls.close()

    run(go())
