"""The processor: a Quix Streams application that diffs snapshots into drops.

snapshot topic (key ``<bucket_id>/<provider>``) → decode → :func:`domain.rule.apply` with the
stream's state from a RocksDB store (changelogged) → drop records on the drops topic (key
``bucket_id``) and rejected records on the dead-letter topic.

Guarantees: ``processing_guarantee="exactly-once"``. The state changes, the drop records, the
dead letters and the consumed offsets of one checkpoint are one Kafka transaction, so a crash
at any moment replays from the last commit against the state of that commit: no drop is lost
and none is repeated for read_committed readers. The checkpoint (``commit_interval``,
default 1 s) is a floor on drop latency, since drops become visible only at commit; 1 s keeps
the feed live (the producers poll every 30 s) at the price of one transaction a second.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import Counter
from quixstreams import Application, State, message_context
from quixstreams.checkpointing.exceptions import CheckpointProducerTimeout
from quixstreams.exceptions import KafkaPartitionError, PartitionAssignmentError
from quixstreams.internal_producer import KafkaProducerTransactionCommitFailed
from quixstreams.kafka.exceptions import BaseKafkaException, KafkaBrokerUnavailableError
from quixstreams.models.serializers import SerializationContext, Serializer
from quixstreams.state.exceptions import ChangelogFlushError
from quixstreams.state.rocksdb import RocksDBOptions

from domain import rule
from drops import kafka
from drops.log import Heartbeat, get_log
from drops.metrics import Readings, registry, serve
from drops.runtime import Backoff, tune_gc
from drops.stages import ProcessorSettings
from drops.topics import check_topics, record_limit
from processors.quix import exactly_once_app
from processors.replica import Replica, claim
from processors.state import StateStore
from schemas import SchemaError, decode_snapshot, encode
from schemas import deadletter as DL

log = get_log("processor")

STORE = "default"  # the RocksDB store of the bucket states (Quix's store of stateful apply)

# Snapshot records are large (a 25,000-slot part is ~3 MB, ~0.5 MB lz4-compressed on the
# wire) and the diff of one takes a few ms: the fetcher must stay well ahead, or the main
# thread waits in poll (the largest cost of the pipeline in profiles). A deeper prefetch queue
# (128 MB, counted decompressed: ~40 parts) with moderate fetches (2 MB a partition, 8 MB a
# request, so one response does not overshoot the queue by much) measured 20-30% faster at
# 28 x 200,000 slots than librdkafka's 64 MB / 1 MB, at ~+70 MB of peak RSS.
CONSUMER_TUNING: dict[str, Any] = {
    "max.partition.fetch.bytes": 2 * 1024 * 1024,
    "fetch.max.bytes": 8 * 1024 * 1024,
    "queued.max.messages.kbytes": 128 * 1024,
}
# State writes are a few large values (512 KB id chunks), read back only on a cold cache or
# recovery: small memtables and a small block cache keep the store's memory in check (Quix's
# defaults, 3 x 64 MB memtables a partition and a 1 GB cache, are sized for many small keys).
ROCKSDB = RocksDBOptions(
    write_buffer_size=16 * 1024 * 1024,
    max_write_buffer_number=2,
    block_cache_size=64 * 1024 * 1024,
)


@dataclass
class Gaps:
    """Snapshot records the processor never read: deleted by retention while it was paused
    or down, past its group's committed offsets."""

    gaps: int = 0  # times a partition's log started past the group's committed offset
    offsets: int = 0  # offsets skipped in all (records and transaction markers)
    counted: dict[int, int] = field(default_factory=dict)  # partition -> log start counted


