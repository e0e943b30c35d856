"""The producer service: the bucket window, baseline builds, the poll loop, Kafka records.

Every ``poll_interval`` seconds it plans a cycle (:func:`producers.core.plan_cycle`): one job
per bucket per provider; a stream whose previous fetch still runs is skipped and counted. A
bucket that enters the window while the producer runs (2 a day per provider, as the window
slides at ``slide_at`` local time) gets a baseline build (``kind="baseline"``); every other
fetch, the first ones after a start included, is a poll: baselines live in the processor's
state, and a restart never replaces them. A bucket leaving the window gets a
``kind="close"`` record. Each fetch becomes snapshot records (parts of at most
``slots_per_record`` slots; key = ``<bucket_id>/<provider>``) and one ``BucketStats`` record.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from domain.calendar import Bucket, parse_slide_at, window
from drops.clock import Clock
from drops.log import get_log
from drops.metrics import registry, serve
from drops.runtime import tune_gc
from drops.settings import Market as MarketConfig
from drops.stages import ProducerSettings
from producers import config, core
from producers.core import Job
from producers.metrics import ProducerMetrics
from producers.providers.base import Provider, merge_results
from schemas import encode

log = get_log("producer")


class RecordWriter(Protocol):
    def write(self, topic: str, key: str, value: bytes) -> None: ...

    def flush(self, timeout: float = 30.0) -> int: ...


@dataclass(slots=True)
class CycleReport:
    started: int = 0
    skipped: int = 0
    closed: int = 0
    finished: int = 0
    incomplete: int = 0
    errors: int = 0
    slots: int = 0
    records: int = 0
    requests: int = 0
    retries: int = 0
    fallback_venues: int = 0  # venues read by the fallback endpoint after a page failed
    contradictions: int = 0  # answers with starts the bucket's ordinary read does not cover
    duration_s: float = 0.0
    keys: list[str] = field(default_factory=list)


class ProducerService:
    def __init__(
        self,
        settings: ProducerSettings,
        providers: dict[str, Provider],
        writer: RecordWriter,
        market: MarketConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings, self.providers, self.writer = settings, providers, writer
        self.clock = clock or settings.clock()
        self.market = market or config.from_settings(settings).markets[0]
        self.tz = ZoneInfo(self.market.time_zone)
        self.slide_at = parse_slide_at(self.market.slide_at)
        self.window: list[Bucket] = []
        self.due: set[str] = set()  # streams whose baseline build is not written yet
        self.running: dict[str, asyncio.Task[None]] = {}
        self.report = CycleReport()  # jobs finished since the last heartbeat
        self.cycles = 0
        self.progress = core.BaselineProgress()
        # the assignment partitions this replica holds (producers.fleet); None: every stream
        self.held: frozenset[int] | None = None
        self.metrics: ProducerMetrics | None = None  # set by run(): counters of each cycle

    def owns(self, key: str) -> bool:
        held = self.held
        return (
            held is None or core.stream_part(key, self.settings.topics.producers_partitions) in held
        )

    def reassign(self, held: frozenset[int]) -> None:
        """The fleet's new assignment: revoked streams are not scheduled again (a fetch in
        flight finishes), and streams that moved here start at once, not at the next cycle."""
        before, self.held = self.held, held
        if self.cycles and before is not None and held - before:
            self.start_cycle(only=held - before)

    # ------------------------------------------------------------------ one cycle

    def now(self) -> datetime:
        return self.clock.now()

    def plan(self, now: datetime) -> core.Plan:
        m = self.market
        new_window = window(now, m.name, self.tz, m.days, m.time_slots, self.slide_at)
        plan = core.plan_cycle(
            self.window, new_window, tuple(self.providers), set(self.running), self.due
        )
        self.window, self.due = new_window, plan.due
        return plan

    def start_cycle(
        self, now: datetime | None = None, only: frozenset[int] | None = None
    ) -> core.Plan:
        """Plan a cycle and start its jobs (returns at once; jobs run as tasks): of the
        streams this replica owns, or only of assignment partitions ``only`` (moved here)."""
        now = now or self.now()
        plan = self.plan(now)
        parts = self.settings.topics.producers_partitions
        mine = (lambda k: core.stream_part(k, parts) in only) if only is not None else self.owns
        plan.jobs = [j for j in plan.jobs if mine(j.key)]
        plan.skipped = [k for k in plan.skipped if mine(k)]
        if only is None:
            self.cycles += 1
        else:
            log.info("streams_moved_here", partitions=sorted(only), jobs=len(plan.jobs))
        now_ms = int(now.timestamp() * 1000)
        for bucket in plan.closed:
            for provider in self.providers:
                key = f"{bucket.bucket_id}/{provider}"
                if not self.owns(key):
                    continue
                value = core.close_record(bucket, provider, self.market.name, _sid(now_ms), now_ms)
                self.writer.write(self.settings.topics.snapshots, key, value)
                self.report.closed += 1
            log.info("bucket_closed", bucket_id=bucket.bucket_id)
        baselines = [j for j in plan.jobs if j.kind == "baseline"]
        if baselines:
            self.progress.planned(len(baselines), time.monotonic())
            log.info(
                "baseline_start",
                market=self.market.name,
                buckets=len({j.bucket for j in baselines}),
                jobs=len(baselines),
                entered=len(plan.entered),
                round_total=self.progress.total,
            )
        for job in plan.jobs:
            self.running[job.key] = asyncio.create_task(self._run_job(job), name=job.key)
        self.report.started += len(plan.jobs)
        self.report.skipped += len(plan.skipped)
        if plan.skipped:
            log.info("buckets_skipped", count=len(plan.skipped), keys=plan.skipped[:5])
        return plan

    async def _run_job(self, job: Job) -> None:
        s = self.settings
        started = time.monotonic()
        polled_at_ms = self.clock.now_ms()  # when the fetch started (event time)
        sid = _sid(polled_at_ms)
        m = self.market
        try:
            provider = self.providers[job.provider]
            queries = [core.query_for(job.bucket, m.time_slots, n) for n in m.party_sizes]
            if len(queries) == 1:
                result = await provider.fetch(queries[0])
            else:  # one snapshot per bucket: the party sizes' slots merged
                result = merge_results(await asyncio.gather(*map(provider.fetch, queries)))
            duration_ms = int((time.monotonic() - started) * 1000)
            if job.bucket not in self.window:  # closed while fetching: its state is gone
                log.info("fetch_dropped", key=job.key, reason="bucket left the window")
                if job.kind == "baseline":
                    self._baseline_finished(job, 0, False)
                return
            records = core.to_records(
                result,
                job,
                m.name,
                sid,
                polled_at_ms,
                s.producer.slots_per_record,
                s.kafka.max_message_bytes,
            )
            for _, value in records:
                self.writer.write(s.topics.snapshots, job.key, value)
            stats = core.stats_for(result, job, m.name, sid, polled_at_ms, duration_ms)
            self.writer.write(s.topics.stats, job.key, encode(stats))
            if job.kind == "baseline":
                self.due.discard(job.key)
                self._baseline_finished(
                    job,
                    len(result.slots),
                    result.complete,
                    venues=result.venues,
                    failures=len(result.failures),
                    duration_ms=duration_ms,
                )
            if not result.complete:
                log.warning(
                    "fetch_incomplete",
                    key=job.key,
                    failures=len(result.failures),
                    first=str(result.failures[0]) if result.failures else "",
                )
            r = self.report
            r.finished += 1
            r.incomplete += 0 if result.complete else 1
            r.slots += len(result.slots)
            r.records += len(records)
            r.requests += result.requests
            r.retries += result.retries
            r.fallback_venues += result.fallback_venues
            r.contradictions += result.contradictions
            r.keys.append(job.key)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.report.errors += 1
            log.exception("job_failed", key=job.key)  # nothing written: unknown, never empty
            if job.kind == "baseline":
                self._baseline_finished(job, 0, False)
        finally:
            self.running.pop(job.key, None)

    def _baseline_finished(self, job: Job, slots: int, ok: bool, **fields: object) -> None:
        """One progress line per finished baseline build, and a summary when a round ends.
        (Each build's stats also go to the stats topic, as every fetch's do.)"""
        p = self.progress
        if not p.active:
            return
        p.finished(slots, ok)
        now = time.monotonic()
        log.info(
            "baseline_progress", key=job.key, slots=slots, complete=ok, **fields, **p.fields(now)
        )
        if not p.active:
            log.info("baseline_complete", market=self.market.name, **p.fields(now))

    async def run_once(self, now: datetime | None = None) -> CycleReport:
        """One whole cycle, waiting for every job (tests and the benchmark)."""
        started = time.monotonic()
        self.report = CycleReport()
        self.start_cycle(now)
        while self.running:
            await asyncio.gather(*list(self.running.values()), return_exceptions=True)
        report, self.report = self.report, CycleReport()
        report.duration_s = time.monotonic() - started
        return report

    def heartbeat(self, cycle_started: float) -> None:
        r = self.report
        if self.metrics is not None:
            self.metrics.cycle(self.market.name, r)
        log.info(
            "cycle",
            market=self.market.name,
            cycle=self.cycles,
            polled=r.finished,
            started=r.started,
            skipped=r.skipped,
            failed=r.incomplete + r.errors,
            closed=r.closed,
            slots_seen=r.slots,
            records=r.records,
            requests=r.requests,
            retries=r.retries,
            fallback_venues=r.fallback_venues,
            coverage_contradictions=r.contradictions,
            running=len(self.running),
            window=f"{self.window[0].date}..{self.window[-1].date}" if self.window else "",
            duration_s=round(time.monotonic() - cycle_started, 2),
        )
        self.report = CycleReport()

    async def run_forever(self, stop: asyncio.Event) -> None:
        interval = self.market.poll_interval
        while not stop.is_set():
            cycle_started = time.monotonic()
            if self.cycles:
                self.heartbeat(self._last_cycle)
            self._last_cycle = cycle_started
            self.start_cycle()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
        await self.shutdown()

    _last_cycle: float = 0.0

    async def shutdown(self, grace: float | None = None) -> None:
        grace = self.settings.providers.request_timeout if grace is None else grace
        tasks = list(self.running.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:  # a fetch cut short writes nothing: unknown, never empty
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for provider in self.providers.values():
            await provider.aclose()
        left = self.writer.flush(30.0)
        log.info("producer_stopped", unflushed=left)


GC_THRESHOLD = (100_000, 50, 100)
"""Fewer, cheaper garbage collections for a process that makes millions of short-lived
objects a cycle (parsed pages, slots; ``drops.runtime.tune_gc``). With CPython's default
thresholds the collector walks the growing heap again and again; measured on a 10,000-venue
cycle it doubled the CPU of parsing. Objects alive at start-up are frozen out of its view."""


def _sid(ms: int) -> str:
    return f"{ms:x}-{uuid.uuid4().hex[:12]}"


def log_config(conf: config.Config, settings: ProducerSettings) -> None:
    """What the producer polls, one line per provider and per market (never a key)."""
    for p in conf.providers.values():
        log.info(
            "provider_config",
            provider=p.name,
            base_url=p.base_url,
            concurrency=p.concurrency,
            rate_limit=p.rate_limit,
            key_from=p.api_key_env or "-",
        )
    for m in conf.markets:
        log.info(
            "producer_start",
            market=m.name,
            time_zone=m.time_zone,
            providers=list(m.providers),
            party_sizes=list(m.party_sizes),
            buckets=m.days * len(m.time_slots),
            poll_interval=m.poll_interval,
            area=m.area is not None,
            venues={k: len(v) for k, v in m.venues.items()},
            config=conf.source,
            topic=settings.topics.snapshots,
        )


async def _main(settings: ProducerSettings) -> None:
    from drops.kafka import KafkaAccessError
    from drops.topics import check_topics
    from producers.kafka import Writer
    from producers.providers import factory

    conf = config.load(settings)  # a ConfigError names the bad key and stops the start
    s = settings
    try:
        check_topics(s, [s.topics.snapshots, s.topics.stats, s.topics.producers], "producer")
    except KafkaAccessError as exc:
        if exc.refused:  # credentials or TLS: no retry helps
            raise
        log.warning("topic_check_failed", error=str(exc))  # a broker away: the writer retries
    from producers.fleet import Fleet

    transport = factory.transport_for(settings, conf)
    writer = Writer(settings)
    services = [
        ProducerService(settings, factory.build_market(settings, conf, m, transport), writer, m)
        for m in conf.markets
    ]
    reg = registry("producer")
    metrics = ProducerMetrics(reg)
    for svc in services:
        svc.metrics = metrics
    serve(reg, settings.producer.metrics_port, settings.metrics.host)
    for svc in services:
        svc.held = frozenset()  # nothing until the group assigns partitions to this replica
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log_config(conf, settings)

    async def reassign(held: frozenset[int]) -> None:
        await transport.share(max(len(held), 1) / settings.topics.producers_partitions)
        for svc in services:
            svc.reassign(held)

    def on_change(held: frozenset[int]) -> None:  # the fleet's thread, in a group callback
        # applied before the callback returns: a revoked partition goes to another replica
        # only once this one has stopped scheduling its streams
        future = asyncio.run_coroutine_threadsafe(reassign(held), loop)
        with contextlib.suppress(Exception):
            future.result(timeout=10)

    interval = min(m.poll_interval for m in conf.markets)
    fleet = Fleet(settings, interval, on_change)
    fleet.start()
    try:
        await asyncio.gather(*(svc.run_forever(stop) for svc in services))
    finally:
        fleet.close()
        await transport.aclose()


def run(settings: ProducerSettings) -> None:
    """Poll until SIGTERM/SIGINT, then finish or cancel fetches and flush the producer."""
    tune_gc(*GC_THRESHOLD)
    asyncio.run(_main(settings))
