"""The delivery worker: sends each alert to each of its channels, once, and logs the outcome.

alerts topic (read_committed) → per channel: a signed webhook of ours (:func:`signed_request`)
or Apprise (ntfy, Discord, Telegram, Slack, email, Pushover, json://, ...) → one
:class:`schemas.watches.Delivery` record per (alert, channel) on the deliveries topic (the
delivery log; the sink copies it to ClickHouse ``alert_deliveries``), and the alert on the
dead-letter topic when its last attempt failed.

- **Retries**: up to ``DROPS_DELIVERY__ATTEMPTS`` attempts with full-jitter backoff
  (``DROPS_DELIVERY__BACKOFF`` doubling, capped at ``DROPS_DELIVERY__BACKOFF_MAX``); a webhook's
  ``Retry-After`` is honoured up to the cap. A 4xx other than 408/429 is final at once.
- **Rate limit**: a token bucket per channel (scheme, host and path), ``DROPS_DELIVERY__RATE``
  sends a second with a burst of 10, so one busy watch cannot flood a receiver.
- **Once**: the worker's own log is the record of what was sent. At start it reads the
  deliveries topic to its end, and it never sends an (alert, channel) that has a record there.
  A record is written (acks=all, flushed) as soon as its channel answered, and the consumer
  offset of an alert is committed only after all its channels have records; so a restart
  re-sends only a send that was under way when the worker died (for a webhook that had
  answered 2xx: only in the instant between the answer and the record; the idempotency key
  lets the receiver drop that one).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import random
import signal
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import apprise
import httpx
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from drops import kafka
from drops.errors import DropsError, InvariantError
from drops.log import Heartbeat, get_log
from drops.metrics import Readings, registry, serve
from drops.runtime import full_jitter
from drops.stages import DeliverySettings
from drops.topics import check_topics
from schemas import SchemaError
from schemas.watches import Alert, Channel, Delivery, decode_alert, decode_delivery, encode_record

log = get_log("delivery")

SIGNATURE_HEADER = "X-Drops-Signature"
TIMESTAMP_HEADER = "X-Drops-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
BURST = 10.0
SESSION_TIMEOUT_MS = 10_000  # a killed replica's partitions go to the others after this


def webhook_body(alert: Alert) -> bytes:
    """What a webhook receives: the alert without its channels and secret."""
    return orjson.dumps(alert.model_dump(mode="json", exclude={"channels", "secret"}))


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with the watch's secret over ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str, headers: dict[str, str], body: bytes, now: float, tolerance: float = 300
) -> bool:
    """What a receiver checks: the signature, and a timestamp within ``tolerance`` seconds."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        ts = int(lower.get(TIMESTAMP_HEADER.lower(), ""))
    except ValueError:
        return False
    good = sign(secret, ts, body)
    return abs(now - ts) <= tolerance and hmac.compare_digest(
        good, lower.get(SIGNATURE_HEADER.lower(), "")
    )


def signed_request(alert: Alert, now: float) -> tuple[bytes, dict[str, str]]:
    body = webhook_body(alert)
    ts = int(now)
    return body, {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign(alert.secret, ts, body),
        IDEMPOTENCY_HEADER: alert.alert_id,
        "User-Agent": "discovery-drops-alerts/1",
    }


def target(ch: Channel) -> str:
    """A channel's scheme, host and path: its rate-limit key and its name in the log (the
    query and any credentials in the URL are left out)."""
    u = urlsplit(ch.url)
    try:
        port = f":{u.port}" if u.port else ""
    except ValueError:
        port = ""
    return f"{u.scheme}://{u.hostname or ''}{port}{u.path}"


# Apprise channels that are plain HTTP posts and take extra request headers from the URL
# (``+Name=value`` in the query: Apprise's json, form and xml plugins, and the Apprise API):
# they carry the alert id as the idempotency key, like our signed webhooks.
HEADER_SCHEMES = frozenset({"json", "jsons", "form", "forms", "xml", "xmls", "apprise", "apprises"})


