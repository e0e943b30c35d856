"""Processor benchmark: slot observations a second through the real pipeline (Kafka in, RocksDB
state, changelog, exactly-once, drops out) beside the same rule run in-process; peak RSS;
recovery time from the changelog; snapshot-to-readable-drop latency.

    python -m bench.processor_bench --quick      # 4 buckets x 20,000 slots
    python -m bench.processor_bench              # 28 buckets x 200,000 slots

Uses the broker at DROPS_KAFKA_BOOTSTRAP (started if it does not answer) and its own topics.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from domain import rule
from drops import broker
from drops.settings import Settings
from schemas import decode_snapshot, slot_id
from tests.integration.test_processor_harness import (
    ProcessorProc,
    producer,
    wait_processed,
)

PART = 2000


def bucket_slots(b: int, n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        venue = f"{b}-{i // 10}"
        t = f"2026-12-{1 + b // 2:02d} {17 + (i % 10) // 4}:{(i % 4) * 15:02d}:00"
        out.append(
            {
                "provider": "resy",
                "venue_id": venue,
                "venue_name": f"Venue {venue}",
                "actual_time": t,
                "time_zone": "EST5EDT",
                "neighborhood": "Soho",
                "seating_types": ["Dining Room"],
                "party_min": 2,
                "party_max": 4,
                "booking": f"https://example.invalid/{venue}",
                "slot_id": slot_id("resy", venue, t),
            }
        )
    return out


def records(b: int, slots: list[dict[str, Any]], i: int, polled: int) -> list[tuple[bytes, bytes]]:
    date, ts = f"2026-12-{1 + b // 2:02d}", "19:00" if b % 2 else "15:00"
    bid = f"nyc:{date}:{ts.replace(':', '')}"
    parts = max(1, -(-len(slots) // PART))
    out = []
    for p in range(parts):
        doc = {
            "v": 1, "snapshot_id": f"{b}-{i}", "kind": "baseline" if i == 0 else "poll",
            "market": "nyc", "provider": "resy", "bucket_id": bid, "date": date,
            "time_slot": ts, "polled_at_ms": polled, "complete": True, "part": p,
            "parts": parts, "failures": [], "slots": slots[p * PART : (p + 1) * PART],
        }  # fmt: skip
        out.append((f"{bid}/resy".encode(), orjson.dumps(doc)))
    return out


def history(buckets: int, n: int, polls: int) -> tuple[list[tuple[bytes, bytes]], int]:
    rng = random.Random(1)
    recs: list[tuple[bytes, bytes]] = []
    obs = 0
    universe = [bucket_slots(b, n + n // 50) for b in range(buckets)]
    for i in range(polls + 1):
        for b in range(buckets):
            # ~1% of the slots change each poll
            present = [s for k, s in enumerate(universe[b][: n + n // 50]) if
                       (k < n) != (rng.random() < 0.01)]  # fmt: skip
            recs += records(b, present, i, 1_000_000 + i * 30_000 + b)
            obs += len(present)
    return recs, obs


def in_process(recs: list[tuple[bytes, bytes]], obs: int) -> tuple[float, float]:
    """(observations/s of decode + rule, of the rule alone)."""
    t0 = time.perf_counter()
    snaps = [decode_snapshot(v) for _, v in recs]
    t1 = time.perf_counter()
    states: dict[bytes, rule.BucketState] = {}
    for (k, _), s in zip(recs, snaps, strict=True):
        rule.apply(states.setdefault(k, rule.BucketState()), s, 7_200_000)
    t2 = time.perf_counter()
    return obs / (t2 - t0), obs / (t2 - t1)


def vmhwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


def latency(settings: Settings, samples: int) -> list[float]:
    """Seconds from producing a one-slot-new snapshot to its drop being read (committed)."""
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": uuid.uuid4().hex,
                  "isolation.level": "read_committed", "auto.offset.reset": "latest"})  # fmt: skip
    c.assign([TopicPartition(settings.drops_topic, 0, -1)])  # the end
    c.poll(1.0)
    p = producer(settings)
    base = bucket_slots(99, 50)
    extra = bucket_slots(98, samples)
    for r in records(99, base, 0, 10**12):
        p.produce(settings.snapshot_topic, key=r[0], value=r[1])
    p.flush()
    out = []
    for i in range(samples):
        sent = time.perf_counter()
        for k, v in records(99, [*base, extra[i]], i + 1, 10**12 + (i + 1) * 1000):
            p.produce(settings.snapshot_topic, key=k, value=v)
        p.flush()
        while True:
            msg = c.poll(5.0)
            if msg is None:
                raise RuntimeError("no drop within 5 s")
            if msg.error() is None and orjson.loads(msg.value())["slot_id"] == extra[i]["slot_id"]:
                out.append(time.perf_counter() - sent)
                break
        time.sleep(random.uniform(0.05, 0.3))
    c.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--buckets", type=int)
    ap.add_argument("--slots", type=int)
    ap.add_argument("--polls", type=int, default=3)
    args = ap.parse_args()
    buckets = args.buckets or (4 if args.quick else 28)
    n = args.slots or (20_000 if args.quick else 200_000)
    tag = uuid.uuid4().hex[:8]
    base = Settings()
    work = (base.data_dir / "bench" / tag).resolve()
    settings = base.model_copy(update={
        "snapshot_topic": f"bench{tag}.snapshots", "drops_topic": f"bench{tag}.events",
        "deadletter_topic": f"bench{tag}.deadletter", "stats_topic": f"bench{tag}.buckets",
        "processor_group": f"bench{tag}", "state_path": work / "state", "log_format": "text",
    })  # fmt: skip
    broker.start(settings)
    broker.ensure_topics(settings)
    print(f"building {buckets} buckets x {n} slots, {args.polls} polls after the baseline ...")
    recs, obs = history(buckets, n, args.polls)
    mb = sum(len(v) for _, v in recs) / 1e6
    print(f"{len(recs)} records, {mb:.0f} MB of JSON, {obs:,} slot observations")
    dec_rule, rule_only = in_process(recs, obs)

    p = producer(settings)
    for k, v in recs:
        p.produce(settings.snapshot_topic, key=k, value=v)
        p.poll(0)
    p.flush(120)
    work.mkdir(parents=True, exist_ok=True)
    proc = ProcessorProc(settings, work / "processor.log")
    while "started and is now processing" not in proc.log():
        time.sleep(0.05)
    t0 = time.perf_counter()
    wait_processed(settings, proc, 3600)
    pipeline = obs / (time.perf_counter() - t0)
    lat = latency(settings, 20 if args.quick else 50)
    rss = vmhwm_mb(proc.proc.pid)
    proc.stop()

    shutil.rmtree(settings.state_dir)
    proc = ProcessorProc(settings, work / "recovery.log")
    while "started and is now processing" not in proc.log():
        time.sleep(0.05)
    t1 = time.perf_counter()
    while "Recovery process complete" not in proc.log():
        time.sleep(0.05)
    recovery = time.perf_counter() - t1
    rss_recovery = vmhwm_mb(proc.proc.pid)
    proc.stop()
    q = statistics.quantiles(lat, n=100)
    print(f"""
processor benchmark: {buckets} buckets x {n:,} slots, {args.polls} polls + baseline, parts of {PART}
  in-process, rule only (no decode)     {rule_only:>14,.0f} observations/s
  in-process, JSON decode + rule        {dec_rule:>14,.0f} observations/s
  pipeline (Kafka, RocksDB, changelog,
            exactly-once, drops out)    {pipeline:>14,.0f} observations/s  ({pipeline / dec_rule:.0%} of decode + rule)
  peak RSS of the processor             {rss:>14,.0f} MB (recovery run: {rss_recovery:,.0f} MB)
  recovery from the changelog           {recovery:>14.1f} s (state dir wiped)
  latency snapshot -> readable drop     p50 {q[49] * 1000:,.0f} ms, p99 {q[98] * 1000:,.0f} ms (commit_interval {settings.commit_interval} s)
""")  # noqa: E501


if __name__ == "__main__":
    main()
