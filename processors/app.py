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

import threading
import time
from dataclasses import dataclass
from typing import Any

from quixstreams import Application, State, message_context
from quixstreams.models.serializers import SerializationContext, Serializer
from quixstreams.state.rocksdb import RocksDBOptions

from domain import rule
from drops import broker
from drops.log import Heartbeat, get_log
from drops.settings import Settings
from processors.state import StateStore
from schemas import SchemaError, decode_snapshot, encode

log = get_log("processor")

STORE = "default"  # the RocksDB store of the bucket states (Quix's store of stateful apply)

# Snapshot records are large (a 25,000-slot part is ~3 MB, ~0.5 MB lz4-compressed on the
# wire): fetch several per partition per request so the fetcher keeps a few ahead of the
# diff instead of one (librdkafka's default is 1 MB a partition). The prefetch queue stays at
# librdkafka's 64 MB (counted decompressed): ~20 parts, about 60 ms of work.
CONSUMER_TUNING: dict[str, Any] = {
    "max.partition.fetch.bytes": 4 * 1024 * 1024,
    "fetch.max.bytes": 16 * 1024 * 1024,
    "queued.max.messages.kbytes": 64 * 1024,
}
# State writes are a few large values (512 KB id chunks), read back only on a cold cache or
# recovery: small memtables and a small block cache keep the store's memory in check (Quix's
# defaults, 3 x 64 MB memtables a partition and a 1 GB cache, are sized for many small keys).
ROCKSDB = RocksDBOptions(
    write_buffer_size=16 * 1024 * 1024,
    max_write_buffer_number=2,
    block_cache_size=64 * 1024 * 1024,
)


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

    def __init__(self, settings: Settings) -> None:
        self.seen_ttl_ms = int(settings.seen_ttl * 1000)
        self.states = StateStore()
        self.heartbeat = Heartbeat(log, "processor_heartbeat", every=settings.heartbeat_interval)
        self._lock = threading.Lock()
        self.last_polled_ms = 0
        self.totals = {"snapshots": 0, "parts": 0, "drops": 0, "closes": 0, "dead_letters": 0}

    def _count(self, **counts: int) -> None:
        with self._lock:
            self.heartbeat.add(**counts)
            for k, v in counts.items():
                if k in self.totals:
                    self.totals[k] += v

    def tick(self) -> None:
        with self._lock:
            lag = time.time() - self.last_polled_ms / 1000 if self.last_polled_ms else None
            self.heartbeat.tick(
                buckets_cached=len(self.states._cache),
                state_loads=self.states.stats.loads,
                state_mb_written=round(self.states.stats.bytes_written / 1e6, 1),
                last_snapshot_age_s=None if lag is None else round(lag, 1),
            )

    def process(
        self, value: Any, key: Any, timestamp: int, headers: Any, state: State[Any, Any]
    ) -> list[Out]:
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
            events = rule.events(snap, out)
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
        return [Out(e.key.encode(), encode(e)) for e in events]

    def _dead_letter(self, value: Any, key: Any, error: str) -> Out:
        ctx = message_context()
        self._count(dead_letters=1)
        log.warning(
            "dead_letter",
            error=error[:500],
            topic=ctx.topic,
            partition=ctx.partition,
            offset=ctx.offset,
        )
        raw = value if isinstance(value, bytes) else b""
        return Out(
            key if isinstance(key, bytes) else None,
            raw,
            headers=(
                ("error", error.encode()),
                ("source_topic", ctx.topic.encode()),
                ("source_partition", str(ctx.partition).encode()),
                ("source_offset", str(ctx.offset).encode()),
            ),
            error=error,
        )


def build_app(settings: Settings) -> tuple[Application, Processor]:
    """The application and its processor, ready for ``app.run()``."""
    broker.ensure_topics(settings)  # our topics, with our settings, before Quix sees them
    app = Application(
        broker_address=settings.kafka_bootstrap,
        consumer_group=settings.processor_group,
        auto_offset_reset="earliest",
        commit_interval=settings.commit_interval,
        processing_guarantee="exactly-once",
        state_dir=settings.state_dir,
        consumer_extra_config={
            "isolation.level": "read_committed",
            # static membership: a restarted processor takes its partitions back at once
            # instead of waiting for the crashed member's session to time out
            "group.instance.id": f"{settings.processor_group}-{settings.processor_instance}",
            "session.timeout.ms": 15_000,
            **CONSUMER_TUNING,
        },
        producer_extra_config={
            "message.max.bytes": settings.max_message_bytes,
            # stable across restarts: a restarted processor fences the crashed one and its
            # open transaction is aborted at once (a random id leaves it open, holding back
            # read_committed readers of the drops and changelog topics, until it times out)
            "transactional.id": f"{settings.processor_group}-{settings.processor_instance}",
            "transaction.timeout.ms": 30_000,
        },
        rocksdb_options=ROCKSDB,
        loglevel=settings.log_level.upper(),  # type: ignore[arg-type]
    )
    snapshots = app.topic(
        settings.snapshot_topic, value_deserializer="bytes", key_deserializer="bytes"
    )
    drops = app.topic(settings.drops_topic, value_serializer=_OutValue(), key_serializer="bytes")
    dead = app.topic(
        settings.deadletter_topic, value_serializer=_OutValue(), key_serializer="bytes"
    )
    proc = Processor(settings)
    sdf = app.dataframe(snapshots)
    out = sdf.apply(proc.process, stateful=True, expand=True, metadata=True)
    out = out.set_headers(lambda value, key, ts, headers: list(value.headers))
    out.to_topic(lambda value, key, ts, headers: dead if value.error else drops, key=_key)
    return app, proc


def _key(value: Out) -> bytes | None:
    return value.key


def _ticker(proc: Processor, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        proc.tick()


def run(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT (Quix handles both and commits the last checkpoint)."""
    app, proc = build_app(settings)
    stop = threading.Event()
    threading.Thread(target=_ticker, args=(proc, stop), daemon=True, name="heartbeat").start()
    log.info(
        "processor_started",
        topic=settings.snapshot_topic,
        drops_topic=settings.drops_topic,
        group=settings.processor_group,
        state_dir=str(settings.state_dir),
        commit_interval=settings.commit_interval,
    )
    try:
        app.run()
    finally:
        stop.set()
        log.info("processor_stopped", **proc.totals)
