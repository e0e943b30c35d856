"""A small keep-alive HTTP/1.1 client for the provider requests (``providers.http = "wire"``).

The provider clients send a few kinds of request, again and again, to a few hosts, and read
large JSON answers (a Resy search page is about 360 KB). Through ``httpx`` over aiohttp each
answer cost about 0.8 ms of CPU before its first byte was decoded; this client does what the
transport needs and nothing more:

- a pool of keep-alive connections per ``(scheme, host, port)``, at most ``connections`` of
  them at once (a request waits for one), idle ones closed after ``keepalive_s``;
- requests with a ``Content-Length`` body (never chunked, never pipelined);
- answers framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or the end of the
  connection; a body with a known length is read straight into its final buffer
  (``asyncio.BufferedProtocol``: the socket fills the bytearray, no copies on the way);
  ``gzip`` / ``deflate`` bodies are inflated (bounded as well);
- a bounded head (``max_head`` bytes) and a bounded body (``max_body`` bytes): a provider
  that sends more gets a :class:`WireError` saying so, never our memory;
- one timeout over the whole exchange (waiting for a connection, connecting, sending,
  reading the head and the whole body): :class:`WireTimeout`;
- a pooled connection the server closed while it was idle is noticed (and dropped) before
  reuse, and if the server closes it as the request goes out (nothing of an answer read), the
  request is sent once more on a fresh connection;
- ``https`` through asyncio's ssl with the default context (certificates verified).

What comes back is a :class:`Response`: status, headers (names in lower case) and the body
bytes. Every failure of the exchange is a :class:`WireError` (its subclass
:class:`WireTimeout` for the timeout); the transport names them ``transport`` / ``timeout``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from typing import Any
from urllib.parse import quote, urlsplit

from drops.errors import DropsError

MAX_HEAD = 64 << 10  # bytes of status line and headers
MAX_BODY = 64 << 20  # bytes of body (after inflating)
SCRATCH = 256 << 10  # read size for chunked and close-delimited bodies
HEAD_READ = 8 << 10  # read size while the head is awaited: the body's bytes go to its buffer
KEEP_STORE = 4 << 20  # a connection keeps its body buffer for the next answer up to this size
MAX_CHUNK_LINE = 4096

_IDLE, _HEAD, _LENGTH, _CHUNKED, _CLOSE = range(5)
_NO_BODY = frozenset((204, 304))


class WireError(DropsError):
    """An exchange that broke: refused, cut short, malformed or over a bound."""


class WireTimeout(WireError):
    """No whole answer within the request's timeout."""


class _Stale(WireError):
    """The connection closed before any byte of the answer: a reused one may be retried."""


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def __repr__(self) -> str:
        return f"Response({self.status}, {len(self.body)} bytes)"