def apprise_url(url: str, alert_id: str) -> str:
    """The channel's Apprise URL, with the idempotency key as a request header where the
    channel can carry one (:data:`HEADER_SCHEMES`); other channels' URLs are unchanged."""
    if url.split("://", 1)[0].lower() not in HEADER_SCHEMES:
        return url
    # the query as Apprise reads it: everything after the first "?" ("#" included), and a
    # literal "+" starts a header name (no form decoding)
    base, _, query = url.partition("?")
    ours = "+" + IDEMPOTENCY_HEADER.lower()
    kept = [p for p in query.split("&") if p and unquote(p.split("=", 1)[0]).lower() != ours]
    kept.append(f"+{IDEMPOTENCY_HEADER}={quote(alert_id, safe='')}")
    return base + "?" + "&".join(kept)


class TokenBucket:
    def __init__(self, rate: float, burst: float = BURST) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()

    async def take(self) -> None:
        if self.rate <= 0:
            return
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


class Failed(DropsError):
    """A send that did not succeed (``final``: retrying will not help)."""

    def __init__(self, error: str, final: bool = False, retry_after: float | None = None) -> None:
        super().__init__(error)
        self.final, self.retry_after = final, retry_after


@dataclass
class Totals:
    delivered: int = 0
    dead: int = 0
    retries: int = 0
    skipped: int = 0
    alerts: int = 0
    handovers: int = 0


class Revoked(DropsError):
    """A send not begun because its alert's partition is being handed to another replica
    (nothing sent, nothing logged: the new owner sends it)."""


