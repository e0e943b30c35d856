"""The producer's decisions, as pure functions: what to poll now, what to skip, which buckets
to close, and how one fetch becomes snapshot records (parts within Kafka's record limit).

The service (:mod:`producers.service`) is a thin shell around these.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Literal

import numpy as np
import orjson

from domain.calendar import Bucket, diff_windows
from producers.providers.base import BucketQuery, FetchResult, SlotTable
from producers.windows import bucket_window
from schemas import BucketStats, Failure, Snapshot, encode, stream_key
from schemas.records import pack_snapshot, venue_row

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
    entered: list[Bucket] = field(default_factory=list)  # new in the window
    due: set[str] = field(default_factory=set)  # streams whose baseline build is still due


@dataclass(slots=True)
class BaselineProgress:
    """Progress of a round of baseline builds (2 a day per provider, at the slide): a
    round starts when builds are planned while none is pending and ends when every one has
    finished, written or not (a crashed or dropped build counts as done and failed)."""

    total: int = 0
    done: int = 0
    failed: int = 0  # incomplete, crashed or dropped
    slots: int = 0
    started: float = 0.0

    @property
    def active(self) -> bool:
        return self.done < self.total

    def planned(self, jobs: int, now: float) -> None:
        if not self.active:
            self.total = self.done = self.failed = self.slots = 0
            self.started = now
        self.total += jobs

    def finished(self, slots: int, ok: bool) -> None:
        self.done += 1
        self.slots += slots
        self.failed += 0 if ok else 1

    def fields(self, now: float) -> dict[str, object]:
        elapsed = now - self.started
        return {
            "progress": f"{self.done}/{self.total}",
            "line": f"baseline {self.done}/{self.total} done, {self.slots:,} slots, "
            f"{self.failed} incomplete, {elapsed:.1f}s",
            "slots_total": self.slots,
            "incomplete": self.failed,
            "elapsed_s": round(elapsed, 2),
        }


def plan_cycle(
    previous: list[Bucket],
    window: list[Bucket],
    providers: tuple[str, ...],
    running: set[str],
    due: set[str],
) -> Plan:
    """One poll cycle: a job per bucket per provider, except those whose previous fetch is
    still running (skipped and counted, never queued); buckets that left the window are
    closed.

    A baseline build (``kind="baseline"``) is only for a bucket that entered the window while
    this producer runs (the slide), until one is written (``due``: the stream keys still
    waiting for theirs; :attr:`Plan.due` is the new set). The first window after a start has
    none: the producer cannot know what the processor holds, and a restart must never
    replace a baseline, so those streams are polled; the processor takes a stream's first
    snapshot as its baseline when it has none (a first start, a producer down across the
    slide)."""
    left, entered = diff_windows(previous, window)
    plan = Plan(closed=left, entered=entered)
    gone = {stream_key(b.bucket_id, p) for b in left for p in providers}
    plan.due = due - gone
    if previous:  # the window slid while we ran: the new buckets get their baseline build
        plan.due |= {stream_key(b.bucket_id, p) for b in entered for p in providers}
    for bucket in window:
        for provider in providers:
            key = stream_key(bucket.bucket_id, provider)
            if key in running:
                plan.skipped.append(key)
                continue
            plan.jobs.append(Job(bucket, provider, "baseline" if key in plan.due else "poll"))
    return plan


def query_for(bucket: Bucket, time_slots: tuple[str, ...], party_size: int) -> BucketQuery:
    return BucketQuery(
        date=bucket.date.isoformat(),
        time_slot=bucket.time_slot,
        party_size=party_size,
        window=bucket_window(bucket.time_slot, time_slots),
    )


def chunk_ranges(
    table: SlotTable, per_record: int, max_bytes: int, header_bytes: int = 0
) -> list[tuple[int, int]]:
    """Slot index ranges ``[a, b)`` of at most ``per_record`` slots whose v2 record stays
    under ``max_bytes`` (minus a margin and the header); at least one (possibly empty)."""
    limit = max_bytes - RECORD_MARGIN - header_bytes
    per_record = max(per_record, 1)
    n = len(table)
    if n == 0:
        return [(0, 0)]
    # prefix sums: 16 bytes a slot (id, venue index, offset) plus its row; a venue's JSON
    row_cum = [0, *accumulate(16 + len(r) for r in table.rows)]
    ven_cum = [0, *accumulate(8 + sum(map(len, v)) + len(table.provider) for v in table.venues)]
    venue_of = table.venue_of
    out: list[tuple[int, int]] = []

    def size(a: int, b: int) -> int:
        return row_cum[b] - row_cum[a] + ven_cum[venue_of[b - 1] + 1] - ven_cum[venue_of[a]]

    def add(a: int, b: int) -> None:
        if size(a, b) <= limit:
            out.append((a, b))
        elif b - a <= 1:
            raise ValueError(f"one slot is {size(a, b)} bytes, over the record limit")
        else:
            mid = (a + b) // 2
            add(a, mid)
            add(mid, b)

    for a in range(0, n, per_record):
        add(a, min(a + per_record, n))
    return out


def pack_part(header: Snapshot, table: SlotTable, a: int, b: int) -> bytes:
    """Slots ``[a, b)`` of ``table`` as one snapshot v2 record (``schemas.pack_snapshot``)."""
    if b <= a:
        return encode(header)
    j0, j1 = table.venue_of[a], table.venue_of[b - 1] + 1
    venues = table.venues[j0:j1]
    rows = table.rows[a:b]
    offsets = np.zeros(b - a + 1, dtype=np.uint32)
    offsets[1:] = np.cumsum(np.fromiter(map(len, rows), dtype=np.int64, count=b - a))
    return pack_snapshot(
        header,
        np.array(table.ids[a:b], dtype=np.uint64),
        (np.array(table.venue_of[a:b], dtype=np.int64) - j0).astype(np.uint32),
        orjson.dumps([v[0] for v in venues]),
        orjson.dumps([venue_row((table.provider, *v[1:])) for v in venues]),
        len(venues),
        offsets,
        b"".join(rows),
    )


DISPLAY_MAX = 200  # characters of a venue name or neighborhood (display strings) kept


def bounded(table: SlotTable, slot_limit: int) -> tuple[SlotTable, list[str]]:
    """``table`` with display strings cut to :data:`DISPLAY_MAX` characters and without the
    venues that have a slot over ``slot_limit`` bytes (returned by id: each is a venue
    failure, its slots unknown). The same table when nothing needs either."""
    long_names = any(
        max(len(v[1]), len(v[3]), len(v[4]), len(v[5])) > DISPLAY_MAX for v in table.venues
    )
    venue_bytes = [8 + sum(map(len, v)) + len(table.provider) for v in table.venues]
    worst = max(map(len, table.rows), default=0) + 16 + max(venue_bytes, default=0)
    if not long_names and worst <= slot_limit:
        return table, []
    bad = {
        table.venue_of[i]
        for i, row in enumerate(table.rows)
        if 16 + len(row) + venue_bytes[table.venue_of[i]] > slot_limit
    }
    out = SlotTable(table.provider)
    index: dict[int, int] = {}
    for i, j in enumerate(table.venue_of):
        if j in bad:
            continue
        k = index.get(j)
        if k is None:
            vid, name, tz, hood, slug, city = table.venues[j]
            k = index[j] = len(out.venues)
            if max(len(slug), len(city)) > DISPLAY_MAX:  # cut, it would be a wrong link: none
                slug = city = ""
            out.venues.append((vid, name[:DISPLAY_MAX], tz, hood[:DISPLAY_MAX], slug, city))
        out.venue_of.append(k)
        out.ids.append(table.ids[i])
        out.rows.append(table.rows[i])
    return out, sorted(table.venues[j][0] for j in bad)


def to_records(
    result: FetchResult,
    job: Job,
    market: str,
    snapshot_id: str,
    polled_at_ms: int,
    slots_per_record: int,
    max_bytes: int,
) -> list[tuple[Snapshot, bytes]]:
    """One fetch as snapshot v2 records: ``(header, value bytes)`` per part, in order.

    Every part carries the ``complete`` flag and the failures of the whole fetch. The values
    are built from the fetch's columns by ``schemas.pack_snapshot``, the one writer of the
    layout (the same bytes ``schemas.encode`` writes for the same slots)."""

    complete, failures = result.complete, list(result.failures)

    def header(part: int, parts: int) -> Snapshot:
        return Snapshot(
            snapshot_id=snapshot_id,
            kind=job.kind,
            market=market,
            provider=job.provider,
            bucket_id=job.bucket.bucket_id,
            date=job.bucket.date.isoformat(),
            time_slot=job.bucket.time_slot,
            polled_at_ms=polled_at_ms,
            complete=complete,
            part=part,
            parts=parts,
            failures=tuple(failures),
        )

    # a venue with a slot that cannot fit any record is a venue failure (its slots unknown),
    # never a failed job (2,000 bytes kept for the failures this adds to the header)
    room = max_bytes - RECORD_MARGIN - len(encode(header(0, 1))) - 2_000
    table, failed = bounded(result.slots, room)
    if failed:
        complete = False
        failures += [Failure("venue", vid, "a slot over the record limit") for vid in failed]
    head = len(encode(header(0, 1)))
    ranges = chunk_ranges(table, slots_per_record, max_bytes, head)
    out = []
    for i, (a, b) in enumerate(ranges):
        h = header(i, len(ranges))
        value = pack_part(h, table, a, b)
        if len(value) > max_bytes:  # chunk_ranges' estimate is an upper bound: never here
            raise ValueError(f"snapshot part of {len(value)} bytes is over {max_bytes}")
        out.append((h, value))
    return out


def close_record(
    bucket: Bucket, provider: str, market: str, snapshot_id: str, now_ms: int
) -> bytes:
    """``kind="close"``: the bucket left the window; the processor drops its state."""
    return marker_record("close", bucket, provider, market, snapshot_id, now_ms)


def marker_record(
    kind: Literal["close", "rebaseline"],
    bucket: Bucket,
    provider: str,
    market: str,
    snapshot_id: str,
    now_ms: int,
) -> bytes:
    """A snapshot record without slots that tells the processor something about a stream:
    ``close`` (the bucket left the window) or ``rebaseline`` (an operator asked for a new
    baseline: the stream's next snapshot becomes it)."""
    return encode(
        Snapshot(
            snapshot_id=snapshot_id,
            kind=kind,
            market=market,
            provider=provider,
            bucket_id=bucket.bucket_id,
            date=bucket.date.isoformat(),
            time_slot=bucket.time_slot,
            polled_at_ms=now_ms,
            complete=True,
        )
    )


def rebaseline_targets(
    window: list[Bucket], providers: tuple[str, ...], bucket_ids: set[str], provider: str = ""
) -> list[Job]:
    """The streams an operator's rebaseline names: the buckets ``bucket_ids`` (every bucket
    of the window when empty) of ``provider`` (every provider when empty). A bucket outside
    the current window or an unknown provider is a :class:`ValueError` (a marker for a stream
    the processor will never close would stay in its state for ever)."""
    ids = {b.bucket_id for b in window}
    outside = sorted(bucket_ids - ids)
    if outside:
        first, last = (window[0].date, window[-1].date) if window else ("", "")
        raise ValueError(f"not in the market's window ({first}..{last}): {', '.join(outside)}")
    if provider and provider not in providers:
        raise ValueError(f"provider {provider!r} is not polled here ({', '.join(providers)})")
    chosen = (provider,) if provider else providers
    return [
        Job(b, p, "baseline")
        for b in window
        if not bucket_ids or b.bucket_id in bucket_ids
        for p in chosen
    ]


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


def stream_part(key: str, parts: int) -> int:
    """Which partition of the producers' assignment topic stands for stream ``key``: the
    replica assigned that partition polls the stream (stable across processes and releases)."""
    return zlib.crc32(key.encode()) % parts
