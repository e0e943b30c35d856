"""The live tail: ONE Kafka consumer per API process, fanned out to per-client bounded queues.

The consumer (a thread; ``read_committed``, no consumer group offsets) starts at the end of
the drops topic and hands each batch to the event loop. The hub keeps a ring of recent events
so a reconnecting client can join the live tail exactly where its ClickHouse catch-up ends:

- ``base[p]``: the ring holds every event of partition ``p`` with offset > ``base[p]``.
- A client whose delivered position covers ``base`` takes the rest from the ring, then from
  its queue, skipping what it has (positions are compared, so nothing repeats).

Each batch is encoded once (SSE bytes, one cursor id per event). Clients are grouped by their
normalized filter (:class:`Group`): each batch is matched once per distinct filter, not per
client, and the group's selection (the matching events and their pre-encoded bytes, shared
by every client of the group) is offered only to the clients of groups it matches: a client
whose filter matches nothing in a batch is not woken. A client whose queue is full is
dropped (it reconnects and resumes). What a client is sent at once is cut into chunks of at
most ``CHUNK_BYTES`` (one batch's shared bytes are never split), with a yield to the event
loop between chunks, so a client with a long backlog cannot hold the loop; and a batch is
handed to at most ``OFFER_SLICE`` clients per pass of the loop (in publishing order), so
waking thousands of clients does not hold it either. Batches come every ``flush_ms``, or
less often once the clients the last batch woke would take more than ``sends_per_s``
socket writes a second.
Sending is sse-starlette's job (``api.app``: pings, send timeouts); the hub's one-second tick
only ends every client's stream when the server begins to shut down.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from api import cursor as C
from api.items import item_from_event, sse_raw
from api.params import Filters
from drops import kafka
from drops.errors import InvariantError
from drops.log import Heartbeat, get_log
from drops.stages import ApiSettings
from schemas import SchemaError, decode_drop

log = get_log("api.hub")

CHUNK_BYTES = 64 * 1024  # the most one send to one client carries (but one shared batch)
OFFER_SLICE = 500  # clients handed a batch per pass of the event loop
PLAIN = Filters()


@dataclass(frozen=True, slots=True)
class LiveEvent:
    partition: int
    offset: int
    item: dict[str, Any]
    json: bytes  # the item's JSON
    after: C.Cursor  # the hub's position just after this event
    data: bytes  # SSE bytes with id = encode(after)
    received: float = 0.0  # time.time() when the consumer read it


@dataclass(frozen=True, slots=True)
class LiveBatch:
    events: tuple[LiveEvent, ...]
    before: C.Cursor
    after: C.Cursor
    joined: bytes
    received: float  # time.time() when the hub got it


@dataclass(eq=False, slots=True)
class Group:
    """The connected clients with one normalized filter, and what the live tail told them."""

    filters: Filters
    clients: set[Client] = field(default_factory=set)
    # the hub's position after the last batch published to the group (whether or not it
    # matched): a client that has rendered every batch offered to it is at least here
    position: C.Cursor = field(default_factory=dict)

    def select(self, batch: LiveBatch) -> LiveBatch | None:
        """The batch as this group's clients see it: the events their filter matches (each
        matched here once for the whole group), or None when it matches none."""
        if self.filters.empty:
            return batch
        matches = self.filters.matches
        events = tuple(ev for ev in batch.events if matches(ev.item))
        if not events:
            return None
        if len(events) == len(batch.events):
            return batch
        joined = b"".join(ev.data for ev in events)
        return LiveBatch(events, batch.before, batch.after, joined, batch.received)


@dataclass(eq=False, slots=True)
class Client:
    filters: Filters
    limit: int
    group: Group | None = None
    queue: deque[LiveBatch] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False
    closing: bool = False
    resync: bool = False  # the live tail restarted: catch up from ClickHouse to the new ring

    def offer(self, batch: LiveBatch) -> None:
        if self.dropped:
            return
        if len(self.queue) >= self.limit:
            self.dropped = True
            self.queue.clear()
        else:
            self.queue.append(batch)
        self.wake.set()

    def busy(self) -> bool:
        return bool(self.queue) or self.dropped or self.closing or self.resync

    def drain(self) -> list[LiveBatch]:
        items = list(self.queue)
        self.queue.clear()
        self.wake.clear()
        return items


def render(
    batches: list[LiveBatch], delivered: C.Cursor, filters: Filters
) -> tuple[bytes, C.Cursor, int]:
    """The bytes a client still needs from ``batches`` and its position after them (pure)."""
    parts, pos, sent = render_parts(batches, delivered, filters)
    return b"".join(parts), pos, sent


def render_parts(
    batches: list[LiveBatch], delivered: C.Cursor, filters: Filters
) -> tuple[list[bytes], C.Cursor, int]:
    """:func:`render`, its bytes left as the parts they are made of (shared batch bytes, or
    one event's) for :func:`chunked`. The hub's clients pass batches their group already
    selected, with ``PLAIN`` filters: each is sent whole."""
    chunks: list[bytes] = []
    sent = 0
    pos = delivered
    plain = filters.empty
    for b in batches:
        if plain and pos == b.before:  # the common case: exactly where this batch starts
            chunks.append(b.joined)
            sent += len(b.events)
            pos = b.after
            continue
        if C.covers(pos, b.after):
            continue
        if plain and C.covers(b.before, pos):
            chunks.append(b.joined)
            sent += len(b.events)
            pos = C.merge(pos, b.after)
            continue
        for ev in b.events:
            if ev.offset <= pos.get(ev.partition, -1):
                continue
            new = C.merge(pos, ev.after)
            if filters.matches(ev.item):
                chunks.append(ev.data if new == ev.after else sse_raw(ev.json, new))
                sent += 1
            pos = new
        pos = C.merge(pos, b.after)
    return chunks, pos, sent


def flush_interval(flush_ms: int, clients: int, sends_per_s: int) -> float:
    """Seconds between the live tail's batches: ``flush_ms``, or longer when handing every
    client a batch that often would take more than ``sends_per_s`` sends a second (each
    woken client is one socket write: with 5,000 clients, 10 batches a second is 50,000
    writes a second, more than one core can do beside everything else)."""
    return max(flush_ms / 1000, clients / sends_per_s)


def chunked(parts: Iterable[bytes], limit: int = CHUNK_BYTES) -> Iterator[bytes]:
    """``parts`` joined into chunks of at most ``limit`` bytes, in order (a part longer than
    ``limit`` is a chunk of its own: a batch's shared bytes are not copied to be cut)."""
    pending: list[bytes] = []
    size = 0
    for part in parts:
        if not part:
            continue
        if pending and size + len(part) > limit:
            yield pending[0] if len(pending) == 1 else b"".join(pending)
            pending, size = [], 0
        pending.append(part)
        size += len(part)
    if pending:
        yield pending[0] if len(pending) == 1 else b"".join(pending)


class Hub:
    def __init__(self, settings: ApiSettings) -> None:
        self.s = settings
        self.ring: deque[LiveEvent] = deque()
        self.ring_max = settings.sse.ring
        self.base: C.Cursor = {}
        self.position: C.Cursor = {}
        self.clients: set[Client] = set()
        self.groups: dict[Filters, Group] = {}  # by normalized filter
        # batches not yet handed to every client of a group: (group, selection or None,
        # clients still to offer it, the hub's position after it)
        self._offers: deque[tuple[Group, LiveBatch | None, list[Client], C.Cursor]] = deque()
        self._offering = False
        self.fanout = 0  # clients the last batch with events woke (for the batch interval)
        self.matched = 0  # filter evaluations of live events (once per event per filter group)
        self.partitions = 0  # of the drops topic, as the consumer found it
        self.ready = threading.Event()
        self.error: str | None = None
        self.events_in = 0
        self.dropped_clients = 0
        self.last_event_at = 0.0
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.delays: deque[float] = deque(maxlen=10_000)  # hub receive -> handed to clients
        # (partition, offset, time.time() the consumer got it): for latency measurements
        self.receipts: deque[tuple[int, int, float]] = deque(maxlen=200_000)
        self.cut_clients = 0  # streams ended because a send stalled (counted by api.app)
        self.exiting: Any = None  # optional () -> bool: the server is shutting down
        self._tick_handle: asyncio.TimerHandle | None = None

    # ----------------------------------------------------------------------------- clients

    def subscribe(self, filters: Filters) -> Client:
        key = filters.normalized()
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(key, position=dict(self.position))
        c = Client(filters=filters, limit=self.s.sse.queue, group=group)
        group.clients.add(c)
        self.clients.add(c)
        return c

    def unsubscribe(self, c: Client) -> None:
        self.clients.discard(c)
        group = c.group
        if group is not None:
            group.clients.discard(c)
            if not group.clients and self.groups.get(group.filters) is group:
                del self.groups[group.filters]

    def ring_after(self, pos: C.Cursor) -> Iterator[LiveEvent]:
        for ev in self.ring:
            if ev.offset > pos.get(ev.partition, -1):
                yield ev

    def _publish(self, batch: LiveBatch) -> None:
        for ev in batch.events:
            self.ring.append(ev)
            self.receipts.append((ev.partition, ev.offset, ev.received))
        while len(self.ring) > self.ring_max:
            old = self.ring.popleft()
            self.base[old.partition] = max(self.base.get(old.partition, -1), old.offset)
        self.position = C.merge(self.position, batch.after)
        self.events_in += len(batch.events)
        woken = 0
        for group in list(self.groups.values()):
            selected = None
            if batch.events:
                if not group.filters.empty:
                    self.matched += len(batch.events)
                selected = group.select(batch)
            # nothing for this filter (or only the position moved: transaction markers): its
            # clients are not woken; the group's position still moves, in turn
            clients = list(group.clients) if selected is not None else []
            woken += len(clients)
            self._offers.append((group, selected, clients, batch.after))
        if batch.events:
            self.fanout = woken
        if not self._offering:  # else a pass is due: it takes these in turn
            self._offer_some()
        if batch.events:
            self.last_event_at = batch.received
            self.delays.append(time.time() - batch.received)

    def _offer_some(self) -> None:
        """Hand pending batches to their clients, in publishing order, at most
        ``OFFER_SLICE`` clients per pass of the event loop (the loop polls sockets between
        passes: 5,000 clients woken at once would hold it for their whole round of sends).
        A group's position moves once every client of it has the batch."""
        self._offering = False
        budget = OFFER_SLICE if self._loop is not None else 1 << 62
        while self._offers and budget > 0:
            group, selected, clients, after = self._offers[0]
            n = min(budget, len(clients))
            if selected is not None:
                for c in clients[len(clients) - n :]:
                    was = c.dropped
                    c.offer(selected)
                    if c.dropped and not was:
                        self.dropped_clients += 1
            del clients[len(clients) - n :]
            budget -= n
            if clients:
                break
            self._offers.popleft()
            group.position = C.merge(group.position, after)
        if self._offers and self._loop is not None and not self._offering:
            self._offering = True
            self._loop.call_soon(self._offer_some)

    def close_clients(self) -> None:
        for c in list(self.clients):
            c.closing = True
            c.wake.set()

    def _tick(self) -> None:
        """Once a second on the loop: when the server shuts down, end every client's stream
        (each generator returns, so sse-starlette completes the response cleanly)."""
        if self._loop is None:
            raise InvariantError("the hub is not started")
        if self.exiting is not None and self.exiting() and self.clients:
            self.close_clients()
        if not self._stop.is_set():
            self._tick_handle = self._loop.call_later(1.0, self._tick)

    # ----------------------------------------------------------------------------- Kafka

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._tick_handle = loop.call_later(1.0, self._tick)
        self._thread = threading.Thread(target=self._run, name="live-tail", daemon=True)
        self._thread.start()

    def _cancel_tick(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None

    def stop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._cancel_tick)
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def _assign(self, consumer: Consumer) -> C.Cursor:
        md = consumer.list_topics(self.s.topics.drops, timeout=10)
        topic = md.topics.get(self.s.topics.drops)
        if topic is None or topic.error is not None or not topic.partitions:
            raise KafkaException(f"topic {self.s.topics.drops} not available")
        start: C.Cursor = {}
        tps = []
        for p in sorted(topic.partitions):
            _, high = consumer.get_watermark_offsets(
                TopicPartition(self.s.topics.drops, p), timeout=10, cached=False
            )
            start[p] = high - 1
            tps.append(TopicPartition(self.s.topics.drops, p, high if high >= 0 else OFFSET_END))
        consumer.assign(tps)
        return start

    def _run(self) -> None:
        beat = Heartbeat(log, "live_tail_heartbeat")
        consumer: Consumer | None = None
        while not self._stop.is_set():
            try:
                consumer = kafka.consumer(
                    self.s,
                    {
                        "group.id": f"{self.s.sink.group}-live-{uuid.uuid4().hex[:8]}",
                        "isolation.level": "read_committed",
                        "enable.auto.commit": False,
                        "fetch.wait.max.ms": 20,
                        "fetch.min.bytes": 1,
                    },
                )
                start = self._assign(consumer)
                self._call(self._reset, start)
                self.ready.set()
                self.error = None
                log.info("live_tail_started", topic=self.s.topics.drops, start=start)
                self._consume(consumer, start, beat)
            except Exception as exc:
                self.ready.clear()
                self.error = str(exc)
                log.warning("live_tail_error", error=str(exc)[:300])
                self._stop.wait(2.0)
            finally:
                if consumer is not None:
                    consumer.close()
                    consumer = None

    def _reset(self, start: C.Cursor) -> None:
        # a (re)started consumer: the ring restarts at the consumer's first position. The
        # events between a connected client's position and that base were never read by
        # this consumer: every client goes through the catch-up path (ClickHouse, then the
        # ring) before it takes live batches again
        self.ring.clear()
        self._offers.clear()  # every client catches up from ClickHouse instead
        self.base = dict(start)
        self.partitions = max(self.partitions, len(start))
        self.position = C.merge(self.position, start)
        for c in self.clients:
            c.resync = True
            c.queue.clear()
            c.wake.set()

    def _call(self, fn: Any, *args: Any) -> None:
        if self._loop is None:
            raise InvariantError("the hub is not started")
        self._loop.call_soon_threadsafe(fn, *args)

    def _consume(self, consumer: Consumer, start: C.Cursor, beat: Heartbeat) -> None:
        """Read, encode each event once, and hand batches to the loop at most every
        ``sse_flush_ms`` (one wake-up per client per batch, however many transactions)."""
        pos = dict(start)
        assignment = consumer.assignment()
        before = dict(pos)
        events: list[LiveEvent] = []
        first = 0.0  # when the oldest pending event was read
        while not self._stop.is_set():
            flush = flush_interval(self.s.sse.flush_ms, self.fanout, self.s.sse.sends_per_s)
            wait = 0.05 if not events else max(0.001, first + flush - time.time())
            msgs = consumer.consume(num_messages=1000, timeout=min(0.05, wait))
            received = time.time()
            for m in msgs:
                if m.error() is not None:
                    log.warning("live_tail_consume_error", error=str(m.error()))
                    continue
                p, o = m.partition(), m.offset()
                if p is None or o is None:
                    raise InvariantError("a consumed message without partition or offset")
                try:
                    ev = decode_drop(m.value())
                except SchemaError:
                    pos[p] = max(pos.get(p, -1), o)  # the sink dead-letters it; skip it here too
                    continue
                pos[p] = o
                after = dict(pos)
                item = item_from_event(ev, p, o)
                js = orjson.dumps(item)
                if not events:
                    first = received
                events.append(LiveEvent(p, o, item, js, after, sse_raw(js, after), received))
            for tp in consumer.position(assignment):
                if tp.offset >= 0 and tp.offset - 1 > pos.get(tp.partition, -1):
                    pos[tp.partition] = tp.offset - 1
            due = bool(events) and (time.time() - first >= flush or len(events) >= 2000)
            if due or (not events and pos != before):
                batch = LiveBatch(
                    events=tuple(events),
                    before=before,
                    after=dict(pos),
                    joined=b"".join(e.data for e in events),
                    received=first if events else received,
                )
                self._call(self._publish, batch)
                beat.add(events=len(events))
                before = dict(pos)
                events = []
            beat.tick(clients=len(self.clients), ring=len(self.ring))
