"""Processor benchmark: slot observations a second through the real pipeline (Kafka in, RocksDB
state, changelog, exactly-once, drops out) beside the same decode + rule code run in-process;
peak RSS; recovery time from the changelog; snapshot-to-readable-drop latency.

    python -m bench.processor_bench --quick      # 8 buckets x 50,000 slots
    python -m bench.processor_bench              # 28 buckets x 200,000 slots

Records are v2 snapshots (``schemas/SNAPSHOT_FORMAT.md``) generated bucket by bucket while they
are consumed (the history is never in memory at once): a baseline, then ``--polls`` polls in
which ~1% of each bucket's slots change. Uses the broker at DROPS_KAFKA__BOOTSTRAP (started if it
does not answer) and its own topics.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from confluent_kafka import Producer, TopicPartition

from bench.processor_harness import ProcessorProc, wait_processed
from domain import rule
from drops import kafka
from drops.settings import Settings
from processors.state import StateStore
from schemas import Slot, Snapshot, decode_snapshot, encode, pack_snapshot, slot_id_int
from shell import broker

TTL_MS = 7_200_000
SLOTS_PER_VENUE = 10


@dataclass
class Universe:
    """Every slot a bucket can show: ids, venue of each, rows (bytes + offsets), venues."""

    ids: npt.NDArray[np.uint64]
    rows: npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.int64]
    venue_ids: list[bytes]  # one JSON string each
    venues: list[bytes]  # one JSON venue entry (the details) each


def bucket_name(b: int) -> tuple[str, str, str]:
    date, ts = f"2026-12-{1 + b // 2:02d}", "19:00" if b % 2 else "15:00"
    return f"nyc:{date}:{ts.replace(':', '')}", date, ts


def universe(b: int, size: int) -> Universe:
    _, date, _ = bucket_name(b)
    ids = np.empty(size, dtype=np.uint64)
    rows: list[bytes] = []
    venues: list[bytes] = []
    venue_ids: list[bytes] = []
    for k in range(size):
        v = k // SLOTS_PER_VENUE
        venue = f"{b}-{v}"
        m = k % SLOTS_PER_VENUE
        t = f"{date} {17 + m // 4}:{(m % 4) * 15:02d}:00"
        if m == 0:
            venue_ids.append(orjson.dumps(venue))
            venues.append(orjson.dumps(["resy", f"Venue {venue}", "EST5EDT", "Soho"]))
        ids[k] = slot_id_int("resy", venue, t)
        booking = f"rgs://resy/{venue}/{2_300_000 + k}/2/{date}/{t[11:]}/2/Dining Room"
        rows.append(orjson.dumps([t, ["Dining Room"], 2, 4, booking]))
    offsets = np.zeros(size + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in rows])
    buf = np.frombuffer(b"".join(rows), dtype=np.uint8)
    return Universe(ids, buf, offsets, venue_ids, venues)


def gather_rows(u: Universe, sel: npt.NDArray[np.int64]) -> tuple[bytes, npt.NDArray[np.uint32]]:
    """The rows of ``sel`` concatenated, and their offsets (vectorized)."""
    starts, lens = u.offsets[sel], u.offsets[sel + 1] - u.offsets[sel]
    offs = np.zeros(len(sel) + 1, dtype=np.int64)
    np.cumsum(lens, out=offs[1:])
    idx = np.repeat(starts - offs[:-1], lens) + np.arange(offs[-1], dtype=np.int64)
    return u.rows[idx].tobytes(), offs.astype(np.uint32)


def records(
    b: int, u: Universe, sel: npt.NDArray[np.int64], i: int, polled: int, per_part: int
) -> Iterator[tuple[bytes, bytes, int]]:
    """One fetch of bucket ``b`` showing slots ``sel``: (key, v2 value, slots) per part."""
    bid, date, ts = bucket_name(b)
    parts = max(1, -(-len(sel) // per_part))
    for p in range(parts):
        part = sel[p * per_part : (p + 1) * per_part]
        head = Snapshot(
            snapshot_id=f"{b}-{i}", kind="baseline" if i == 0 else "poll", market="nyc",
            provider="resy", bucket_id=bid, date=date, time_slot=ts, polled_at_ms=polled,
            complete=True, part=p, parts=parts,
        )  # fmt: skip
        venue = part // SLOTS_PER_VENUE
        v0 = int(venue[0]) if len(part) else 0
        v1 = int(venue[-1]) + 1 if len(part) else 0
        keys = b"[" + b",".join(u.venue_ids[v0:v1]) + b"]"
        table = b"[" + b",".join(u.venues[v0:v1]) + b"]"
        rows, offs = gather_rows(u, part)
        vidx = (venue - v0).astype(np.uint32)
        value = pack_snapshot(head, u.ids[part], vidx, keys, table, v1 - v0, offs, rows)
        yield f"{bid}/resy".encode(), value, len(part)


def history(
    buckets: int, n: int, polls: int, per_part: int, universes: list[Universe]
) -> Iterator[tuple[bytes, bytes, int]]:
    """The whole benchmark input, generated as it is consumed (same every call)."""
    rng = np.random.default_rng(1)
    size = n + n // 50
    base = np.arange(size) < n
    for i in range(polls + 1):
        for b in range(buckets):
            flip = rng.random(size) < (0.01 if i else 0.0)  # ~1% of the slots change
            sel = np.flatnonzero(base ^ flip)
            yield from records(b, universes[b], sel, i, 1_000_000 + i * 30_000 + b, per_part)


class DictStore:
    """Bytes by key in a dict: the state layout's cost without RocksDB (for the breakdown)."""

    def __init__(self) -> None:
        self.data: dict[Any, bytes] = {}

    def get_bytes(self, key: Any, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set_bytes(self, key: Any, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: Any) -> None:
        self.data.pop(key, None)


def in_process(gen: Iterator[tuple[bytes, bytes, int]]) -> dict[str, float]:
    """Seconds spent in each stage of the processor's per-record work, without Kafka."""
    states: dict[bytes, rule.BucketState] = {}
    stores: dict[bytes, DictStore] = {}
    layout = StateStore()
    t = {"decode": 0.0, "rule": 0.0, "events": 0.0, "state": 0.0, "obs": 0.0, "drops": 0.0}
    for key, value, n in gen:
        t0 = time.perf_counter()
        snap = decode_snapshot(value)
        t1 = time.perf_counter()
        out = rule.apply(states.setdefault(key, rule.BucketState()), snap, TTL_MS)
        t2 = time.perf_counter()
        for e in rule.events(snap, out):
            encode(e)
        t3 = time.perf_counter()
        store = stores.setdefault(key, DictStore())
        st = layout.load(key, store)
        if st is not states[key]:  # first sight: the layout's cache holds this state now
            layout._cache[key] = (layout._cache[key][0], states[key])
        layout.save(key, store, states[key])
        t4 = time.perf_counter()
        t["decode"] += t1 - t0
        t["rule"] += t2 - t1
        t["events"] += t3 - t2
        t["state"] += t4 - t3
        t["obs"] += n
        t["drops"] += len(out.opened) + len(out.closed)
    return t


def vmhwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


def producer(settings: Settings) -> Producer:
    return kafka.producer(
        settings,
        {
            "partitioner": "murmur2_random",  # the same as Quix's and the producers'
            "enable.idempotence": True,
            "message.max.bytes": settings.kafka.max_message_bytes,
            "compression.type": "lz4",  # as the producers write
            "linger.ms": 20,
            "queue.buffering.max.kbytes": 512 * 1024,
        },
    )


def demo_slot(b: int, k: int) -> Slot:
    return Slot("resy", f"{b}-{k}", f"Venue {k}", "2026-12-30 19:00:00", "EST5EDT", "Soho",
                ("Dining Room",), 2, 4, f"rgs://resy/{b}-{k}")  # fmt: skip


def latency(settings: Settings, samples: int) -> list[float]:
    """Seconds from producing a snapshot with one new slot to its drop being read (committed)."""
    c = kafka.consumer(
settings, { "group.id": uuid.uuid4().hex,
                  "isolation.level": "read_committed", "auto.offset.reset": "latest"})  # fmt: skip
    parts = (
        c.list_topics(settings.topics.drops, timeout=10).topics[settings.topics.drops].partitions
    )
    c.assign([TopicPartition(settings.topics.drops, p, -1) for p in parts])  # the end
    c.poll(1.0)
    p = producer(settings)
    bid = "nyc:2026-12-30:1900"
    base = [demo_slot(99, k) for k in range(50)]

    def snap(i: int, slots: list[Slot]) -> bytes:
        return encode(Snapshot(f"lat-{i}", "baseline" if i == 0 else "poll", "nyc", "resy", bid,
                               "2026-12-30", "19:00", 10**12 + i * 1000, True,
                               slots=tuple(slots)))  # fmt: skip

    p.produce(settings.topics.snapshots, key=f"{bid}/resy".encode(), value=snap(0, base))
    p.flush()
    out = []
    for i in range(samples):
        extra = demo_slot(98, i)
        sent = time.perf_counter()
        p.produce(settings.topics.snapshots, key=f"{bid}/resy".encode(),
                  value=snap(i + 1, [*base, extra]))  # fmt: skip
        p.flush()
        while True:
            msg = c.poll(10.0)
            if msg is None:
                raise RuntimeError("no drop within 10 s")
            if msg.error() is None and orjson.loads(msg.value())["slot_id"] == extra.slot_id:
                out.append(time.perf_counter() - sent)
                break
        time.sleep(random.uniform(0.05, 0.3))
    c.close()
    return out


def wait_log(proc: ProcessorProc, text: str, deadline_s: float = 600) -> None:
    deadline = time.monotonic() + deadline_s
    while text not in proc.log():
        if not proc.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"no {text!r} in the processor's log:\n{proc.log()[-3000:]}")
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--buckets", type=int)
    ap.add_argument("--slots", type=int)
    ap.add_argument("--polls", type=int, default=3)
    ap.add_argument("--part", type=int, default=25_000, help="slots per snapshot record")
    ap.add_argument("--skip-pipeline", action="store_true", help="the in-process figures only")
    ap.add_argument(
        "--json", action="store_true", help='last stdout line: {"figures": [...]} for drops bench'
    )
    args = ap.parse_args()
    buckets = args.buckets or (8 if args.quick else 28)
    n = args.slots or (50_000 if args.quick else 200_000)
    tag = uuid.uuid4().hex[:8]
    base = Settings()
    work = (base.data_dir / "bench" / tag).resolve()
    settings = base.model_copy(update={
        "snapshot_topic": f"bench{tag}.snapshots", "drops_topic": f"bench{tag}.events",
        "deadletter_topic": f"bench{tag}.deadletter", "stats_topic": f"bench{tag}.buckets",
        "processor_group": f"bench{tag}", "state_path": work / "state", "log_format": "text",
    })  # fmt: skip
    t = time.perf_counter()
    universes = [universe(b, n + n // 50) for b in range(buckets)]
    print(
        f"{buckets} buckets x {n:,} slots (+2% churn pool) built in {time.perf_counter() - t:.0f} s"
    )

    def gen() -> Iterator[tuple[bytes, bytes, int]]:
        return history(buckets, n, args.polls, args.part, universes)

    t = time.perf_counter()
    recs, mb, obs = 0, 0.0, 0
    for _, value, count in gen():
        recs, mb, obs = recs + 1, mb + len(value) / 1e6, obs + count
    gen_s = time.perf_counter() - t
    print(f"{recs} records, {mb:,.0f} MB, {obs:,} slot observations (generated in {gen_s:.0f} s)")
    ip = in_process(gen())
    work_s = ip["decode"] + ip["rule"] + ip["events"]
    print(f"in-process: {ip['obs'] / work_s:,.0f} obs/s decode+rule+drop records "
          f"({ip['drops']:,.0f} drops/closes)")  # fmt: skip
    if args.skip_pipeline:
        return

    broker.start(settings)
    broker.ensure_topics(settings)
    p = producer(settings)
    t = time.perf_counter()
    for key, value, _ in gen():
        while True:
            try:
                p.produce(settings.topics.snapshots, key=key, value=value)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(300) == 0
    print(f"written to Kafka in {time.perf_counter() - t:.0f} s")
    work.mkdir(parents=True, exist_ok=True)
    proc = ProcessorProc(settings, work / "processor.log")
    wait_log(proc, "started and is now processing")
    t0 = time.perf_counter()
    wait_processed(settings, proc, 3600)
    done = time.time()
    total_s = time.perf_counter() - t0
    # throughput from the first record consumed (the start-up, group join and partition
    # assignment before it are not throughput) to the last offsets committed (so the final
    # commit wait, up to commit_interval, counts)
    first = re.search(r"first_record at_ms=(\d+)", proc.log())
    assert first, "no first_record line in the processor's log"
    pipe_s = done - int(first.group(1)) / 1000
    pipeline = obs / pipe_s
    rss = vmhwm_mb(proc.proc.pid)
    lat = latency(settings, 20 if args.quick else 50)
    proc.stop()

    shutil.rmtree(settings.state_dir)
    proc = ProcessorProc(settings, work / "recovery.log")
    wait_log(proc, "started and is now processing")
    t1 = time.perf_counter()
    wait_log(proc, "Recovery process complete")
    recovery = time.perf_counter() - t1
    rss_recovery = vmhwm_mb(proc.proc.pid)
    proc.stop()
    q = statistics.quantiles(lat, n=100)
    in_proc = ip["obs"] / work_s
    print(f"""
processor benchmark: {buckets} buckets x {n:,} slots, {args.polls} polls + baseline, \
{args.part:,} slots a record, {recs} records ({mb:,.0f} MB v2)
  in-process, same code (no Kafka):
    decode                              {ip['obs'] / ip['decode']:>14,.0f} observations/s
    rule                                {ip['obs'] / ip['rule']:>14,.0f} observations/s
    drop records                        {ip['obs'] / max(ip['events'], 1e-9):>14,.0f} observations/s
    decode + rule + drop records        {in_proc:>14,.0f} observations/s
    ... + state layout (dict store)     {ip['obs'] / (work_s + ip['state']):>14,.0f} observations/s
  pipeline (Kafka, RocksDB, changelog,
            exactly-once, drops out)    {pipeline:>14,.0f} observations/s  \
({pipeline / in_proc:.0%} of decode + rule + drop records; {pipe_s:.1f} s)
    with start-up (join, assignment)    {obs / total_s:>14,.0f} observations/s  ({total_s:.1f} s)
  peak RSS of the processor             {rss:>14,.0f} MB (recovery run: {rss_recovery:,.0f} MB)
  recovery from the changelog           {recovery:>14.1f} s (state dir wiped)
  latency snapshot -> readable drop     p50 {q[49] * 1000:,.0f} ms, p99 {q[98] * 1000:,.0f} ms \
(commit_interval {settings.processor.commit_interval} s)
""")  # fmt: skip
    if args.json:
        size = f"{buckets}x{n // 1000}k"
        print(orjson.dumps({"figures": figures(
            size, pipeline, obs / total_s, in_proc, rss, recovery, q[49] * 1000, q[98] * 1000,
            full=(buckets, n) == (28, 200_000),
        )}).decode())  # fmt: skip


def figures(
    size: str,
    pipeline: float,
    with_start: float,
    in_proc: float,
    rss: float,
    recovery: float,
    p50_ms: float,
    p99_ms: float,
    full: bool,
) -> list[dict[str, Any]]:
    """The figures for ``drops bench``. The goals are for the full size: a smaller run is
    dominated by fixed costs (the last commit waits up to ``commit_interval``), so its figures
    say nothing about them (``ok`` is None)."""
    ratio = 100 * pipeline / in_proc

    def fig(metric: str, value: float, unit: str, goal: str = "", ok: bool | None = None) -> Any:
        return {"area": "processor", "metric": metric, "value": round(value, 2), "unit": unit,
                "goal": goal, "ok": ok}  # fmt: skip

    return [
        fig(f"pipeline throughput ({size})", pipeline, "obs/s", ">= 2,000,000 obs/s at 28x200k",
            pipeline >= 2_000_000 if full else None),
        fig(f"pipeline incl. start-up ({size})", with_start, "obs/s"),
        fig(f"in-process decode+rule+drops ({size})", in_proc, "obs/s"),
        fig(f"pipeline / in-process ({size})", ratio, "%", ">= 50 % at 28x200k",
            ratio >= 50 if full else None),
        fig(f"peak RSS ({size})", rss, "MB", "<= 1024 MB at 28x200k",
            rss <= 1024 if full else None),
        fig(f"recovery from changelog ({size})", recovery, "s"),
        fig("latency snapshot -> drop p50", p50_ms, "ms"),
        fig("latency snapshot -> drop p99", p99_ms, "ms"),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