class _Conn(asyncio.BufferedProtocol):
    """One connection: a request goes out, its answer is parsed as the bytes arrive."""

    def __init__(self, max_head: int, max_body: int) -> None:
        self.max_head, self.max_body = max_head, max_body
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self._scratch = bytearray(SCRATCH)
        self._scratch_view = memoryview(self._scratch)
        self._buf = bytearray()  # bytes not yet parsed (head, chunked, close-delimited)
        self._mode = _IDLE
        self._waiter: asyncio.Future[Response] | None = None
        self._received = False
        self._no_body = False
        self._status = 0
        self._headers: dict[str, str] = {}
        self._head_view = self._scratch_view[:HEAD_READ]
        self._body = bytearray()  # a chunked body, as its chunks come
        self._store = bytearray()  # a Content-Length body is read into this, in place
        self._view = memoryview(self._store)  # ... through this window of its length
        self._got = 0
        self._chunk_left = -1  # -1: a chunk-size line is next; -2: the trailers are next

    # -------------------------------------------------------------- asyncio's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        mode = self._mode
        if mode == _LENGTH:
            return self._view[self._got :]
        return self._head_view if mode == _HEAD else self._scratch_view

    def buffer_updated(self, nbytes: int) -> None:
        self._received = True
        mode = self._mode
        if mode == _LENGTH:
            self._got += nbytes
            if self._got == len(self._view):
                self._finish(bytes(self._view))
            return
        if mode == _IDLE:  # bytes nobody asked for: the connection is not ours to reuse
            self.reusable = False
            self.close()
            return
        self._buf += self._scratch_view[:nbytes]
        try:
            self._parse()
        except WireError as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself; connection_lost does the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        mode = self._mode
        if mode == _IDLE:
            return
        if mode == _CLOSE:
            self._finish(bytes(self._buf))
            return
        why = f": {exc}" if exc is not None else ""
        if not self._received:
            self._fail(_Stale(f"connection closed before the answer{why}"))
        else:
            self._fail(WireError(f"connection closed in the middle of the answer{why}"))

    # -------------------------------------------------------------- our side

    def close(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    async def exchange(self, data: bytes, no_body: bool) -> Response:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise _Stale("connection closed while idle")
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter, self._received, self._no_body = waiter, False, no_body
        self._mode = _HEAD
        self.transport.write(data)
        return await waiter

    def _finish(self, body: bytes) -> None:
        self._mode = _IDLE
        self._body = bytearray()
        self._view.release()
        self._buf.clear()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, self._headers, body))

    def _fail(self, exc: WireError) -> None:
        self._mode = _IDLE
        self.reusable = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def _parse(self) -> None:
        mode = self._mode
        if mode == _HEAD:
            self._parse_head()
        elif mode == _CHUNKED:
            self._parse_chunks()
        elif mode == _CLOSE and len(self._buf) > self.max_body:
            raise WireError(f"response body over {self.max_body} bytes")

    def _parse_head(self) -> None:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n\r\n", 0, self.max_head + 4)
            if end < 0:
                if len(buf) > self.max_head:
                    raise WireError(f"response head over {self.max_head} bytes")
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            status, headers, keep = _head(head)
            if 100 <= status < 200:  # 100 Continue and friends: the real answer follows
                continue
            break
        self._status, self._headers = status, headers
        if not keep:
            self.reusable = False
        if self._no_body or status in _NO_BODY:
            self._finish(b"")
            return
        te = headers.get("transfer-encoding")
        if te is not None:
            if te.lower().rsplit(",", 1)[-1].strip() != "chunked":
                self.reusable = False
                self._mode = _CLOSE
                self._parse()
                return
            self._mode, self._chunk_left = _CHUNKED, -1
            self._body = bytearray()
            self._parse_chunks()
            return
        cl = headers.get("content-length")
        if cl is None:
            self.reusable = False
            self._mode = _CLOSE
            self._parse()
            return
        if not cl.isdigit():
            raise WireError(f"bad Content-Length {cl[:40]!r}")
        n = int(cl)
        if n > self.max_body:
            raise WireError(f"response body over {self.max_body} bytes (Content-Length {n})")
        if len(buf) >= n:
            if len(buf) > n:  # more than the answer: nothing we can reuse
                self.reusable = False
            body = bytes(buf[:n])
            self._finish(body)
            return
        if len(self._store) < n or len(self._store) > KEEP_STORE:
            self._store = bytearray(n)  # else the last answer's buffer, overwritten
        self._view = memoryview(self._store)[:n]
        self._got = len(buf)
        self._view[: self._got] = buf
        buf.clear()
        self._mode = _LENGTH

    def _parse_chunks(self) -> None:
        buf, body = self._buf, self._body
        while True:
            left = self._chunk_left
            if left == -1:  # a chunk-size line
                eol = buf.find(b"\r\n", 0, MAX_CHUNK_LINE)
                if eol < 0:
                    if len(buf) > MAX_CHUNK_LINE:
                        raise WireError("chunk size line too long")
                    return
                size_text = bytes(buf[:eol]).split(b";", 1)[0].strip()
                del buf[: eol + 2]
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise WireError(f"bad chunk size {size_text[:20]!r}") from None
                if size < 0:
                    raise WireError("bad chunk size")
                if size == 0:
                    self._chunk_left = -2
                    continue
                if len(body) + size > self.max_body:
                    raise WireError(f"response body over {self.max_body} bytes")
                self._chunk_left = size
            elif left == -2:  # trailers, ended by an empty line
                if buf[:2] == b"\r\n":
                    self._finish(bytes(body))
                    return
                end = buf.find(b"\r\n\r\n", 0, self.max_head + 4)
                if end < 0:
                    if len(buf) > self.max_head:
                        raise WireError(f"response trailers over {self.max_head} bytes")
                    return
                self._finish(bytes(body))
                return
            else:
                if len(buf) < left + 2:
                    if len(buf) > left:  # the data is whole, its CRLF not yet
                        return
                    body += buf
                    self._chunk_left = left - len(buf)  # 0: only the CRLF is to come
                    buf.clear()
                    return
                body += buf[:left]
                if buf[left : left + 2] != b"\r\n":
                    raise WireError("chunk not followed by CRLF")
                del buf[: left + 2]
                self._chunk_left = -1


