"""The producer's decisions, as pure functions: what to poll now, what to skip, which buckets
to close, and how one fetch becomes snapshot records (parts within Kafka's record limit).

The service (:mod:`producers.service`) is a thin shell around these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import orjson

from domain.calendar import Bucket, diff_windows
from producers.providers.base import BucketQuery, FetchResult, SlotRow
from producers.windows import bucket_window
from schemas import BucketStats, Snapshot, stream_key

JobKind = Literal["baseline", "poll"]
RECORD_MARGIN = 8_192  # bytes kept free under the broker's limit for the record envelope


@dataclass(frozen=True, slots=True)
class Job:
    bucket: Bucket
    provider: str
    kind: JobKind

    @property
    def key(self) -> str:
        return stream_key(self.bucket.bucket_id, self.provider)


@dataclass(slots=True)
class Plan:
    jobs: list[Job] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # stream keys still running
    closed: list[Bucket] = field(default_factory=list)  # left the window: send "close"
    entered: list[Bucket] = field(default_factory=list)  # new in the window: baseline builds


def plan_cycle(
    previous: list[Bucket],
    window: list[Bucket],
    providers: tuple[str, ...],
    running: set[str],
    baselined: set[str],
) -> Plan:
    """One poll cycle: a job per bucket per provider, except those whose previous fetch is
    still running (skipped and counted, never queued). A stream without a baseline yet gets
    a baseline build; buckets that left the window are closed."""
    left, entered = diff_windows(previous, window)
    plan = Plan(closed=left, entered=entered)
    for bucket in window:
        for provider in providers:
            job = Job(bucket, provider, "poll")
            if job.key in running:
                plan.skipped.append(job.key)
                continue
            if job.key not in baselined:
                job = Job(bucket, provider, "baseline")
            plan.jobs.append(job)
    return plan


def query_for(bucket: Bucket, time_slots: tuple[str, ...], party_size: int) -> BucketQuery:
    return BucketQuery(
        date=bucket.date.isoformat(),
        time_slot=bucket.time_slot,
        party_size=party_size,
        window=bucket_window(bucket.time_slot, time_slots),
    )


def chunk_slots(slots: list[SlotRow], per_record: int, max_bytes: int) -> list[bytes]:
    """The slots as JSON arrays of at most ``per_record`` slots and at most ``max_bytes``
    (minus a margin for the envelope) each; at least one (possibly empty) chunk."""
    limit = max_bytes - RECORD_MARGIN
    per_record = max(per_record, 1)
    out: list[bytes] = []

    def add(part: list[SlotRow]) -> None:
        data = orjson.dumps(part)
        if len(data) <= limit or len(part) <= 1:
            if len(data) > limit:
                raise ValueError(f"one slot is {len(data)} bytes, over the record limit")
            out.append(data)
            return
        half = len(part) // 2
        add(part[:half])
        add(part[half:])

    if not slots:
        return [b"[]"]
    for i in range(0, len(slots), per_record):
        add(slots[i : i + per_record])
    return out


def to_records(
    result: FetchResult,
    job: Job,
    market: str,
    snapshot_id: str,
    polled_at_ms: int,
    slots_per_record: int,
    max_bytes: int,
) -> list[tuple[Snapshot, bytes]]:
    """One fetch as snapshot records: ``(header, value bytes)`` per part, in order.

    Every part carries the ``complete`` flag and the failures of the whole fetch. The value is
    the JSON of ``schemas.encode(snapshot)`` with the slots spliced in (encoded once, natively).
    """
    chunks = chunk_slots(result.slots, slots_per_record, max_bytes)
    parts = len(chunks)
    out = []
    for i, slots_json in enumerate(chunks):
        header = Snapshot(
            snapshot_id=snapshot_id,
            kind=job.kind,
            market=market,
            provider=job.provider,
            bucket_id=job.bucket.bucket_id,
            date=job.bucket.date.isoformat(),
            time_slot=job.bucket.time_slot,
            polled_at_ms=polled_at_ms,
            complete=result.complete,
            part=i,
            parts=parts,
            failures=tuple(result.failures),
        )
        out.append((header, splice(header, slots_json)))
    return out


def splice(header: Snapshot, slots_json: bytes) -> bytes:
    doc = header.to_dict()
    doc.pop("slots")
    head = orjson.dumps(doc)
    return head[:-1] + b',"slots":' + slots_json + b"}"


def close_record(
    bucket: Bucket, provider: str, market: str, snapshot_id: str, now_ms: int
) -> bytes:
    """``kind="close"``: the bucket left the window; the processor drops its state."""
    snap = Snapshot(
        snapshot_id=snapshot_id,
        kind="close",
        market=market,
        provider=provider,
        bucket_id=bucket.bucket_id,
        date=bucket.date.isoformat(),
        time_slot=bucket.time_slot,
        polled_at_ms=now_ms,
        complete=True,
    )
    return splice(snap, b"[]")


def stats_for(
    result: FetchResult,
    job: Job,
    market: str,
    snapshot_id: str,
    polled_at_ms: int,
    duration_ms: int,
) -> BucketStats:
    return BucketStats(
        market=market,
        provider=job.provider,
        bucket_id=job.bucket.bucket_id,
        date=job.bucket.date.isoformat(),
        time_slot=job.bucket.time_slot,
        kind=job.kind,
        snapshot_id=snapshot_id,
        polled_at_ms=polled_at_ms,
        duration_ms=duration_ms,
        venues=result.venues,
        slots=len(result.slots),
        complete=result.complete,
        failures=len(result.failures),
        requests=result.requests,
        retries=result.retries,
    )


def parts_needed(n_slots: int, per_record: int) -> int:
    return max(1, math.ceil(n_slots / max(per_record, 1)))
