"""The alert matcher: a Quix Streams application that turns drops into alerts, exactly-once.

drops topic (key ``bucket_id``) → for an open: every watch whose criteria it meets
(:class:`domain.watches.WatchIndex`); for a close: the watches that were told of the open and
asked for closes → one :class:`schemas.watches.Alert` per (watch, drop record) on the alerts
topic (key = watch id).

**The watches.** Every matcher instance reads the whole compacted watches topic into an
in-memory index (:class:`WatchFeed`) at start, and keeps reading it from the processing
thread: before it matches a drop record whose timestamp is later than its last look at the
watches topic, it reads the watches topic up to its end offsets again. So a watch written (or
deleted) before the drop record was written is always applied before the drop is matched (on
one clock: one host, or hosts whose clocks agree better than the commit interval), and a drop
is never matched against a watch state older than itself. The drops topic is keyed by bucket
and the watches by watch id, so no co-partitioning join could hold a global table; the
compacted log rebuilt at start is the table, and it needs no changelog of its own.

**Exactly-once.** ``processing_guarantee="exactly-once"``: the alerts, the state changes and the
consumed drop offsets of a checkpoint are one Kafka transaction. After a kill -9 the open
transaction is aborted (fenced by the stable ``transactional.id``) and the drops since the last
commit are matched again: a read_committed reader sees every alert once. The alert id is a
hash of the watch id and the drop's dedupe key, so a replay writes the same ids (the delivery
worker also keeps its own log by alert id).

**State** (RocksDB, per bucket key, changelogged): ``o/<slot_id>`` → the ids of the watches
alerted of that slot's open, so its close goes to exactly those that asked for closes. Each
entry is written with Quix's per-write event-time TTL: it expires when the slot's date has
passed (:func:`domain.watches.told_ttl_ms`: the local midnight after the slot's date, minus
the drop's own ``opened_at_ms``, at most ``DROPS_MATCHER__TOLD_MAX_DAYS``), counted on the
drops stream's event time (the record timestamps), and Quix's sweep at each commit deletes
it with a changelog tombstone. Event time, not the wall clock: a replay after a crash makes
the same decisions, and the TTL is taken from the drop's own product-clock time, so a
process started on a shifted product clock keeps the same span. A close after the date has
passed (none comes: the producers stop polling a day once it is over) finds nothing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition
from quixstreams import Application, State, message_context
from quixstreams.models.serializers import SerializationContext, Serializer

from domain.booking import drop_link
from domain.watches import WatchIndex, alert_id, human_time, texts, told_ttl_ms
from drops import kafka
from drops.log import Heartbeat, get_log
from drops.metrics import Readings, registry, serve
from drops.stages import MatcherSettings
from drops.topics import check_topics
from processors.quix import exactly_once_app
from schemas import SchemaError, decode_drop
from schemas.watches import Alert, Watch, decode_watch, encode_record

log = get_log("matcher")


class WatchFeed:
    """The watches topic read into a :class:`WatchIndex` (from the processing thread only)."""

    def __init__(self, settings: MatcherSettings) -> None:
        self.topic = settings.topics.watches
        self.index = WatchIndex()
        self.synced_ms = 0  # the watches topic's end offsets as of this time are applied
        self.syncs = 0
        self.consumer = kafka.consumer(
            settings,
            {
                "group.id": f"{settings.matcher.group}-watches",  # assign only: never commits
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            },
        )
        meta = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        self.partitions = sorted(meta.partitions)
        self.consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in self.partitions]
        )
        self.position = dict.fromkeys(self.partitions, 0)

    def close(self) -> None:
        self.consumer.close()

    def ensure(self, ts_ms: int) -> None:
        """Every watch written before ``ts_ms`` is in the index (reads the topic if needed)."""
        if ts_ms >= self.synced_ms:
            self.sync()

    def sync(self, timeout: float = 30.0) -> None:
        """Read the watches topic up to its end offsets as of now (``timeout``: the longest
        wait for the next record; a large table may take longer in all)."""
        started = int(time.time() * 1000)
        ends = {
            p: self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=10, cached=False
            )[1]
            for p in self.partitions
        }
        deadline = time.monotonic() + timeout
        while any(self.position[p] < ends[p] for p in self.partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the watches topic sent nothing for {timeout} s")
            msg = self.consumer.poll(0.5)
            if msg is None:
                continue
            deadline = time.monotonic() + timeout
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    p = msg.partition()
                    self.position[p] = max(self.position[p], msg.offset())
                    continue
                raise RuntimeError(f"watches topic: {err}")
            self._apply(msg.key(), msg.value())
            self.position[msg.partition()] = msg.offset() + 1
        self.synced_ms = started
        self.syncs += 1

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if not value:
            self.index.remove(key.decode())
            return
        try:
            self.index.upsert(decode_watch(value))
        except SchemaError as exc:
            log.warning("watch_skipped", watch_id=key.decode(errors="replace"), error=str(exc))


class Out:
    """One record to produce: an alert, or (``error``) a dead letter."""

    __slots__ = ("error", "headers", "key", "value")

    def __init__(
        self,
        key: bytes | None,
        value: bytes,
        headers: tuple[tuple[str, bytes], ...] = (),
        error: str = "",
    ) -> None:
        self.key, self.value, self.headers, self.error = key, value, headers, error


class _OutValue(Serializer):
    def __call__(self, value: Out, ctx: SerializationContext) -> bytes:
        return value.value


@dataclass(frozen=True, slots=True)
class Texts:
    """What every alert of one drop record says (built once per record, not per watch)."""

    title: str
    body: str
    local_time: str
    booking_url: str

    @staticmethod
    def of(kind: str, drop: dict[str, Any]) -> Texts:
        title, body = texts(kind, drop)
        return Texts(title, body, human_time(str(drop["actual_time"])), drop_link(drop))


class Matcher:
    """The per-record work: match a drop record and build its alerts."""

    def __init__(self, settings: MatcherSettings, feed: WatchFeed) -> None:
        self.feed = feed
        self.told_max_ms = int(settings.matcher.told_max_days * 86_400_000)
        self.heartbeat = Heartbeat(
            log, "matcher_heartbeat", every=settings.processor.heartbeat_interval
        )
        self._lock = threading.Lock()
        self.totals = {"drops": 0, "alerts": 0, "close_alerts": 0, "dead_letters": 0}

    def _count(self, **counts: int) -> None:
        with self._lock:
            self.heartbeat.add(**counts)
            for k, v in counts.items():
                self.totals[k] = self.totals.get(k, 0) + v

    def tick(self) -> None:
        with self._lock:
            self.heartbeat.tick(watches=len(self.feed.index), watch_syncs=self.feed.syncs)

    def process(
        self, value: Any, key: Any, timestamp: int, headers: Any, state: State[Any, Any]
    ) -> list[Out]:
        try:
            drop = decode_drop(value)
            doc: dict[str, Any] = orjson.loads(value)  # with any field newer than this build
        except SchemaError as exc:
            return [self._dead_letter(value, key, str(exc))]
        self.feed.ensure(timestamp)
        skey = f"o/{drop.slot_id}"
        if drop.event == "open":
            watches = self.feed.index.match(doc)
            ttl = told_ttl_ms(drop.date, drop.time_zone, drop.opened_at_ms, self.told_max_ms)
            if watches and ttl > 0:
                told: list[str] = state.get(skey, [])
                # expires (read as absent, swept with a changelog tombstone) once the drops'
                # event time has moved on by the slot's time left as of this drop
                state.set(
                    skey,
                    sorted(set(told) | {w.watch_id for w in watches}),
                    ttl=timedelta(milliseconds=ttl),
                )
        else:
            told = state.get(skey, [])
            state.delete(skey)
            live = (self.feed.index.watches.get(w) for w in told)
            watches = [w for w in live if w is not None and w.closes]
        now = int(time.time() * 1000)
        texts = Texts.of(drop.event, doc) if watches else None
        out = [
            Out(w.watch_id.encode(), encode_record(self.alert(w, drop.event, doc, now, texts)))
            for w in watches
        ]
        self._count(
            drops=1,
            alerts=len(out) if drop.event == "open" else 0,
            close_alerts=len(out) if drop.event == "close" else 0,
        )
        return out

    @staticmethod
    def alert(
        w: Watch, kind: str, drop: dict[str, Any], now_ms: int, t: Texts | None = None
    ) -> Alert:
        t = t or Texts.of(kind, drop)
        return Alert(
            alert_id=alert_id(w.watch_id, str(drop["dedupe_key"])),
            kind="close" if kind == "close" else "open",
            watch_id=w.watch_id,
            owner=w.owner,
            watch_name=w.name,
            channels=list(w.channels),
            secret=w.secret,
            drop=drop,
            title=t.title,
            body=t.body,
            local_time=t.local_time,
            # a watch that names a party size books for it (the record's link: the default)
            booking_url=(
                drop_link(drop, w.criteria.party_size) if w.criteria.party_size else t.booking_url
            ),
            matched_at_ms=now_ms,
        )

    def _dead_letter(self, value: Any, key: Any, error: str) -> Out:
        ctx = message_context()
        self._count(dead_letters=1)
        log.warning("dead_letter", error=error[:500], topic=ctx.topic, offset=ctx.offset)
        return Out(
            key if isinstance(key, bytes) else None,
            value if isinstance(value, bytes) else b"",
            headers=(
                ("error", error.encode()),
                ("source_topic", ctx.topic.encode()),
                ("source_partition", str(ctx.partition).encode()),
                ("source_offset", str(ctx.offset).encode()),
            ),
            error=error,
        )


def build_app(settings: MatcherSettings) -> tuple[Application, Matcher]:
    s = settings
    check_topics(
        s, [s.topics.drops, s.topics.watches, s.topics.alerts, s.topics.deadletter], "matcher"
    )
    feed = WatchFeed(settings)
    feed.sync()  # the whole table before the first drop
    log.info("watches_loaded", watches=len(feed.index))
    group = settings.matcher.group
    app = exactly_once_app(
        settings,
        group=group,
        member=f"{group}-{settings.matcher.instance}",
        state_dir=settings.state_dir / "matcher",
        commit_interval=settings.matcher.commit_interval,
    )
    drops = app.topic(settings.topics.drops, value_deserializer="bytes", key_deserializer="bytes")
    alerts = app.topic(settings.topics.alerts, value_serializer=_OutValue(), key_serializer="bytes")
    dead = app.topic(
        settings.topics.deadletter, value_serializer=_OutValue(), key_serializer="bytes"
    )
    matcher = Matcher(settings, feed)
    sdf = app.dataframe(drops)
    out = sdf.apply(matcher.process, stateful=True, expand=True, metadata=True)
    out = out.set_headers(lambda value, key, ts, headers: list(value.headers))
    out.to_topic(lambda value, key, ts, headers: dead if value.error else alerts, key=_key)
    return app, matcher


def _key(value: Out) -> bytes | None:
    return value.key


def run(settings: MatcherSettings) -> None:
    """Run until SIGTERM/SIGINT (Quix commits the last checkpoint). A crash is restarted by
    the supervisor; exactly-once holds as after a kill -9."""
    app, matcher = build_app(settings)
    stop = threading.Event()

    def ticker() -> None:
        while not stop.wait(1.0):
            matcher.tick()

    threading.Thread(target=ticker, daemon=True, name="heartbeat").start()
    reg = registry("matcher")
    readings = Readings()
    for name, text in (
        ("drops", "Drop records matched against the watches"),
        ("alerts", "Alert records written (one per watch and drop)"),
        ("close_alerts", "Close alerts written (watches that asked for closes)"),
        ("dead_letters", "Records rejected to the dead-letter topic"),
    ):
        readings.counter(
            f"drops_matcher_{name}_total", text, partial(matcher.totals.__getitem__, name)
        )
    readings.gauge("drops_matcher_watches", "Watches held", lambda: len(matcher.feed.index))
    reg.register(readings)
    serve(reg, settings.matcher.metrics_port, settings.metrics.host)
    log.info(
        "matcher_started",
        drops_topic=settings.topics.drops,
        alerts_topic=settings.topics.alerts,
        group=settings.matcher.group,
    )
    try:
        app.run()
    finally:
        stop.set()
        matcher.feed.close()
        log.info("matcher_stopped", **matcher.totals)