class SentLog:
    """What the delivery log says was sent: (alert id, channel) → the record's ``at_ms``.

    Read from the deliveries topic (assign only, never committed) and kept tailing it: at
    start from the records of the last ``keep_ms`` on (``offsets_for_times``), and to its end
    again whenever partitions of the alerts topic are assigned to this replica, so what
    another replica logged before it gave them up is known before any of them is handled.
    Entries older than ``keep_ms`` (by the records' own ``at_ms``, the worker's clock that
    wrote them) are trimmed: an alert is read again only until its offset is committed, a
    span of the longest retries (attempts × the longest pause), far below ``keep_ms``."""

    def __init__(self, settings: DeliverySettings, keep_ms: int) -> None:
        self.topic = settings.topics.deliveries
        self.keep_ms = keep_ms
        self.sent: dict[tuple[str, int], int] = {}
        self.trimmed = 0
        self.consumer = kafka.consumer(
            settings,
            {
                "group.id": f"{settings.delivery.group}-log",  # assign only: never commits
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
        c = self.consumer
        self.parts = sorted(c.list_topics(self.topic, timeout=10).topics[self.topic].partitions)
        since = int(time.time() * 1000) - keep_ms
        starts = c.offsets_for_times(
            [TopicPartition(self.topic, p, max(0, since)) for p in self.parts], timeout=10
        )
        self.pos: dict[int, int] = {}
        for tp in starts:
            if tp.offset < 0:  # every record is older: start at the end
                tp.offset = c.get_watermark_offsets(tp, timeout=10)[1]
            self.pos[tp.partition] = tp.offset
        c.assign([TopicPartition(self.topic, p, self.pos[p]) for p in self.parts])

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self.sent

    def __len__(self) -> int:
        return len(self.sent)

    def add(self, alert_id: str, channel: int, at_ms: int) -> None:
        self.sent[(alert_id, channel)] = at_ms

    def sync(self, timeout: float = 120.0) -> None:
        """Read the log up to its end offsets as of now, then trim."""
        c = self.consumer
        ends = {
            p: c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10, cached=False)[1]
            for p in self.parts
        }
        deadline = time.monotonic() + timeout
        while any(self.pos[p] < ends[p] for p in self.parts) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    self.pos[m.partition()] = max(self.pos[m.partition()], m.offset())
                continue
            self.pos[m.partition()] = m.offset() + 1
            try:
                d = decode_delivery(m.value())
            except SchemaError:
                continue
            self.add(d.alert_id, d.channel, d.at_ms)
        if any(self.pos[p] < ends[p] for p in self.parts):
            raise TimeoutError("the delivery log was not read to its end")
        self.trim(int(time.time() * 1000))

    def trim(self, now_ms: int) -> None:
        floor = now_ms - self.keep_ms
        old = [k for k, at in self.sent.items() if at < floor]
        for k in old:
            del self.sent[k]
        self.trimmed += len(old)

    def close(self) -> None:
        self.consumer.close()


class Worker:
    def __init__(self, settings: DeliverySettings) -> None:
        self.s = settings
        self.rng = random.Random()
        self.log: SentLog | None = None  # opened by run()
        self.revoking = False  # partitions are being handed over: begin no new send
        self.revoked: asyncio.Event | None = None  # set with ``revoking`` (wakes pauses)
        self.buckets: dict[str, TokenBucket] = {}
        self.totals = Totals()
        self.heartbeat = Heartbeat(
            log, "delivery_heartbeat", every=settings.processor.heartbeat_interval
        )
        self.producer = kafka.producer(
            settings,
            {
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
            },
        )
        self.http: httpx.AsyncClient | None = None

    # -- the log of what was sent ------------------------------------------------------------

    def _write(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        errors: list[Any] = []
        self.producer.produce(
            topic,
            key=key,
            value=value,
            headers=headers,
            on_delivery=lambda err, msg: errors.append(err) if err is not None else None,
        )
        left = self.producer.flush(30)
        if left or errors:
            raise RuntimeError(f"delivery log not written: {errors or 'timeout'}")

    # -- sending -----------------------------------------------------------------------------

    async def _send_once(self, alert: Alert, ch: Channel) -> None:
        if ch.type == "webhook":
            if self.http is None:
                raise InvariantError("webhook send before the worker's HTTP client was made")
            body, headers = signed_request(alert, time.time())
            try:
                r = await self.http.post(ch.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                raise Failed(f"{type(exc).__name__}: {exc}"[:300]) from None
            if 200 <= r.status_code < 300:
                return
            final = 400 <= r.status_code < 500 and r.status_code not in (408, 429)
            ra = r.headers.get("retry-after", "")
            raise Failed(
                f"HTTP {r.status_code}",
                final=final,
                retry_after=float(ra) if ra.isdigit() else None,
            )
        ok = await asyncio.to_thread(self._apprise, alert, ch)
        if not ok:
            raise Failed("apprise: the channel did not accept the notification")

    def _apprise(self, alert: Alert, ch: Channel) -> bool:
        ap = apprise.Apprise()
        if not ap.add(apprise_url(ch.url, alert.alert_id)):
            raise Failed("apprise: not a URL it accepts", final=True)
        text = alert.body + (f"\n{alert.booking_url}" if alert.booking_url else "")
        return bool(ap.notify(body=text, title=alert.title, timeout=self.s.delivery.timeout))

    async def deliver(self, alert: Alert, i: int) -> Delivery:
        ch = alert.channels[i]
        tgt = target(ch)
        bucket = self.buckets.setdefault(tgt, TokenBucket(self.s.delivery.rate))
        error = ""
        attempt = 0
        for attempt in range(1, self.s.delivery.attempts + 1):
            await bucket.take()
            if self.revoking:
                raise Revoked
            try:
                await self._send_once(alert, ch)
                return self._record(alert, i, tgt, "delivered", attempt, "")
            except Failed as exc:
                error = str(exc)
                if exc.final or attempt == self.s.delivery.attempts:
                    break
                pause = full_jitter(
                    attempt - 1, self.s.delivery.backoff, self.s.delivery.backoff_max, self.rng
                )
                if exc.retry_after is not None:
                    pause = max(pause, min(exc.retry_after, self.s.delivery.backoff_max))
                self.totals.retries += 1
                log.info(
                    "delivery_retry",
                    alert_id=alert.alert_id,
                    target=tgt,
                    attempt=attempt,
                    error=error,
                    pause_s=round(pause, 2),
                )
                await self._pause(pause)
        return self._record(alert, i, tgt, "dead", attempt, error)

    async def _pause(self, seconds: float) -> None:
        """A retry's pause, cut short (:class:`Revoked`) when the partitions are handed over."""
        if self.revoked is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(self.revoked.wait(), seconds)
        except TimeoutError:
            return
        raise Revoked

    def _record(
        self, alert: Alert, i: int, tgt: str, status: str, attempts: int, error: str
    ) -> Delivery:
        now = int(time.time() * 1000)
        return Delivery(
            alert_id=alert.alert_id,
            watch_id=alert.watch_id,
            channel=i,
            channel_type=alert.channels[i].type,
            target=tgt,
            status="delivered" if status == "delivered" else "dead",
            attempts=attempts,
            latency_ms=max(0, now - alert.matched_at_ms),
            error=error[:500],
            at_ms=now,
        )

    async def handle(self, raw: bytes, offset: int) -> bool:
        """Every channel of one alert: sent (unless logged already), logged, dead-lettered.
        False: left undone (its partition was revoked), for the partition's next owner."""
        try:
            alert = decode_alert(raw)
        except SchemaError as exc:
            await asyncio.to_thread(
                self._write,
                self.s.topics.deadletter,
                b"",
                raw,
                [
                    ("error", str(exc).encode()),
                    ("source_topic", self.s.topics.alerts.encode()),
                    ("source_offset", str(offset).encode()),
                ],
            )
            return True
        if self.log is None:
            raise InvariantError("alert handled before the delivery log was read")
        self.totals.alerts += 1
        todo = [i for i in range(len(alert.channels)) if (alert.alert_id, i) not in self.log]
        self.totals.skipped += len(alert.channels) - len(todo)
        done = await asyncio.gather(*(self._one(alert, i, raw, offset) for i in todo))
        self.heartbeat.add(alerts=1)
        return all(done)

    async def _one(self, alert: Alert, i: int, raw: bytes, offset: int) -> bool:
        """One channel: sent, then its record written at once (the window of a re-send)."""
        if self.log is None:
            raise InvariantError("channel sent before the delivery log was read")
        try:
            d = await self.deliver(alert, i)
        except Revoked:
            return False
        await asyncio.to_thread(
            self._write, self.s.topics.deliveries, alert.alert_id.encode(), encode_record(d), []
        )
        self.log.add(d.alert_id, d.channel, d.at_ms)
        if d.status == "delivered":
            self.totals.delivered += 1
            self.heartbeat.add(delivered=1)
            return True
        self.totals.dead += 1
        self.heartbeat.add(dead=1)
        log.warning(
            "delivery_dead",
            alert_id=d.alert_id,
            target=d.target,
            attempts=d.attempts,
            error=d.error,
        )
        await asyncio.to_thread(
            self._write,
            self.s.topics.deadletter,
            alert.alert_id.encode(),
            raw,
            [
                ("error", f"channel {d.channel} ({d.target}): {d.error}".encode()),
                ("source_topic", self.s.topics.alerts.encode()),
                ("source_offset", str(offset).encode()),
            ],
        )
        return True

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: threading.Event) -> None:
        """Consume alerts until ``stop``; commit an offset once every alert before it is done.

        Replicas share the alerts topic's partitions in one consumer group. When partitions
        are revoked (a rebalance), no new send begins, the sends under way finish and are
        logged, retries waiting for their pause give up their turn, and the offsets behind
        every done alert are committed, all before the partitions go; when partitions are
        assigned, the delivery log is read to its end before any of their alerts is handled.
        """
        s = self.s
        check_topics(s, [s.topics.alerts, s.topics.deliveries, s.topics.deadletter], "delivery")
        loop = asyncio.get_running_loop()
        self.revoked = asyncio.Event()
        self.log = SentLog(self.s, int(self.s.delivery.log_keep_hours * 3_600_000))
        await asyncio.to_thread(self.log.sync)
        log.info("delivery_log_loaded", sent=len(self.log))
        consumer = kafka.consumer(
            self.s,
            {
                "group.id": self.s.delivery.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "session.timeout.ms": SESSION_TIMEOUT_MS,
            },
        )
        sem = asyncio.Semaphore(self.s.delivery.concurrency)
        pending: dict[int, dict[int, bool]] = {}  # partition -> offset -> done
        failures: list[BaseException] = []
        tasks: dict[asyncio.Task[bool], int] = {}  # -> partition
        resync = [False]
        closing = [False]

        async def hand_over() -> list[TopicPartition]:
            self.revoking = True
            if self.revoked is None:
                raise InvariantError("partitions revoked before the worker's loop started")
            self.revoked.set()
            if tasks:
                await asyncio.wait(set(tasks), timeout=self.s.delivery.timeout + 30)
            for t in list(tasks):  # (a send that outlived its timeout: the limit's repeat)
                t.cancel()
            return self._done_offsets(pending)

        def on_revoke(c: Consumer, parts: list[TopicPartition]) -> None:
            # on the consume thread, while the event loop runs the sends under way (at close,
            # on the loop's own thread: the sends are over, and the last commit is made)
            if closing[0]:
                return
            offsets = asyncio.run_coroutine_threadsafe(hand_over(), loop).result()
            try:
                if offsets:
                    c.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:  # partitions lost (session timed out): not ours
                log.warning("delivery_commit_failed", error=str(exc))
            gone = {tp.partition for tp in parts}
            for p in gone:
                pending.pop(p, None)
            self.revoking = False
            loop.call_soon_threadsafe(self.revoked.clear)  # type: ignore[union-attr]
            self.totals.handovers += 1
            log.info("delivery_partitions_revoked", partitions=sorted(gone), committed=len(offsets))

        def on_assign(c: Consumer, parts: list[TopicPartition]) -> None:
            resync[0] = True
            log.info("delivery_partitions_assigned", partitions=[tp.partition for tp in parts])

        consumer.subscribe([self.s.topics.alerts], on_assign=on_assign, on_revoke=on_revoke)
        self.http = httpx.AsyncClient(timeout=self.s.delivery.timeout)

        def finished(task: asyncio.Task[bool], p: int, o: int) -> None:
            sem.release()
            tasks.pop(task, None)
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None:
                failures.append(exc)
                return
            if task.result() and p in pending and o in pending[p]:
                pending[p][o] = True

        try:
            while not stop.is_set():
                if failures:
                    raise failures[0]
                msgs = await asyncio.to_thread(consumer.consume, 100, 0.2)
                if resync[0]:  # what the partitions' last owner logged, before their alerts
                    resync[0] = False
                    await asyncio.to_thread(self.log.sync)
                for m in msgs:
                    if m.error() is not None:
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("delivery_consumer_error", error=str(m.error()))
                        continue
                    await sem.acquire()
                    p, o = m.partition(), m.offset()
                    pending.setdefault(p, {})[o] = False
                    task = asyncio.create_task(self.handle(m.value() or b"", o))
                    tasks[task] = p
                    task.add_done_callback(functools.partial(finished, p=p, o=o))
                await self._commit(consumer, pending)
                self.log.trim(int(time.time() * 1000))
                self.heartbeat.tick(in_flight=len(tasks), sent_logged=len(self.log))
            if tasks:  # let sends under way finish, briefly; the rest go again after a restart
                await asyncio.wait(set(tasks), timeout=10)
            await self._commit(consumer, pending)
        finally:
            for t in tasks:
                t.cancel()
            await self.http.aclose()
            closing[0] = True
            consumer.close()
            self.log.close()
            self.producer.flush(10)

    def _done_offsets(self, pending: dict[int, dict[int, bool]]) -> list[TopicPartition]:
        """Per partition, the offset after the last alert of an unbroken run of done ones
        (the run is taken off ``pending``)."""
        offsets = []
        for p, marks in pending.items():
            nxt = None
            for o in sorted(marks):
                if not marks[o]:
                    break
                del marks[o]
                nxt = o + 1
            if nxt is not None:
                offsets.append(TopicPartition(self.s.topics.alerts, p, nxt))
        return offsets

    async def _commit(self, consumer: Consumer, pending: dict[int, dict[int, bool]]) -> None:
        offsets = self._done_offsets(pending)
        if offsets:
            await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)


def run(settings: DeliverySettings) -> None:
    """Run until SIGTERM/SIGINT; a crash is restarted by the supervisor (nothing is lost:
    offsets are committed only behind alerts whose channels are all logged)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker = Worker(settings)
    reg = registry("delivery")
    readings = Readings()
    for name, text in (
        ("alerts", "Alerts read"),
        ("delivered", "Sends a channel accepted"),
        ("dead", "Sends given up after the last try (dead-lettered)"),
        ("retries", "Sends tried again"),
        ("skipped", "Sends skipped: already in the delivery log"),
        ("handovers", "Times this replica's partitions were revoked (rebalances)"),
    ):
        readings.counter(
            f"drops_delivery_{name}_total", text, partial(getattr, worker.totals, name)
        )
    reg.register(readings)
    serve(reg, settings.delivery.metrics_port, settings.metrics.host)
    log.info("delivery_started", alerts_topic=settings.topics.alerts, group=settings.delivery.group)
    try:
        asyncio.run(worker.run(stop))
    finally:
        t = worker.totals
        log.info(
            "delivery_stopped",
            alerts=t.alerts,
            delivered=t.delivered,
            dead=t.dead,
            retries=t.retries,
            skipped=t.skipped,
        )