@dataclass(frozen=True, slots=True)
class Out:
    """One record to produce: to the drops topic or, when ``error``, the dead-letter topic."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    error: str = ""


class _OutValue(Serializer):
    def __call__(self, value: Out, ctx: SerializationContext) -> bytes:
        return value.value


class Processor:
    """The per-record work of the application (state access through Quix's ``State``)."""

    def __init__(self, settings: ProcessorSettings) -> None:
        self.seen_ttl_ms = int(settings.processor.seen_ttl * 1000)
        # the party size the drops' booking links ask (moved into each slot's party range)
        self.party_size = settings.producer.party_sizes[0]
        self.clock = settings.clock()  # event times are the producers' clock
        self.states = StateStore()
        self.heartbeat = Heartbeat(
            log, "processor_heartbeat", every=settings.processor.heartbeat_interval
        )
        self._lock = threading.Lock()
        self.last_polled_ms = 0
        self.first_record = True  # log the moment this run starts consuming
        self.deadletter_max_bytes = settings.kafka.max_message_bytes  # lowered to the topic's limit
        self.totals = {"snapshots": 0, "parts": 0, "drops": 0, "closes": 0, "dead_letters": 0}
        self.gaps = Gaps()
        self.settings = settings
        self.gap_checked: set[int] = set()  # partitions checked since the application started

    def _check_gap(self) -> None:
        """At the first record of a partition since this application started (its consumer
        was assigned the partition and resumed at the group's committed offset), check that
        partition for a retention gap. Only the replica that owns a partition checks it, so
        a gap is counted once, not once per replica (each would see every partition's
        offsets). A check that fails is logged and tried at the partition's next record."""
        partition = message_context().partition
        if partition in self.gap_checked:
            return
        try:
            check_retention(self.settings, self.gaps, [partition])
        except Exception as exc:
            log.warning("retention_check_failed", partition=partition, error=str(exc)[:300])
            return
        self.gap_checked.add(partition)

    def _count(self, **counts: int) -> None:
        with self._lock:
            self.heartbeat.add(**counts)
            for k, v in counts.items():
                if k in self.totals:
                    self.totals[k] += v

    def tick(self) -> None:
        with self._lock:
            lag = self.clock.time() - self.last_polled_ms / 1000 if self.last_polled_ms else None
            self.heartbeat.tick(
                buckets_cached=len(self.states._cache),
                state_loads=self.states.stats.loads,
                state_mb_written=round(self.states.stats.bytes_written / 1e6, 1),
                last_snapshot_age_s=None if lag is None else round(lag, 1),
            )

    def process(
        self, value: Any, key: Any, timestamp: int, headers: Any, state: State[Any, Any]
    ) -> list[Out]:
        if self.first_record:
            self.first_record = False
            log.info("first_record", at_ms=int(time.time() * 1000))
        self._check_gap()
        try:
            snap = decode_snapshot(value)
            if key != snap.key.encode():
                raise SchemaError(
                    f"snapshot: record key {key!r} is not the stream key {snap.key!r}"
                )
        except SchemaError as exc:
            return [self._dead_letter(value, key, str(exc))]
        try:
            st = self.states.load(key, state)
            out = rule.apply(st, snap, self.seen_ttl_ms)
            events = rule.events(snap, out, self.party_size)
            if out.delete:
                self.states.delete(key, state)
            elif not out.ignored:
                self.states.save(key, state, st)
        except SchemaError as exc:
            # a slot's row did not decode or its id is not its hash: nothing was saved, so the
            # stored state is the one before this record; the half-changed cached one goes
            self.states.forget()
            return [self._dead_letter(value, key, str(exc))]
        except Exception:
            self.states.forget()  # the cached states may be half-changed
            raise
        self.last_polled_ms = max(self.last_polled_ms, snap.polled_at_ms)
        self._count(
            snapshots=int(snap.is_last_part and not out.ignored),
            parts=1,
            slots=len(snap),
            drops=len(out.opened),
            closes=len(out.closed),
            absorbed=out.absorbed,
            ignored=int(bool(out.ignored)),
            deleted=int(out.delete),
        )
        if out.ignored:
            log.info("part_ignored", key=snap.key, snapshot_id=snap.snapshot_id, why=out.ignored)
        if snap.kind == "rebaseline":  # an operator's: the stream's next snapshot is its baseline
            log.info("rebaseline_pending", key=snap.key, snapshot_id=snap.snapshot_id)
        return [Out(e.key.encode(), encode(e)) for e in events]

    def _dead_letter(self, value: Any, key: Any, error: str) -> Out:
        """The dead letter of a record, bounded to the dead-letter topic's record limit (an
        error text quoting a megabyte field, or a record near the limit plus its headers,
        would be refused, and a refused produce would be retried for ever)."""
        ctx = message_context()
        self._count(dead_letters=1)
        log.warning(
            "dead_letter",
            error=DL.error_text(error, 500),
            topic=ctx.topic,
            partition=ctx.partition,
            offset=ctx.offset,
        )
        raw = value if isinstance(value, bytes) else b""
        k = key if isinstance(key, bytes) else None
        if k is not None and len(k) > 1024:
            k = None  # a key that large is itself what is wrong: the headers locate the record
        data, headers = DL.record(
            raw, k, error, (ctx.topic, ctx.partition, ctx.offset), self.deadletter_max_bytes
        )
        return Out(k, data, headers=tuple(headers), error=DL.error_text(error))


def check_retention(
    settings: ProcessorSettings, gaps: Gaps, partitions: Iterable[int] | None = None
) -> None:
    """Where the group's committed offset on a snapshot partition is below the partition's
    log start, retention deleted records the processor never read (it was paused or down
    longer than the topic's retention), and auto.offset.reset=earliest would skip them
    without a word. Logged as ``retention_gap`` and counted in ``gaps``; nothing can bring
    them back. A partition the group never committed on is a first start, not a gap; a log
    start counted once (the same gap seen again at a rebuild) is not counted twice.
    ``partitions``: only those (the processor checks each partition it is assigned, at its
    first record); None: every partition of the topic."""
    topic = settings.topics.snapshots
    c = kafka.consumer(
        settings,
        {
            "group.id": settings.processor.group,
            "enable.auto.commit": False,
        },
    )
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        wanted = sorted(meta.partitions) if partitions is None else sorted(set(partitions))
        tps = [TopicPartition(topic, p) for p in wanted if p in meta.partitions]
        for tp in c.committed(tps, timeout=10):
            if tp.error is not None:
                raise KafkaException(tp.error)
            if tp.offset < 0:  # nothing committed yet
                continue
            low, _ = c.get_watermark_offsets(TopicPartition(topic, tp.partition), 10, False)
            lost_from = max(tp.offset, gaps.counted.get(tp.partition, -1))
            if low <= lost_from:
                continue
            gaps.counted[tp.partition] = low
            gaps.gaps += 1
            gaps.offsets += low - lost_from
            log.error(
                "retention_gap",
                topic=topic,
                partition=tp.partition,
                committed=tp.offset,
                log_start=low,
                offsets=low - lost_from,
                hint="snapshots deleted by retention before the processor read them",
            )
    finally:
        c.close()


def build_app(
    settings: ProcessorSettings, proc: Processor | None = None, replica: Replica | None = None
) -> tuple[Application, Processor]:
    """The application and its processor (``proc``, or a new one), ready for ``app.run()``,
    as ``replica`` (claimed here when not given: see :mod:`processors.replica`). Each
    partition is checked for snapshots deleted by retention past the group's offset at its
    first record (:func:`check_retention`, :meth:`Processor._check_gap`)."""
    # our topics, as the operator made them, before Quix sees them (it would create them)
    topics = [settings.topics.snapshots, settings.topics.drops, settings.topics.deadletter]
    check_topics(settings, topics, "processor")
    replica = replica or claim(settings)
    member = f"{settings.processor.group}-{replica.instance}"
    proc = proc or Processor(settings)
    proc.gap_checked = set()  # this application's consumer resumes at the committed offsets
    app = exactly_once_app(
        settings,
        group=settings.processor.group,
        member=member,
        state_dir=replica.state_dir,
        commit_interval=settings.processor.commit_interval,
        consumer_extra={"reconnect.backoff.max.ms": RECONNECT_MAX_MS, **CONSUMER_TUNING},
        producer_extra={"reconnect.backoff.max.ms": RECONNECT_MAX_MS},
        rocksdb_options=ROCKSDB,
    )
    snapshots = app.topic(
        settings.topics.snapshots, value_deserializer="bytes", key_deserializer="bytes"
    )
    drops = app.topic(settings.topics.drops, value_serializer=_OutValue(), key_serializer="bytes")
    dead = app.topic(
        settings.topics.deadletter, value_serializer=_OutValue(), key_serializer="bytes"
    )
    proc.deadletter_max_bytes = record_limit(settings, settings.topics.deadletter)
    proc.states.forget()  # a new application may start from another state: read it again
    sdf = app.dataframe(snapshots)
    out = sdf.apply(proc.process, stateful=True, expand=True, metadata=True)
    out = out.set_headers(lambda value, key, ts, headers: list(value.headers))
    out.to_topic(lambda value, key, ts, headers: dead if value.error else drops, key=_key)
    return app, proc


def _key(value: Out) -> bytes | None:
    return value.key


PROCESSOR_COUNTS = {
    "snapshots": "Snapshot records read",
    "parts": "Snapshot parts read",
    "drops": "Drop records written",
    "closes": "Close records written",
    "dead_letters": "Records sent to the dead-letter topic",
}


def processor_readings(current: Callable[[], Processor]) -> Readings:
    """The processor's running totals as counters (``drops_processor_<name>_total``)."""
    out = Readings()

    def reader(name: str) -> Callable[[], float]:
        return lambda: current().totals[name]

    for name, text in PROCESSOR_COUNTS.items():
        out.counter(f"drops_processor_{name}_total", text, reader(name))
    out.counter(
        "drops_processor_retention_gaps_total",
        "Times snapshots were deleted by retention before the processor read them",
        lambda: current().gaps.gaps,
    )
    out.counter(
        "drops_processor_retention_gap_offsets_total",
        "Snapshot offsets deleted by retention before the processor read them",
        lambda: current().gaps.offsets,
    )
    return out


def _ticker(current: list[Processor], stop: threading.Event) -> None:
    while not stop.wait(1.0):
        current[0].tick()


# Errors of a broker that went away or is coming back (connection, coordinator not ready,
# assignment callbacks failing on either, a transaction that could not commit). The
# application is rebuilt: exactly-once holds as after a crash (the open transaction is aborted
# and fenced by the stable transactional.id, consumption resumes at the committed offsets, the
# store catches up from the changelog).
TRANSIENT: tuple[type[BaseException], ...] = (
    KafkaException,
    BaseKafkaException,
    PartitionAssignmentError,
    KafkaPartitionError,
    KafkaBrokerUnavailableError,
    KafkaProducerTransactionCommitFailed,
    CheckpointProducerTimeout,
    ChangelogFlushError,
)
# ... except a consumer fenced for its group.instance.id: another replica runs with this
# replica's id (a configuration error; restarting would only fence the other one in turn).
# A fenced producer is ridden out: after an outage longer than transaction.timeout.ms the
# coordinator aborts the open transaction and fences its epoch, and a new producer is due.
FATAL_CODES = frozenset({KafkaError.FENCED_INSTANCE_ID})
RECONNECT_MAX_MS = 1_000  # librdkafka's default 10 s leaves a restarted broker unused
BACKOFF_S = (0.5, 30.0)  # first and longest wait before rebuilding the application
CALM_S = 120.0  # an application that ran this long before failing: backoff starts over
# the modules and the application's long-lived objects are never garbage: out of the
# collector's sight; each record allocates thousands of small objects (venue keys, rows),
# so collect the young generation less often
GC_THRESHOLD = (50_000, 50, 100)


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is a broker outage to ride out."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        err = e.args[0] if isinstance(e, KafkaException) and e.args else None
        if isinstance(err, KafkaError) and err.code() in FATAL_CODES:
            return False
    unreachable = any(isinstance(e, kafka.KafkaAccessError) and not e.refused for e in chain)
    return unreachable or any(isinstance(e, TRANSIENT) or _recovery_race(e) for e in chain)


def _recovery_race(exc: BaseException) -> bool:
    """Quix Streams 3.28's state recovery, when a rebalance lands while it replays a
    changelog, can hand a changelog record to the application's dataframes (a ``KeyError``
    naming the changelog topic) or leave a newly assigned changelog partition unpositioned
    ("Recovery stuck ..."). Nothing was committed: rebuilding the application recovers the
    state again and resumes at the committed offsets, as after a crash."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0]).startswith("changelog__")
    return isinstance(exc, RuntimeError) and str(exc).startswith("Recovery stuck")


def run(settings: ProcessorSettings) -> None:
    """Run until SIGTERM/SIGINT (Quix handles both and commits the last checkpoint).

    A broker outage does not end the process: the application is rebuilt with backoff
    (``processor_restarting`` in the log) until the broker answers again."""
    tune_gc(*GC_THRESHOLD)
    stop = threading.Event()
    current: list[Processor] = [Processor(settings)]
    reg = registry("processor")
    restarts_total = Counter(
        "drops_processor_restarts", "Application rebuilds after broker outages", registry=reg
    )
    reg.register(processor_readings(lambda: current[0]))
    serve(reg, settings.processor.metrics_port, settings.metrics.host)
    threading.Thread(target=_ticker, args=(current, stop), daemon=True, name="heartbeat").start()
    replica = claim(settings)  # held for the life of the process
    log.info(
        "processor_started",
        topic=settings.topics.snapshots,
        drops_topic=settings.topics.drops,
        group=settings.processor.group,
        instance=replica.instance,
        state_dir=str(replica.state_dir),
        commit_interval=settings.processor.commit_interval,
    )
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:  # between two applications
        stopping.set()

    restarts = 0
    backoff = Backoff(*BACKOFF_S, calm=CALM_S)
    try:
        while not stopping.is_set():
            began = time.monotonic()
            app: Application | None = None
            try:
                app, _ = build_app(settings, current[0], replica)
                if stopping.is_set():  # a signal while it was being built
                    return
                if restarts:
                    log.info("processor_resumed", restarts=restarts)
                app.run()  # installs Quix's signal handlers: they stop it, and it returns
                return
            except Exception as exc:
                if not transient(exc):
                    raise
                restarts += 1
                restarts_total.inc()
                delay = backoff.next(time.monotonic() - began)
                log.warning(
                    "processor_restarting",
                    error=f"{type(exc).__name__}: {exc}"[:500],
                    cause=repr(exc.__cause__)[:300] if exc.__cause__ else None,
                    restarts=restarts,
                    backoff_s=delay,
                )
            finally:
                del app
                gc.collect()  # the old application's Kafka clients go now, not at some later GC
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            stopping.wait(delay)
    finally:
        stop.set()
        log.info("processor_stopped", restarts=restarts, **current[0].totals)
