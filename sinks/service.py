"""The ClickHouse sink: drops topic and stats topic -> ClickHouse, batched and idempotent.

- Reads with ``isolation.level=read_committed`` (the processor writes transactionally) and
  commits Kafka offsets by hand, only after the batch is in ClickHouse.
- Idempotent: the sink is the single writer of each partition, so it knows (cached, re-read
  from ClickHouse after any failure) the highest stored offset per partition and skips rows
  at or below it; a dedupe key already stored (same drop, new offset) is skipped too; each
  insert carries an ``insert_deduplication_token`` so a retried block is dropped by ClickHouse.
  Readers therefore never need ``FINAL``.
- Backpressure: when ClickHouse fails, the consumer pauses, retries the same batch with
  exponential backoff, and resumes; nothing is committed before it is stored, so a crash
  resumes from Kafka.
- Bad records go to the dead-letter topic with the error in a header.
- After each stored batch, ``sink_progress`` records per partition the consumer position
  (past transaction markers): the API's feed reads up to it, never beyond.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client.core import Metric

from drops import kafka
from drops.errors import DropsError, InvariantError
from drops.log import Heartbeat, configure, get_log
from drops.metrics import Readings, registry, serve
from drops.runtime import Backoff
from drops.stages import SinkSettings
from schemas import BucketStats, SchemaError, decode_drop, decode_stats
from schemas import deadletter as DL
from sinks import alert_rows as A
from store import rows as R
from store.clickhouse import ClickHouse, prepare

log = get_log("sink")


@dataclass
class BatchResult:
    drops: int = 0
    stats: int = 0
    skipped: int = 0
    deadletters: int = 0
    deadletters_lost: int = 0  # dead letters the broker refused for good


@dataclass
class Gaps:
    """Records the sink never saw: deleted by retention before it read them."""

    gaps: int = 0  # times the log started past the next position the sink needed
    offsets: int = 0  # offsets skipped in all (records and transaction markers)


@dataclass
class _Parsed:
    drops: dict[int, list[R.Positioned]] = field(default_factory=lambda: defaultdict(list))
    stats: dict[int, list[tuple[int, BucketStats]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    watches: list[list[Any]] = field(default_factory=list)
    deliveries: list[list[Any]] = field(default_factory=list)
    bad: list[tuple[Message, str]] = field(default_factory=list)
    first: dict[tuple[str, int], int] = field(default_factory=dict)  # first offset of each


class Sink:
    """One sink consumer. ``step()`` handles one batch; ``run()`` loops until ``stop`` is set."""

    def __init__(
        self,
        settings: SinkSettings,
        ch: ClickHouse,
        stop: threading.Event | None = None,
        gaps: Gaps | None = None,
    ) -> None:
        self.s = settings
        self.ch = ch
        self.stop = stop or threading.Event()
        self.gaps = gaps or Gaps()
        self._next: dict[tuple[str, int], int] = {}  # (topic, partition) -> offset expected
        self._gap_checked: dict[tuple[str, int], int] = {}
        self.blocked = ""  # why the sink will not store (a recreated topic), or ""
        self._identity_checked = False
        self._admin: Any = None  # the identity check's admin client, made at its first use
        self._identity_due = 0.0  # monotonic time of the next periodic identity check
        self._last: dict[tuple[str, int], int] = {}  # last offset read (kept across rebalances)
        self.identity_changes = 0  # times a topic was found recreated (or the cluster replaced)
        self._stored: dict[tuple[str, int], int] = {}  # (table, partition) -> highest offset
        self._saved_progress: dict[int, int] = {}
        self.paused = False
        self.head: dict[int, int] = {}  # drops-topic positions stored in full (only grows)
        self.ready = threading.Event()  # set once the consumer has its assignment
        self.totals = BatchResult()
        self.consumer = kafka.consumer(
            settings,
            {
                "group.id": settings.sink.group,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "max.poll.interval.ms": 600_000,
                "fetch.max.bytes": max(settings.kafka.max_message_bytes * 2, 52_428_800),
                "message.max.bytes": settings.kafka.max_message_bytes + 1_000_000,
            },
        )
        self.dlq = kafka.producer(
            settings,
            {
                "enable.idempotence": True,
                "message.max.bytes": settings.kafka.max_message_bytes + 1_000_000,
                "linger.ms": 5,
            },
        )
        self.consumer.subscribe(
            [
                settings.topics.drops,
                settings.topics.stats,
                settings.topics.watches,
                settings.topics.deliveries,
            ],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )

    # ----------------------------------------------------------------------------- rebalance

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        log.info("sink_assigned", partitions=[f"{p.topic}[{p.partition}]" for p in parts])
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        log.info("sink_revoked", partitions=[f"{p.topic}[{p.partition}]" for p in parts])
        self._stored.clear()
        self._saved_progress.clear()
        self._next.clear()

    # ----------------------------------------------------------------------------- batches

    def _parse(self, msgs: Sequence[Message]) -> _Parsed:
        out = _Parsed()
        for m in msgs:
            topic, part, off = m.topic(), m.partition(), m.offset()
            if topic is None or part is None or off is None:
                raise InvariantError("a consumed message without topic, partition or offset")
            out.first.setdefault((topic, part), off)
            try:
                if topic == self.s.topics.drops:
                    ev = decode_drop(m.value())
                    R.validate_drop(ev)
                    out.drops[part].append(R.Positioned(part, off, ev))
                elif topic == self.s.topics.watches:
                    out.watches.append(A.watch_row(m.key(), m.value(), off))
                elif topic == self.s.topics.deliveries:
                    out.deliveries.append(A.delivery_row(m.value()))
                else:
                    st = decode_stats(m.value())
                    R.validate_stats(st)
                    out.stats[part].append((off, st))
            except (SchemaError, ValueError) as exc:
                out.bad.append((m, str(exc)))
        return out

    def _stored_upto(self, table: str, partition: int) -> int:
        key = (table, partition)
        if key not in self._stored:
            floor = self._saved_progress.get(partition, -1) if table == "drop_events" else -1
            if table == "drop_events" and floor < 0:
                floor = self.ch.progress(self.s.topics.drops).get(partition, -1)
                if floor >= 0:
                    self._saved_progress[partition] = floor
            self._stored[key] = self.ch.stored_upto(table, partition, floor)
        return self._stored[key]

    def _check_gaps(self, parsed: _Parsed) -> None:
        """A batch that starts past the position the sink needs next, where the log itself
        now starts past it too: records were deleted by retention before the sink read them
        (the consumer's reset to the earliest offset skipped them). Logged as
        ``retention_gap`` and counted; nothing can bring them back."""
        for (topic, part), first in parsed.first.items():
            key = (topic, part)
            expect = self._next.get(key)
            if expect is None:
                table = "drop_events" if topic == self.s.topics.drops else "discovery_buckets"
                expect = self._stored_upto(table, part) + 1
            if first <= expect or self._gap_checked.get(key) == first:
                continue
            self._gap_checked[key] = first  # a retried batch is not counted twice
            low, _ = self.consumer.get_watermark_offsets(
                TopicPartition(topic, part), timeout=10, cached=False
            )
            if low > expect:
                self.gaps.gaps += 1
                self.gaps.offsets += low - expect
                log.error(
                    "retention_gap",
                    topic=topic,
                    partition=part,
                    first_missing=expect,
                    last_missing=low - 1,
                    offsets=low - expect,
                    hint="records deleted by retention before the sink read them",
                )

    def _store(self, parsed: _Parsed, positions: dict[int, int]) -> BatchResult:
        res = BatchResult()
        self._check_gaps(parsed)
        for part, items in parsed.drops.items():
            upto = self._stored_upto("drop_events", part)
            # rows at or below the high-water mark may still be missing: an insert spanning
            # two table partitions commits each on its own, so a failed one can leave a hole
            # below a stored row. Which of them are stored is read exactly (a primary-key read).
            floor = self._saved_progress.get(part, -1)  # all stored at or below: exact
            below = [i.offset for i in items if floor < i.offset <= upto]
            stored = self.ch.stored_offsets("drop_events", part, below)
            fresh = [i for i in items if i.offset > floor and i.offset not in stored]
            window = R.opened_window(i.event for i in fresh)
            existing: set[str] = set()
            if window:
                keys = sorted({i.event.dedupe_key for i in fresh})
                existing = self.ch.existing_dedupe_keys(keys, *window)
            todo = R.plan_drops(fresh, -1, existing)
            res.skipped += len(items) - len(todo)
            if todo:
                # venues first: a ReplacingMergeTree, so a retry after a failure is harmless
                self.ch.insert("venues", R.venue_rows(i.event for i in todo), R.VENUE_COLUMNS)
                self.ch.insert(
                    "drop_events",
                    [R.drop_row(i.event, i.partition, i.offset) for i in todo],
                    R.DROP_COLUMNS,
                    token=R.dedupe_token("drop_events", part, [i.offset for i in todo]),
                )
            res.drops += len(todo)
            self._stored[("drop_events", part)] = max(upto, items[-1].offset)
        for part, stats in parsed.stats.items():
            upto = self._stored_upto("discovery_buckets", part)
            below_s = [(o, st) for o, st in stats if o <= upto]
            stored = set[int]()
            if below_s:
                times = [R.ms_to_dt(st.polled_at_ms) for _, st in below_s]
                span = ("polled_at", min(times), max(times))
                stored = self.ch.stored_offsets(
                    "discovery_buckets", part, [o for o, _ in below_s], span
                )
            todo_s = [(o, st) for o, st in stats if o not in stored]
            res.skipped += len(stats) - len(todo_s)
            if todo_s:
                self.ch.insert(
                    "discovery_buckets",
                    [R.stats_row(st, part, o) for o, st in todo_s],
                    R.STATS_COLUMNS,
                    token=R.dedupe_token("discovery_buckets", part, [o for o, _ in todo_s]),
                )
            res.stats += len(todo_s)
            self._stored[("discovery_buckets", part)] = max(upto, stats[-1][0])
        # copies for listing and analysts: ReplacingMergeTrees, a re-read record is harmless
        if parsed.watches:
            self.ch.insert("watches", parsed.watches, A.WATCH_COLUMNS)
        if parsed.deliveries:
            self.ch.insert("alert_deliveries", parsed.deliveries, A.DELIVERY_COLUMNS)
        if parsed.bad:
            res.deadletters = self._deadletter(parsed.bad)
            res.deadletters_lost = len(parsed.bad) - res.deadletters
        changed = {p: o for p, o in positions.items() if self._saved_progress.get(p) != o}
        if changed:
            self.ch.save_progress(self.s.topics.drops, changed)
            self._saved_progress.update(changed)
            head = dict(self.head)
            for p, o in changed.items():
                head[p] = max(head.get(p, -1), o)
            self.head = head  # replaced whole: readers in other threads see old or new
        return res

    def _deadletter(self, bad: list[tuple[Message, str]]) -> int:
        """Write the dead letters and wait for the broker's answer. Returns how many were
        written. A dead letter the broker refused for good (too large for the topic, not
        allowed) is a logged, counted loss (``deadletter_lost``), never retried for ever; one
        that failed for a passing reason (the broker away) fails the batch, which is retried."""
        refused: list[tuple[Message, KafkaError]] = []
        for m, err in bad:
            log.warning(
                "record_rejected",
                topic=m.topic(),
                partition=m.partition(),
                offset=m.offset(),
                error=DL.error_text(err),
            )
            value, headers = DL.record(
                m.value(),
                m.key(),
                err,
                (str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)),
                self.s.kafka.max_message_bytes,
                extra=[("stage", b"sink")],
            )

            def report(e: KafkaError | None, _msg: Message, src: Message = m) -> None:
                if e is not None:
                    refused.append((src, e))

            self.dlq.produce(
                self.s.topics.deadletter,
                value=value,
                key=m.key(),
                headers=headers,
                on_delivery=report,
            )
        left = self.dlq.flush(30)
        if left:
            raise RuntimeError(f"{left} dead letters not acknowledged by Kafka")
        passing = [e for _, e in refused if e.retriable()]
        if passing:
            raise RuntimeError(f"{len(passing)} dead letters failed: {passing[0]}")
        for m, e in refused:
            log.error(
                "deadletter_lost",
                topic=m.topic(),
                partition=m.partition(),
                offset=m.offset(),
                error=str(e)[:300],
            )
        return len(bad) - len(refused)

    def _positions(self) -> list[TopicPartition]:
        assigned = self.consumer.assignment()
        if not assigned:
            return []
        return [tp for tp in self.consumer.position(assigned) if tp.offset >= 0]

    def _check_identity(self) -> None:
        """The topics must be the ones the stored offsets belong to. A topic wiped and created
        again (or another cluster) restarts its offsets: its new records would be skipped as
        stored, up to the old high-water mark, and the feed would stall without a word. So the
        sink stops storing (``topic_identity_changed``, ``/readyz`` not ready) until an
        operator decides (docs/operations.md)."""
        from confluent_kafka import TopicCollection

        if self._admin is None:
            self._admin = kafka.admin(self.s)
        admin = self._admin
        cluster = str(admin.list_topics(timeout=10).cluster_id or "")
        topics = [self.s.topics.drops, self.s.topics.stats]
        described = admin.describe_topics(TopicCollection(topics), request_timeout=10)
        for topic, fut in described.items():
            now = (cluster, str(fut.result().topic_id))
            stored = self.ch.topic_identity(topic)
            if stored is None:
                self.ch.save_topic_identity(topic, *now)
            elif stored != now:
                what = "topic id" if stored[1] != now[1] else "cluster id"
                self.blocked = (
                    f"{topic}: the {what} changed ({stored[0]}/{stored[1]} -> "
                    f"{now[0]}/{now[1]}): the topic was recreated or the cluster replaced"
                )
                self.identity_changes += 1
                log.error(
                    "topic_identity_changed",
                    topic=topic,
                    stored=stored,
                    now=now,
                    hint="the sink stores nothing until an operator decides (docs/operations.md)",
                )
        self._identity_checked = True
        self._identity_due = time.monotonic() + self.s.sink.identity_interval

    def _went_back(self, msgs: Sequence[Message]) -> list[str]:
        """Partitions whose offsets went backwards since the last record read from them: a
        re-read (a failed commit, a rebalance) or a topic created again under the running
        sink (its offsets start over). Notes each partition's last offset."""
        back: list[str] = []
        for m in msgs:
            tp = (str(m.topic()), int(m.partition() or 0))
            offset = int(m.offset() or 0)
            last = self._last.get(tp)
            if last is not None and offset <= last and tp[0] in self._checked_topics():
                back.append(f"{tp[0]}[{tp[1]}] {last} -> {offset}")
            self._last[tp] = offset
        return back

    def _checked_topics(self) -> tuple[str, str]:
        return (self.s.topics.drops, self.s.topics.stats)

    def _recheck_identity(self, reason: str, **fields: Any) -> None:
        """The identity check while running: a failed check (the broker away, the topic
        deleted and not yet created again) stores nothing new about it and is tried again."""
        try:
            self._check_identity()
        except Exception as exc:
            log.warning("topic_identity_unknown", reason=reason, error=str(exc)[:300], **fields)
            self._identity_due = time.monotonic() + min(5.0, self.s.sink.identity_interval)

    def step(self) -> BatchResult:
        """Consume one batch (size or time bound), store it, then commit. Retries until stored."""
        if not self._identity_checked:
            try:
                self._check_identity()
            except Exception as exc:  # the broker or ClickHouse away: store nothing yet
                log.warning("topic_identity_unknown", error=str(exc)[:300])
                self.stop.wait(1.0)
                return BatchResult()
        if not self.blocked and time.monotonic() >= self._identity_due:
            self._recheck_identity("periodic")
        if self.blocked:
            self.stop.wait(1.0)
            return BatchResult()
        msgs = self.consumer.consume(
            num_messages=self.s.sink.batch_size, timeout=self.s.sink.batch_seconds
        )
        good: list[Message] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume_error", error=str(err))
                continue
            good.append(m)
        back = self._went_back(good)
        if back:
            # a topic created again under the running sink starts its offsets over: check
            # its identity before storing anything of this batch (a re-read passes the check)
            self._recheck_identity("offsets_went_back", partitions=back[:10])
            if self.blocked:
                return BatchResult()  # nothing stored, nothing committed
        tps = self._positions()
        drops_pos = {tp.partition: tp.offset - 1 for tp in tps if tp.topic == self.s.topics.drops}
        if not good and all(self._saved_progress.get(p) == o for p, o in drops_pos.items()):
            return BatchResult()
        parsed = self._parse(good)
        res = self._store_with_retry(parsed, drops_pos)
        if tps:
            self._commit(tps)
            for tp in tps:  # what comes next starts here (past transaction markers)
                self._next[(tp.topic, tp.partition)] = tp.offset
        for k in ("drops", "stats", "skipped", "deadletters", "deadletters_lost"):
            setattr(self.totals, k, getattr(self.totals, k) + getattr(res, k))
        return res

    def _commit(self, tps: list[TopicPartition]) -> None:
        """Commit what is stored. A failed commit (the group rebalanced while the broker was
        away: "Unknown member") loses nothing: the records come again and are skipped as
        already stored, so log it and go on; the consumer rejoins on its next poll."""
        try:
            self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            log.warning("commit_failed", error=str(exc)[:300], hint="records will be re-read")

    def _store_with_retry(self, parsed: _Parsed, positions: dict[int, int]) -> BatchResult:
        backoff = Backoff(0.5, self.s.sink.backoff_max)
        while True:
            try:
                res = self._store(parsed, positions)
                if self.paused:
                    self.consumer.resume(self.consumer.assignment())
                    self.paused = False
                    log.info("sink_resumed")
                return res
            except Exception as exc:
                self._stored.clear()  # the outcome of a failed insert is unknown: re-read
                self._saved_progress.clear()
                if not self.paused:
                    self.consumer.pause(self.consumer.assignment())
                    self.paused = True
                delay = backoff.next()
                log.warning("clickhouse_unavailable", error=str(exc)[:500], retry_in_s=delay)
                if self.stop.wait(delay):
                    raise SinkStopped from exc

    def run(self) -> None:
        beat = Heartbeat(log, "sink_heartbeat")
        log.info("sink_started", topics=[self.s.topics.drops, self.s.topics.stats])
        try:
            while not self.stop.is_set():
                try:
                    res = self.step()
                except SinkStopped:
                    break
                beat.add(
                    drops=res.drops,
                    stats=res.stats,
                    skipped=res.skipped,
                    deadletters=res.deadletters,
                    deadletters_lost=res.deadletters_lost,
                )
                beat.tick(paused=self.paused)
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.consumer.close()
        except Exception as exc:  # already closed
            log.debug("consumer_close", error=str(exc))
        self.dlq.flush(5)
        log.info("sink_stopped", drops=self.totals.drops, skipped=self.totals.skipped)


class SinkStopped(DropsError):
    """Raised out of a retry loop when the sink is asked to stop."""


def sink_readings(current: Callable[[], Sink], restarts: Callable[[], int]) -> Readings:
    """The sink's metrics, read through ``current`` (a failed sink is replaced: its totals go
    on in the new one). Served by ``drops sink`` and by the API that runs the sink."""
    return (
        Readings()
        .counter("drops_sink_rows_total", "Drop rows stored", lambda: current().totals.drops)
        .counter(
            "drops_sink_stats_rows_total",
            "Bucket stats rows stored",
            lambda: current().totals.stats,
        )
        .counter("drops_sink_skipped_total", "Duplicates skipped", lambda: current().totals.skipped)
        .counter(
            "drops_sink_deadletters_total",
            "Records rejected",
            lambda: current().totals.deadletters,
        )
        .counter(
            "drops_sink_deadletters_lost_total",
            "Dead letters the broker refused (logged as deadletter_lost)",
            lambda: current().totals.deadletters_lost,
        )
        .counter(
            "drops_sink_retention_gaps_total",
            "Times records were deleted by retention before the sink read them",
            lambda: current().gaps.gaps,
        )
        .counter(
            "drops_sink_retention_gap_offsets_total",
            "Offsets deleted by retention before the sink read them",
            lambda: current().gaps.offsets,
        )
        .counter(
            "drops_sink_topic_identity_changes_total",
            "Times a topic was found recreated or the cluster replaced (the sink then stops "
            "storing: topic_identity_changed)",
            lambda: current().identity_changes,
        )
        .counter("drops_sink_restarts_total", "Sink restarts after failures", restarts)
        .gauge("drops_sink_paused", "1 while ClickHouse is failing", lambda: int(current().paused))
    )


class SinkThread:
    """The sink in a thread of another process (the API, with chDB), sharing its ClickHouse.

    If the sink fails (Kafka errors the consumer cannot ride out), the thread builds a new one
    after a back-off and goes on: what was stored is skipped when it comes again.
    """

    def __init__(self, settings: SinkSettings, ch: ClickHouse) -> None:
        self.settings = settings
        self.ch = ch
        self.stop = threading.Event()
        self.gaps = Gaps()  # kept across replaced sinks
        self.sink = Sink(settings, ch, self.stop, self.gaps)
        self.thread = threading.Thread(target=self._run, name="sink", daemon=True)
        self.error: BaseException | None = None
        self.restarts = 0
        self.readings = sink_readings(lambda: self.sink, lambda: self.restarts)

    def collect(self) -> Iterator[Metric]:
        """The sink's metrics (a prometheus-client collector)."""
        return self.readings.collect()

    def _run(self) -> None:
        backoff = Backoff(1.0, 30.0, calm=120.0)  # a run of 2 minutes: a fresh failure
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.sink.run()
                return
            except Exception as exc:
                self.error = exc
                self.restarts += 1
                delay = backoff.next(time.monotonic() - started)
                log.exception("sink_crashed", restart_in_s=delay, restarts=self.restarts)
            if self.stop.wait(delay):
                return
            try:
                totals = self.sink.totals
                self.sink = Sink(self.settings, self.ch, self.stop, self.gaps)
                self.sink.totals = totals  # counters go on across restarts
                self.error = None
                log.info("sink_restarted", restarts=self.restarts)
            except Exception as exc:
                self.error = exc
                log.exception("sink_restart_failed")

    def start(self) -> SinkThread:
        self.thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        self.stop.set()
        self.thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and self.error is None


def sink_topics(settings: SinkSettings) -> list[str]:
    """The topics the sink reads (drops, stats, watches, deliveries) and writes (dead letters)."""
    s = settings
    return [
        s.topics.drops,
        s.topics.stats,
        s.topics.watches,
        s.topics.deliveries,
        s.topics.deadletter,
    ]


def run(settings: SinkSettings) -> None:
    """``drops sink``: run the sink alone until SIGTERM/SIGINT (a server, or chDB with no API)."""
    configure(settings.log.level, settings.log.format)
    from drops.topics import check_topics

    check_topics(settings, sink_topics(settings), "sink")
    ch = prepare(settings)
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        log.info("sink_stopping", signal=signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sink = Sink(settings, ch, stop)
    reg = registry("sink")
    reg.register(sink_readings(lambda: sink, lambda: 0))
    serve(reg, settings.sink.metrics_port, settings.metrics.host)
    try:
        sink.run()
    finally:
        ch.close()
