"""Replica figures: producer fail-over, processor throughput with 1 and 2 replicas, and the
time from a processor replica's kill to the survivor's first commit of the moved partitions
(drops become readable at commit, so it is the first drop of those partitions a reader can
see). On the project's 2 shared cores the sizes are small and two replicas compete for the
same cores: the throughput ratio says what the coordination costs, not what a second
machine would add.

    DROPS_KAFKA__BOOTSTRAP=127.0.0.1:19392 DROPS_KAFKA__CONTROLLER_PORT=19393 \
        python -m bench.replicas_bench [--quick] [--json]

(``drops bench`` runs it on its broker; run alone, it starts one on those ports.)
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from bench.pipeline import free_port, settings_env
from bench.processor_bench import history, producer, universe
from bench.processor_harness import ProcessorProc, committed, wait_processed
from drops import kafka
from drops.settings import Settings
from producers.core import stream_part
from schemas import decode_snapshot
from shell import broker
from simulator.control import serve
from simulator.market import Market
from simulator.server import create_app

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- probes (tests use them too)


def produce(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """``drops produce`` as a child process, its output appended to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "shell.cli", "produce"],
        cwd=ROOT,
        env=settings_env(settings),
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def held(log: Path) -> set[int] | None:
    """The assignment partitions a producer replica holds, from its last fleet line."""
    found = re.findall(r"fleet_(?:assigned|revoked|lost).*?held[=\"': ]+\[([0-9, ]*)\]",
                       log.read_text(errors="replace"))  # fmt: skip
    if not found:
        return None
    return {int(x) for x in found[-1].split(",") if x.strip()}


def polls(settings: Settings) -> dict[str, list[int]]:
    """Each stream's polls (polled_at_ms of part 0) on the snapshot topic, in order."""
    c = kafka.consumer(
settings, { "group.id": "probe",
                  "enable.partition.eof": True, "enable.auto.commit": False})  # fmt: skip
    topic = settings.topics.snapshots
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out: dict[str, list[int]] = defaultdict(list)
    at_end: set[int] = set()
    deadline = time.monotonic() + 30
    while len(at_end) < len(parts) and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            assert err.code() == KafkaError._PARTITION_EOF, err
            at_end.add(msg.partition())
            continue
        snap = decode_snapshot(msg.value())
        if snap.part == 0:
            out[snap.key].append(snap.polled_at_ms)
    c.close()
    return {k: sorted(v) for k, v in out.items()}


def members(settings: Settings) -> dict[str, set[int]]:
    """The processor group's live members (group instance id) and their partitions."""
    admin = kafka.admin(settings)
    for _ in range(5):  # a loaded broker may answer late
        desc = admin.describe_consumer_groups([settings.processor.group])
        try:
            group = desc[settings.processor.group].result(timeout=10)
            break
        except TimeoutError:
            continue
        except KafkaException:  # no coordinator for the group yet
            return {}
    else:
        raise AssertionError("the group was not described in 5 tries")
    return {
        m.group_instance_id or m.member_id: {tp.partition for tp in m.assignment.topic_partitions}
        for m in group.members
    }


