"""The HTTP path to the providers: one connection pool for every request (this project's own
keep-alive HTTP/1.1 client, :mod:`producers.providers.wire`, unless ``providers.http`` asks for
httpx over aiohttp or httpx's own connections, or a test passes an ``httpx.AsyncClient``), and per
provider a concurrency limit, a request-rate limit, a circuit breaker and a shared
``Retry-After`` pause. Every request has a timeout; failed attempts are retried with full
jitter (``sleep = uniform(0, min(cap, base · 2^attempt))``), and a 429's ``Retry-After`` is
honoured (the whole provider pauses that long) unless it is longer than ``retry_after_max``.

What comes out is the decoded answer or a :class:`ProviderError` naming the failure: the callers
turn it into a :class:`~schemas.Failure`, never into an empty answer. A client may pass a typed
decoder (``decode``, e.g. msgspec Structs naming only the fields it reads); a body the decoder
does not take (it returns ``None``) is parsed as plain JSON, so the client's lenient reading
decides, and a body that is not JSON at all stays ``malformed``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from drops.errors import DropsError, InvariantError
from drops.runtime import full_jitter
from producers.config import ConfigError
from producers.providers import wire
from producers.providers.base import Counters
from producers.providers.http import AiohttpTransport

Sleep = Callable[[float], Awaitable[None]]
Decode = Callable[[bytes], Any]  # a typed reading of a body: the answer, or None to parse JSON


class ProviderError(DropsError):
    """A request that did not give a usable answer (after retries, when retryable)."""

    def __init__(self, kind: str, detail: str = "", retryable: bool = True) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind, self.detail, self.retryable = kind, detail, retryable
        self.retry_after: float | None = None


class Invalid(DropsError):
    """Raised by a response validator: the body parsed but is not a whole answer."""


@dataclass(frozen=True, slots=True)
class Policy:
    timeout: float = 12.0
    max_retries: int = 3
    retry_base: float = 0.25
    retry_max_delay: float = 8.0
    retry_after_max: float = 30.0
    concurrency: int = 8
    rate_limit: float = 0.0  # requests/s per provider, 0 = none
    breaker_failures: int = 20
    breaker_reset: float = 30.0
    http: str = "wire"  # "wire" (our own client), or httpx over "aiohttp" or "httpx" (its own)


def backoff(attempt: int, policy: Policy, rng: random.Random) -> float:
    """Full jitter: a uniform delay in ``[0, min(cap, base · 2^attempt)]``."""
    return full_jitter(attempt, policy.retry_base, policy.retry_max_delay, rng)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


@dataclass(slots=True)
class Breaker:
    """Opens after ``threshold`` failed attempts in a row; lets a trial through after ``reset``."""

    threshold: int
    reset: float
    failures: int = 0
    opened_at: float | None = None

    def allow(self, now: float) -> bool:
        return self.opened_at is None or now - self.opened_at >= self.reset

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = now

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None


class Gate:
    """A concurrency limit that can change while requests wait (a replica's share of the
    fleet's budget follows the group's membership).

    Waiters are let in one at a time in arrival order, as by an ``asyncio.Semaphore``: a
    release wakes one waiter, never all of them. (A cycle queues every page of every bucket
    at once, 14,000 requests at 50,000 venues; waking them all at each release made the
    waiting cost more CPU than reading the pages.)"""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 1)
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        if self.used < self.limit and not self._waiters:
            self.used += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # _wake counts this request in before it resolves the future
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # let in, then cancelled: give it back
                self.used -= 1
                self._wake()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.used -= 1
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while self.used < self.limit and waiters:
            fut = waiters.popleft()
            if not fut.done():  # a cancelled waiter is skipped
                self.used += 1
                fut.set_result(None)

    async def resize(self, limit: int) -> None:
        self.limit = max(limit, 1)
        self._wake()


@dataclass(slots=True)
class Lane:
    """One provider's limits, shared by all its requests."""

    semaphore: Gate
    breaker: Breaker
    rate: float
    next_slot: float = 0.0
    paused_until: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Transport:
    def __init__(
        self,
        policy: Policy,
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        connections: int | None = None,
    ) -> None:
        self.policy = policy
        if policy.http not in ("wire", "aiohttp", "httpx"):
            raise ConfigError(f"provider_http is wire, aiohttp or httpx, not {policy.http!r}")
        pool = max(connections or policy.concurrency * 2, 10)  # kept alive: no reconnects
        self.wire: wire.Pool | None = None
        self.client: httpx.AsyncClient | None = client
        if client is None and policy.http == "wire":
            self.wire = wire.Pool(pool)
        elif client is None:
            limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
            self.client = httpx.AsyncClient(
                timeout=httpx.Timeout(policy.timeout),
                limits=limits,
                http2=False,
                transport=AiohttpTransport(pool) if policy.http == "aiohttp" else None,
            )
        self._sleep, self._rng, self._clock = sleep, rng or random.Random(), clock
        self._lanes: dict[str, Lane] = {}
        self._limits: dict[str, tuple[int, float]] = {}
        self._share = 1.0  # this replica's part of each provider's budget
        self._secrets: set[str] = set()

    def secret(self, value: str) -> None:
        """A credential sent by some client: scrubbed from every error text we make (an
        answer that echoes it must not carry it into a log line or a snapshot record)."""
        if len(value) >= 4:
            self._secrets.add(value)

    def scrub(self, text: str) -> str:
        for value in self._secrets:
            text = text.replace(value, "***")
        return text

    def configure(self, provider: str, concurrency: int, rate_limit: float) -> None:
        """A provider's own limits (else the policy's), before its first request."""
        self._limits[provider] = (max(concurrency, 1), max(rate_limit, 0.0))

    def lane(self, provider: str) -> Lane:
        lane = self._lanes.get(provider)
        if lane is None:
            conc, rate = self._limits.get(
                provider, (self.policy.concurrency, self.policy.rate_limit)
            )
            lane = Lane(
                semaphore=Gate(_part(conc, self._share)),
                breaker=Breaker(self.policy.breaker_failures, self.policy.breaker_reset),
                rate=rate * self._share,
            )
            self._lanes[provider] = lane
        return lane

    async def share(self, fraction: float) -> None:
        """Take ``fraction`` (0 < f <= 1) of every provider's concurrency and rate limits: a
        provider's limits are budgets for the whole producer fleet, split between the live
        replicas in proportion to the streams each polls (:mod:`producers.fleet`)."""
        self._share = min(max(fraction, 1e-6), 1.0)
        for provider, lane in self._lanes.items():
            conc, rate = self._limits.get(
                provider, (self.policy.concurrency, self.policy.rate_limit)
            )
            lane.rate = rate * self._share
            await lane.semaphore.resize(_part(conc, self._share))

    def breaker_open(self, provider: str) -> bool:
        return self.lane(provider).breaker.is_open

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        if self.wire is not None:
            await self.wire.aclose()

    async def _pace(self, lane: Lane) -> None:
        """Wait for the provider's Retry-After pause and its request-rate slot."""
        async with lane.lock:
            now = self._clock()
            start = max(now, lane.paused_until)
            if lane.rate > 0:
                start = max(start, lane.next_slot)
                lane.next_slot = start + 1.0 / lane.rate
        if start > now:
            await self._sleep(start - now)

    async def request_json(
        self,
        provider: str,
        method: str,
        url: str,
        counters: Counters,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        validate: Callable[[Any], object] | None = None,
        decode: Decode | None = None,
    ) -> Any:
        lane = self.lane(provider)
        policy = self.policy
        content = orjson.dumps(json) if json is not None else None
        hdrs = dict(headers or {})
        if content is not None:
            hdrs.setdefault("Content-Type", "application/json")
        if self.wire is not None and params:
            url = f"{url}{'&' if '?' in url else '?'}{wire.query_string(params)}"
        last: ProviderError | None = None
        for attempt in range(policy.max_retries + 1):
            if attempt:
                delay = backoff(attempt - 1, policy, self._rng)
                if last is not None and last.retry_after is not None:
                    delay = max(delay, last.retry_after)
                counters.retries += 1
                await self._sleep(delay)
            if not lane.breaker.allow(self._clock()):
                raise ProviderError("circuit_open", f"{provider} breaker is open", False)
            await self._pace(lane)
            try:
                if self.wire is not None:
                    async with lane.semaphore:
                        counters.requests += 1
                        answer = await self.wire.request(method, url, hdrs, content, policy.timeout)
                    status, body = answer.status, answer.body
                    got: Mapping[str, str] = answer.headers
                elif self.client is not None:
                    async with lane.semaphore:
                        counters.requests += 1
                        resp = await self.client.request(
                            method, url, params=params, content=content, headers=hdrs,
                            timeout=policy.timeout,
                        )  # fmt: skip
                    status, got, body = resp.status_code, resp.headers, resp.content
                else:
                    raise InvariantError("a transport with neither a pool nor a client")
                doc = self._check(status, got, body, lane, validate, decode)
            except ProviderError as err:
                last = err
                if self._secrets:
                    last.detail = self.scrub(last.detail)
                    last.args = (self.scrub(str(last)),)
            except wire.WireTimeout as exc:
                last = ProviderError("timeout", str(exc))
            except wire.WireError as exc:
                last = ProviderError("transport", self.scrub(f"{type(exc).__name__}: {exc}"))
            except httpx.TimeoutException as exc:
                last = ProviderError("timeout", type(exc).__name__)
            except httpx.HTTPError as exc:
                last = ProviderError("transport", self.scrub(f"{type(exc).__name__}: {exc}"))
            else:
                lane.breaker.success()
                return doc
            lane.breaker.failure(self._clock())
            if not last.retryable:
                break
        if last is None:
            raise InvariantError("a request loop that made no attempt")
        raise last

    def _check(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        lane: Lane,
        validate: Callable[[Any], object] | None,
        decode: Decode | None = None,
    ) -> Any:
        """An answer's status, headers (``retry-after`` read case-insensitively: httpx's are,
        and the wire pool's names are lower case) and body, as a document or an error."""
        if status == 429:
            err = ProviderError("throttled", "429")
            ra = parse_retry_after(headers.get("retry-after"))
            if ra is not None:
                if ra > self.policy.retry_after_max:
                    err = ProviderError("throttled", f"429, Retry-After {ra:g}s is too long", False)
                else:
                    err.retry_after = ra
                    lane.paused_until = max(lane.paused_until, self._clock() + ra)
            raise err
        if status == 403:
            raise ProviderError("blocked", "403")
        if status >= 500:
            raise ProviderError("server_error", str(status))
        if status >= 400:  # 400, 401, 404, 419: our request or key is wrong; retrying won't help
            text = body[:800].decode("utf-8", "replace")[:200]
            raise ProviderError("rejected", f"{status} {text}", False)
        doc = None if decode is None else decode(body)
        if doc is None:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise ProviderError("malformed", f"not JSON: {exc}") from None
        if validate is not None:
            try:
                validate(doc)
            except Invalid as exc:
                raise ProviderError("invalid", str(exc)) from None
        return doc


def _part(concurrency: int, share: float) -> int:
    """A replica's requests in flight: its share of the budget, rounded down, at least one."""
    return max(1, int(concurrency * share + 1e-9))
