"""Replica figures: producer fail-over, processor throughput with 1 and 2 replicas, and the
time from a processor replica's kill to the survivor's first commit of the moved partitions
(drops become readable at commit, so it is the first drop of those partitions a reader can
see). On the project's 2 shared cores the sizes are small and two replicas compete for the
same cores: the throughput ratio says what the coordination costs, not what a second
machine would add.

    DROPS_KAFKA_BOOTSTRAP=127.0.0.1:19392 DROPS_KAFKA_CONTROLLER_PORT=19393 \
        python -m bench.replicas_bench [--quick] [--json]

(``drops bench`` runs it on its broker; run alone, it starts one on those ports.)
"""

from __future__ import annotations

import argparse
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from drops import broker
from drops.pipeline import free_port
from drops.settings import Settings
from producers.core import stream_part
from simulator.control import serve
from simulator.market import Market
from simulator.server import create_app
from tests.integration.test_processor_harness import (
    ProcessorProc,
    committed,
    random_history,
    wait_processed,
    write,
)
from tests.integration.test_processor_replicas import members
from tests.integration.test_producer_replicas import held, polls, produce

ROOT = Path(__file__).resolve().parents[1]


def settings_for(work: Path, tag: str, **kw: Any) -> Settings:
    env = Settings()  # the broker: DROPS_KAFKA_BOOTSTRAP, DROPS_KAFKA_CONTROLLER_PORT
    boot, ctl = env.kafka_bootstrap, env.kafka_controller_port
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
    app = create_app(Market(seed=5, venues=30), api_key=s.resy_api_key.get_secret_value())
    logs = [work / f"{s.producer_group}-0.log", work / f"{s.producer_group}-1.log"]
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
    moved = [k for k in seen if stream_part(k, s.producer_partitions) in mine]
    after = [min(t for t in seen[k] if t > killed_ms) for k in moved]
    return (max(after) - killed_ms) / 1000


def processor_throughput(work: Path, polls_n: int, replicas: int) -> float:
    """Snapshot records a second through ``replicas`` processors (start to all committed)."""
    s = settings_for(work, f"pt{uuid.uuid4().hex[:6]}")
    broker.ensure_topics(s)
    hist = random_history(seed=21, streams=16, polls=polls_n)
    write(s, hist)
    started = time.monotonic()
    procs = [ProcessorProc(s, work / f"{s.processor_group}-{i}.log") for i in range(replicas)]
    try:
        wait_processed(s, procs[0], 600)
    finally:
        for p in procs:
            p.stop()
    return len(hist) / (time.monotonic() - started)


def processor_failover(work: Path, polls_n: int) -> float:
    """Seconds from one of two replicas' kill -9 to the survivor's first commit on the
    partitions the killed one held (its session timeout, 15 s, is most of it)."""
    s = settings_for(work, f"pk{uuid.uuid4().hex[:6]}")
    broker.ensure_topics(s)
    hist = random_history(seed=22, streams=16, polls=polls_n)
    half = len(hist) // 3
    write(s, hist[:half])
    a = ProcessorProc(s, work / f"{s.processor_group}-a.log")
    b = ProcessorProc(s, work / f"{s.processor_group}-b.log")
    try:
        deadline = time.monotonic() + 120
        while len(got := members(s)) < 2 or not all(got.values()):
            assert time.monotonic() < deadline, got
            time.sleep(0.3)
        wait_processed(s, b, 300)
        ids = {p: claim_id(p) for p in (a, b)}
        moved = got[f"{s.processor_group}-{ids[a]}"]
        before = committed(s)
        a.kill9()
        killed = time.monotonic()
        write(s, hist[half:])  # snapshots for every partition, the moved ones included
        while not any(committed(s).get(p, -1) > before.get(p, -1) for p in moved):
            assert time.monotonic() - killed < 180, "the survivor never took over"
            time.sleep(0.1)
        return time.monotonic() - killed
    finally:
        for p in (a, b):
            if p.alive():
                p.stop()


def claim_id(p: ProcessorProc) -> str:
    import re

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