def write_history(settings: Settings, streams: int, polls_n: int) -> int:
    """Seeded snapshot records of ``streams`` buckets (1,000 slots, ~1 % change a poll)."""
    us = [universe(b, 1_000 + 1_000 // 50) for b in range(streams)]
    p = producer(settings)
    n = 0
    for key, value, _ in history(streams, 1_000, polls_n, 2_000, us):
        p.produce(settings.topics.snapshots, key=key, value=value)
        p.poll(0)
        n += 1
    assert p.flush(60) == 0
    return n


def settings_for(work: Path, tag: str, **kw: Any) -> Settings:
    env = Settings()  # the broker: DROPS_KAFKA__BOOTSTRAP, DROPS_KAFKA__CONTROLLER_PORT
    boot, ctl = env.kafka.bootstrap, env.kafka.controller_port
    values: dict[str, Any] = {
        "data_dir": work, "kafka_dist": ROOT / ".drops" / "dist", "kafka_bootstrap": boot,
        "kafka_controller_port": ctl,
        "snapshot_topic": f"{tag}.snapshots", "drops_topic": f"{tag}.events",
        "deadletter_topic": f"{tag}.deadletter", "stats_topic": f"{tag}.buckets",
        "processor_group": f"{tag}-processor", "producer_group": f"{tag}-producer",
        "producer_topic": f"{tag}.producers", "state_path": work / tag / "state",
        "snapshot_partitions": 4, "log_format": "json", "commit_interval": 0.5,
        "seen_ttl": 600.0,
    }  # fmt: skip
    values.update(kw)
    return Settings(**values)


def producer_failover(work: Path, interval: float) -> float:
    """Seconds from a replica's kill -9 until every stream it polled was polled again."""
    port = free_port()
    s = settings_for(work, f"pf{uuid.uuid4().hex[:6]}", resy_url=f"http://127.0.0.1:{port}",
                     days=6, poll_interval=interval, request_timeout=5.0)  # fmt: skip
    broker.ensure_topics(s)
    app = create_app(Market(seed=5, venues=30), api_key=s.providers.resy.api_key.get_secret_value())
    logs = [work / f"{s.producer.group}-0.log", work / f"{s.producer.group}-1.log"]
    with serve(app, port=port):
        procs = [produce(s, logs[0]), produce(s, logs[1])]
        try:
            deadline = time.monotonic() + 90
            while not all(held(p) for p in logs) or len(set().union(*map(held, logs))) < 24:  # type: ignore[arg-type]
                assert time.monotonic() < deadline, "the replicas did not split the streams"
                time.sleep(0.3)
            time.sleep(2 * interval)
            mine = held(logs[0]) or set()
            killed_ms = int(time.time() * 1000)
            os.kill(procs[0].pid, signal.SIGKILL)
            procs[0].wait(10)
            time.sleep(3 * interval)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    p.wait(30)
    seen = polls(s)
    moved = [k for k in seen if stream_part(k, s.topics.producers_partitions) in mine]
    after = [min(t for t in seen[k] if t > killed_ms) for k in moved]
    return (max(after) - killed_ms) / 1000


def processor_throughput(work: Path, polls_n: int, replicas: int) -> float:
    """Snapshot records a second through ``replicas`` processors (start to all committed)."""
    s = settings_for(work, f"pt{uuid.uuid4().hex[:6]}")
    broker.ensure_topics(s)
    n = write_history(s, 16, polls_n)
    started = time.monotonic()
    procs = [ProcessorProc(s, work / f"{s.processor.group}-{i}.log") for i in range(replicas)]
    try:
        wait_processed(s, procs[0], 600)
    finally:
        for p in procs:
            p.stop()
    return n / (time.monotonic() - started)


def processor_failover(work: Path, polls_n: int) -> float:
    """Seconds from one of two replicas' kill -9 to the survivor's first commit on the
    partitions the killed one held (its session timeout, 15 s, is most of it)."""
    s = settings_for(work, f"pk{uuid.uuid4().hex[:6]}")
    broker.ensure_topics(s)
    write_history(s, 16, polls_n)
    a = ProcessorProc(s, work / f"{s.processor.group}-a.log")
    b = ProcessorProc(s, work / f"{s.processor.group}-b.log")
    try:
        deadline = time.monotonic() + 120
        while len(got := members(s)) < 2 or not all(got.values()):
            assert time.monotonic() < deadline, got
            time.sleep(0.3)
        wait_processed(s, b, 300)
        ids = {p: claim_id(p) for p in (a, b)}
        moved = got[f"{s.processor.group}-{ids[a]}"]
        before = committed(s)
        a.kill9()
        killed = time.monotonic()
        write_history(s, 16, 3)  # snapshots for every partition, the moved ones included
        while not any(committed(s).get(p, -1) > before.get(p, -1) for p in moved):
            assert time.monotonic() - killed < 180, "the survivor never took over"
            time.sleep(0.1)
        return time.monotonic() - killed
    finally:
        for p in (a, b):
            if p.alive():
                p.stop()


def claim_id(p: ProcessorProc) -> str:
    found = re.findall(r'"instance": ?"([0-9a-f]{12})"', p.log())
    assert found, p.log()[-2000:]
    return str(found[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replicas_bench")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    work = (ROOT / ".drops" / "bench-replicas").resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = settings_for(work, "probe")
    already = broker.is_ready(base, timeout=1.0)
    broker.start(base)
    try:
        interval = 8.0
        failover = producer_failover(work, interval)
        polls_n = 60 if args.quick else 200
        one = processor_throughput(work, polls_n, 1)
        two = processor_throughput(work, polls_n, 2)
        moved = processor_failover(work, polls_n)
    finally:
        if not already:
            broker.stop(base)
    print(f"producer fail-over (poll interval {interval:.0f} s): {failover:.1f} s")
    print(f"processor: 1 replica {one:,.0f} rec/s, 2 replicas {two:,.0f} rec/s "
          f"(ratio {two / one:.2f})")  # fmt: skip
    print(f"processor kill -> survivor's first commit of the moved partitions: {moved:.1f} s")
    if args.json:
        figs = [
            {"area": "replicas", "metric": f"producer fail-over, poll interval {interval:.0f} s",
             "value": failover, "unit": "s", "goal": f"<= {2 * interval:.0f} s",
             "ok": failover <= 2 * interval},
            {"area": "replicas", "metric": "processor throughput, 1 replica", "value": one,
             "unit": "records/s"},
            {"area": "replicas", "metric": "processor throughput, 2 replicas / 1", "value":
             two / one, "unit": "x"},
            {"area": "replicas", "metric": "processor kill to survivor's first commit",
             "value": moved, "unit": "s"},
        ]  # fmt: skip
        print(orjson.dumps({"figures": figs}).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