def _head(head: bytes) -> tuple[int, dict[str, str], bool]:
    """Status, headers (lower-case names) and whether the connection stays open."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    version = parts[0]
    if (
        len(parts) < 2
        or version not in (b"HTTP/1.1", b"HTTP/1.0")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise WireError(f"malformed status line {lines[0][:60]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1:] in (b" ", b"\t") or name[:1] in (b" ", b"\t"):
            raise WireError(f"malformed header line {line[:60]!r}")
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        old = headers.get(key)
        headers[key] = text if old is None else f"{old}, {text}"
    conn = headers.get("connection", "").lower()
    keep = "close" not in conn if version == b"HTTP/1.1" else "keep-alive" in conn
    return status, headers, keep


def _inflate(body: bytes, encoding: str, max_body: int) -> bytes:
    coding = encoding.strip().lower()
    if coding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif coding == "deflate":
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
    else:
        return body  # identity, or a coding we never asked for: as it came
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, max_body + 1)
    except zlib.error as exc:
        raise WireError(f"bad {coding} body: {exc}") from None
    if len(out) > max_body or d.unconsumed_tail:
        raise WireError(f"response body over {max_body} bytes once inflated")
    return out


def query_string(params: dict[str, Any]) -> str:
    """``params`` as a query, values written as httpx writes them (true/false, "" for None)."""
    out = []
    for key, value in params.items():
        if value is True:
            text = "true"
        elif value is False:
            text = "false"
        elif value is None:
            text = ""
        else:
            text = str(value)
        out.append(f"{quote(str(key), safe='')}={quote(text, safe='')}")
    return "&".join(out)


class _Target:
    __slots__ = ("host", "host_header", "key", "path", "port", "tls")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WireError(f"not an http(s) URL: {url[:80]!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise WireError(f"bad port in {url[:80]!r}") from None
        self.port = port or (443 if self.tls else 80)
        self.key = (parts.scheme, self.host, self.port)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default else f"{host}:{self.port}"


class Pool:
    """Keep-alive connections per ``(scheme, host, port)``; see the module's text."""

    def __init__(
        self,
        connections: int = 16,
        *,
        keepalive_s: float = 60.0,
        max_head: int = MAX_HEAD,
        max_body: int = MAX_BODY,
        ssl_context: ssl.SSLContext | None = None,
        accept_encoding: str = "gzip, deflate",
        clock: Any = time.monotonic,
    ) -> None:
        self.connections = max(connections, 1)
        self.keepalive_s, self.max_head, self.max_body = keepalive_s, max_head, max_body
        self.accept_encoding = accept_encoding
        self._ssl = ssl_context
        self._clock = clock
        self._idle: dict[tuple[str, str, int], deque[_Conn]] = {}
        self._limits: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._targets: dict[str, _Target] = {}
        self.opened = 0  # connections made (the tests count reuse with it)

    def _target(self, url: str) -> _Target:
        t = self._targets.get(url)
        if t is None:
            t = _Target(url)
            if len(self._targets) < 1024:
                self._targets[url] = t
        return t

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> Response:
        target = self._target(url)
        data = self._render(method, target, headers, body)
        try:
            async with asyncio.timeout(timeout):
                resp = await self._exchange(target, data, method == "HEAD")
        except TimeoutError:
            raise WireTimeout(f"no whole answer within {timeout:g} s") from None
        except WireError:
            raise
        except OSError as exc:  # refused, reset, unreachable, TLS
            raise WireError(f"{type(exc).__name__}: {exc}") from None
        encoding = resp.headers.get("content-encoding")
        if encoding is not None and resp.body:
            resp.body = _inflate(resp.body, encoding, self.max_body)
        return resp

    def _render(
        self, method: str, target: _Target, headers: dict[str, str] | None, body: bytes | None
    ) -> bytes:
        given = {k.lower(): (k, v) for k, v in (headers or {}).items()}
        lines = [f"{method} {target.path} HTTP/1.1", f"Host: {target.host_header}"]
        for name, default in (
            ("accept", "*/*"),
            ("accept-encoding", self.accept_encoding),
            ("connection", "keep-alive"),
        ):
            if name not in given and default:
                lines.append(f"{name.title()}: {default}")
        for lower, (name, value) in given.items():
            if lower in ("host", "content-length", "transfer-encoding"):
                continue
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise WireError("a header name or value holds a line break")
            lines.append(f"{name}: {value}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        if any(c in target.path for c in " \r\n"):
            raise WireError("a request target holds a space or a line break")
        try:
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            raise WireError("a header that is not latin-1") from None
        return head + body if body else head

    async def _exchange(self, target: _Target, data: bytes, no_body: bool) -> Response:
        limit = self._limits.get(target.key)
        if limit is None:
            limit = self._limits[target.key] = asyncio.Semaphore(self.connections)
        async with limit:
            for attempt in (0, 1):
                conn = self._pooled(target.key)
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(target)
                try:
                    resp = await conn.exchange(data, no_body)
                except _Stale as exc:
                    conn.abort()
                    if reused and attempt == 0:
                        continue  # closed by the server while idle: once more, afresh
                    raise WireError(str(exc)) from None
                except BaseException:
                    conn.abort()
                    raise
                if conn.reusable and not conn.closed:
                    conn.idle_since = self._clock()
                    self._idle.setdefault(target.key, deque()).append(conn)
                else:
                    conn.close()
                return resp
        raise WireError("no connection answered")  # not reached: the second attempt raises

    def _pooled(self, key: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest_ok = self._clock() - self.keepalive_s
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be stale
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if conn.idle_since < oldest_ok:
                conn.close()
                continue
            return conn
        return None

    async def _connect(self, target: _Target) -> _Conn:
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if target.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        _, conn = await loop.create_connection(
            lambda: _Conn(self.max_head, self.max_body),
            target.host,
            target.port,
            ssl=ctx,
            server_hostname=target.host if ctx is not None else None,
        )
        self.opened += 1
        return conn

    async def aclose(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports close
