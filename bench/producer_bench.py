"""Producer benchmark: full 28-bucket cycles against the simulator (in its own process).

    python -m bench.producer_bench --venues 1000 10000 50000 --quick
    python -m bench.producer_bench --venues 10000 --kafka 127.0.0.1:29192

For each market size it starts ``drops simulate`` (scripted, seeded) on ``--port``, runs a
baseline cycle and (without ``--quick``) a poll cycle, and prints cycle time, requests/s,
slots, and the CPU seconds of the producer and of the simulator during that cycle (the
simulator caches pages while its scripted market is unchanged, so a poll cycle costs it
less than a baseline cycle). The 1-minute load average is printed: other work on the same
cores stretches wall times, CPU seconds less so. With ``--kafka`` the records
go to a fresh topic on that broker; without it they are encoded but not sent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson

from drops.runtime import tune_gc
from drops.settings import Settings
from producers.providers import factory
from producers.service import GC_THRESHOLD, ProducerService, RecordWriter
from simulator.control import SimControl


class NullWriter:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, topic: str, key: str, value: bytes) -> None:
        self.bytes += len(value)

    def flush(self, timeout: float = 30.0) -> int:
        return 0


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cycles(settings: Settings, n: int, kafka: bool, sim_pid: int) -> list[dict[str, float]]:
    writer: RecordWriter
    if kafka:
        from producers.kafka import Writer
        from shell import broker

        broker.ensure_topics(settings)
        writer = Writer(settings)
    else:
        writer = NullWriter()
    tune_gc(*GC_THRESHOLD)  # as producers.service.run does
    providers = factory.build(settings)
    service = ProducerService(settings, providers, writer)
    out = []
    for _ in range(n):
        cpu0, sim0, t0 = time.process_time(), proc_cpu(sim_pid), time.monotonic()
        report = await service.run_once()
        if kafka:
            writer.flush(60.0)
        wall = time.monotonic() - t0
        out.append(
            {
                "wall": wall,
                "cpu": time.process_time() - cpu0,
                "sim_cpu": proc_cpu(sim_pid) - sim0,
                "requests": report.requests,
                "slots": report.slots,
                "records": report.records,
                "incomplete": report.incomplete,
                "jobs": report.finished,
            }
        )
    await service.shutdown(grace=1.0)
    return out


def bench_size(venues: int, args: argparse.Namespace) -> list[dict[str, float]]:
    env = {
        **os.environ,
        "DROPS_SIM_VENUES": str(venues),
        "DROPS_SIM_PORT": str(args.port),
        "DROPS_SIM_SCRIPTED": "true",
        "DROPS_LOG_LEVEL": "WARNING",
    }
    sim = subprocess.Popen(
        [sys.executable, "-m", "shell.cli", "simulate"], env=env, stdin=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{args.port}"
    try:
        with SimControl(url) as ctl:
            ctl.wait_ready(60)
        tag = uuid.uuid4().hex[:6]
        settings = Settings(
            resy_url=url,
            opentable_url=url,
            providers=args.providers,
            concurrency=args.concurrency,
            kafka_bootstrap=args.kafka or "127.0.0.1:1",
            snapshot_topic=f"bench{tag}.snapshots",
            stats_topic=f"bench{tag}.buckets",
            drops_topic=f"bench{tag}.events",
            deadletter_topic=f"bench{tag}.deadletter",
            log_level="WARNING",
        )
        rows = asyncio.run(cycles(settings, 1 if args.quick else 2, bool(args.kafka), sim.pid))
        for r in rows:
            r["venues"] = venues
        return rows
    finally:
        sim.terminate()
        sim.wait(30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--venues", type=int, nargs="+", default=[1000, 10000, 50000])
    p.add_argument("--quick", action="store_true", help="one (baseline) cycle per size")
    p.add_argument("--port", type=int, default=28050)
    p.add_argument("--providers", default="resy")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--kafka", default="", help="bootstrap servers; records are sent there")
    p.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    args = p.parse_args(argv)
    if args.json and not args.kafka and os.environ.get("DROPS_KAFKA_BOOTSTRAP"):
        args.kafka = os.environ["DROPS_KAFKA_BOOTSTRAP"]  # `drops bench` passes its broker
    import logging

    logging.basicConfig(level=logging.WARNING)
    header = (
        f"{'venues':>7} {'cycle':>8} {'wall s':>7} {'req':>6} {'req/s':>7} {'slots':>8} "
        f"{'records':>7} {'prod CPU s':>10} {'sim CPU s':>9} {'incompl':>7}"
    )
    print(f"providers={args.providers} concurrency={args.concurrency} "
          f"kafka={args.kafka or 'off (encoded, not sent)'} cores={os.cpu_count()} "
          f"load={os.getloadavg()[0]:.1f}")  # fmt: skip
    print(header)
    figures: list[dict[str, object]] = []
    for venues in args.venues:
        rows = bench_size(venues, args)
        figures += figures_of(venues, rows)
        for i, r in enumerate(rows):
            kind = "baseline" if i == 0 else "poll"
            sim_cpu = f"{r['sim_cpu']:9.1f}"
            print(
                f"{venues:>7} {kind:>8} {r['wall']:7.2f} {int(r['requests']):>6} "
                f"{r['requests'] / r['wall']:7.0f} {int(r['slots']):>8} {int(r['records']):>7} "
                f"{r['cpu']:10.1f} {sim_cpu} {int(r['incomplete']):>7}",
                flush=True,
            )
    if args.json:
        print(orjson.dumps({"figures": figures}).decode())
    return 0


def figures_of(venues: int, rows: list[dict[str, float]]) -> list[dict[str, object]]:
    """The ``drops bench`` figures of one market size: the slowest cycle decides."""
    worst = max(rows, key=lambda r: r["wall"])
    goal = "<= 30 s (the poll interval)" if venues <= 10_000 else ""
    return [
        {
            "area": "producer",
            "metric": f"28-bucket cycle, {venues:,} venues",
            "value": round(worst["wall"], 2),
            "unit": "s",
            "goal": goal,
            "ok": worst["wall"] <= 30 if goal else None,
        },
        {
            "area": "producer",
            "metric": f"requests per second, {venues:,} venues",
            "value": round(worst["requests"] / worst["wall"], 1),
            "unit": "req/s",
            "goal": "",
            "ok": None,
        },
        {
            "area": "producer",
            "metric": f"producer CPU per cycle, {venues:,} venues",
            "value": round(worst["cpu"], 2),
            "unit": "s",
            "goal": "",
            "ok": None,
        },
    ]


if __name__ == "__main__":
    sys.exit(main())
