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

Per page (issue 16), measured in the same run on the same pages (a sample of the cycle's
search pages, fetched again from the simulator after the cycle, timed on one core):

- the **decode floor**: ``msgspec`` decoding the page into typed Structs that name only the
  fields a snapshot uses (defined here, apart from the producer's own, so the floor does not
  move with the producer's code); ``orjson.loads`` of the same bytes beside it;
- **main's parser**: the page as plain JSON through the lenient reading
  (``resy.parse_venue``, the parser before the typed reading) into the record columns;
- **the Python typed reading** (``resy.decode_page`` + ``take_hits``) into the record columns;
- **this parser**: the producer's reading, the native one (``native/``) when it is built, into
  the record columns;
- **producer CPU per page**: the producer process's CPU over a cycle divided by its requests
  (HTTP, decoding, records, everything), and its ratio to the floor (goal <= 2x).

The simulator's page cache is raised (``--sim-cache-mb``, default 8192: 50,000 venues' pages
in the full shape are about 6 GB) so that the poll cycle is served from it at every size; the
baseline cycle renders every page (about 10 ms of the simulator's CPU each).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import msgspec
import orjson

from drops.runtime import tune_gc
from drops.settings import Settings
from producers import config
from producers.providers import factory, native, resy
from producers.providers.base import BucketQuery, Collector, SlotIds
from producers.service import GC_THRESHOLD, ProducerService, RecordWriter
from producers.windows import bucket_window
from simulator.control import SimControl

# ------------------------------------------------------------------ the decode floor
# Structs naming only what a snapshot uses of a search page (field notes §8). Not shared with
# the producer: the floor must not move when the producer's code changes.


class FDate(msgspec.Struct, gc=False):
    start: str


class FConfig(msgspec.Struct, gc=False):
    type: str = ""
    token: str = ""


class FSize(msgspec.Struct, gc=False):
    min: int = 0
    max: int = 0


class FSlot(msgspec.Struct, gc=False):
    date: FDate
    config: FConfig
    size: FSize


class FAvailability(msgspec.Struct, gc=False):
    slots: list[FSlot] = []


class FLocation(msgspec.Struct, gc=False):
    time_zone: str = ""
    neighborhood: str = ""


class FId(msgspec.Struct, gc=False):
    resy: int


class FHit(msgspec.Struct, gc=False):
    id: FId
    name: str = ""
    location: FLocation | None = None
    availability: FAvailability | None = None


class FSearch(msgspec.Struct, gc=False):
    hits: list[FHit]
    nbHits: int = 0


class FPage(msgspec.Struct, gc=False):
    search: FSearch


def sample_pages(
    url: str, days: list[str], venues: int, limit: int
) -> list[tuple[BucketQuery, bytes]]:
    """``limit`` search pages of the cycle's buckets as the producer asks for them (spread
    over the buckets and the market's pages), with each page's bucket query."""
    slots = ("15:00", "19:00")
    pages = max(1, -(-venues // 100))
    buckets = [(d, t) for d in days for t in slots]
    rng = random.Random(16)
    picks = sorted((buckets[i % len(buckets)], rng.randint(1, pages)) for i in range(limit))
    out = []
    headers = {"Authorization": 'ResyAPI api_key="simulator"', "User-Agent": "drops-bench"}
    with httpx.Client(timeout=60) as client:
        for (day, slot), page in picks:
            query = BucketQuery(day, slot, 2, bucket_window(slot, slots))
            body = {
                "availability": True,
                "page": page,
                "per_page": 100,
                "slot_filter": {"day": day, "party_size": 2, "time_filter": slot[:2] + ":00"},
                "types": ["venue"],
            }
            resp = client.post(f"{url}/3/venuesearch/search", json=body, headers=headers)
            resp.raise_for_status()
            out.append((query, resp.content))
    return out


def main_parser(query: BucketQuery, body: bytes, ids: SlotIds) -> int:
    """The page as plain JSON through the lenient reading (the parser before the typed one)."""
    acc = Collector("resy", ids)
    for hit in orjson.loads(body)["search"]["hits"]:
        avail = hit.get("availability") if isinstance(hit, dict) else None
        slots = avail.get("slots") if isinstance(avail, dict) else None
        resy.parse_venue(hit, slots if slots is not None else [], query, acc)
    return len(acc.table())


def this_parser(query: BucketQuery, body: bytes, ids: SlotIds) -> int:
    """The producer's reading: the native reader when built (``producers.providers.native``),
    else the typed reading."""
    doc = resy.page_decoder(query)(body)
    if native.lib is not None and isinstance(doc, native.lib.Page):
        gathered = native.lib.Collector()
        gathered.take(doc)
        return len(gathered.table("resy")[2])
    return typed_parser(query, body, ids)


def typed_parser(query: BucketQuery, body: bytes, ids: SlotIds) -> int:
    """The Python typed reading (``resy.decode_page`` + ``take_hits``)."""
    page = resy.decode_page(body)
    if page is None:
        raise ValueError("a simulator page the typed reading does not take")
    acc = Collector("resy", ids)
    resy.take_hits(page.search.hits, query, acc, set())
    return len(acc.table())


def per_page_ms(pages: list[tuple[BucketQuery, bytes]], rounds: int = 5) -> dict[str, float]:
    """CPU milliseconds per page of each reading over the same pages (best of ``rounds``)."""
    floor = msgspec.json.Decoder(FPage)
    ids = SlotIds("resy")
    counts = [main_parser(q, b, ids) for q, b in pages]
    if counts != [this_parser(q, b, ids) for q, b in pages] or counts != [
        typed_parser(q, b, ids) for q, b in pages
    ]:
        raise ValueError("the two parsers disagree on the sample pages")

    def floor_decode(q: BucketQuery, b: bytes) -> object:
        return floor.decode(b)

    def orjson_loads(q: BucketQuery, b: bytes) -> object:
        return orjson.loads(b)

    ways: dict[str, Callable[[BucketQuery, bytes], object]] = {
        "floor": floor_decode,
        "orjson": orjson_loads,
        "main": partial(main_parser, ids=ids),
        "typed": partial(typed_parser, ids=ids),
        "this": partial(this_parser, ids=ids),
    }
    out = {}
    for name, fn in ways.items():
        best = float("inf")
        for _ in range(rounds):
            t0 = time.process_time()
            for q, b in pages:
                fn(q, b)
            best = min(best, time.process_time() - t0)
        out[name] = best / len(pages) * 1000
    out["page_kb"] = sum(len(b) for _, b in pages) / len(pages) / 1000
    return out


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


async def cycles(
    settings: Settings,
    n: int,
    kafka: bool,
    sim_pid: int,
    replica: tuple[int, int] = (0, 1),
    barrier: Path | None = None,
) -> tuple[list[dict[str, float]], list[str]]:
    """``n`` cycles of one producer; as replica ``i`` of ``k`` (``replica=(i, k)``) it polls
    the streams of every k-th assignment partition, as the fleet would assign them, with its
    share of the concurrency budget, and starts each cycle with the other replicas
    (``barrier``: a folder where each one says it is ready)."""
    writer: RecordWriter
    if kafka:
        from producers.kafka import Writer
        from shell import broker

        broker.ensure_topics(settings)
        writer = Writer(settings)
    else:
        writer = NullWriter()
    tune_gc(*GC_THRESHOLD)  # as producers.service.run does
    transport = factory.transport_for(settings, config.load(settings))
    providers = factory.build(settings, transport)
    service = ProducerService(settings, providers, writer)
    i, k = replica
    if k > 1:
        parts = settings.topics.producers_partitions
        service.held = frozenset(p for p in range(parts) if p % k == i)
        await transport.share(len(service.held) / parts)
    out = []
    for c in range(n):
        if barrier is not None:
            (barrier / f"{c}-{i}").touch()
            while len(list(barrier.glob(f"{c}-*"))) < k:
                await asyncio.sleep(0.01)
        cpu0, sim0, t0 = time.process_time(), proc_cpu(sim_pid), time.monotonic()
        start = time.time()
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
                "start": start,
                "end": time.time(),
            }
        )
    days = sorted({b.date.isoformat() for b in service.window})
    await service.shutdown(grace=1.0)
    await transport.aclose()
    return out, days


SUMMED = ("cpu", "requests", "slots", "records", "incomplete", "jobs")


def fleet_cycles(
    settings: Settings, n: int, args: argparse.Namespace, sim_pid: int
) -> tuple[list[dict[str, float]], list[str]]:
    """``n`` cycles of ``args.replicas`` producer processes at once: per cycle, the wall time
    from the first replica's start to the last one's end, CPU and requests summed."""
    k = args.replicas
    with tempfile.TemporaryDirectory() as tmp:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.producer_bench",
                    "--replica",
                    f"{i}/{k}",
                    "--url",
                    settings.providers.resy.base_url,
                    "--cycles",
                    str(n),
                    "--barrier",
                    tmp,
                    "--sim-pid",
                    str(sim_pid),
                    "--concurrency",
                    str(args.concurrency),
                    "--providers",
                    args.providers,
                ],
                stdout=subprocess.PIPE,
            )
            for i in range(k)
        ]
        results = [orjson.loads(p.communicate()[0].splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("a producer replica failed")
    out = []
    for c in range(n):
        rows = [r["rows"][c] for r in results]
        out.append(
            {
                "wall": max(r["end"] for r in rows) - min(r["start"] for r in rows),
                "sim_cpu": max(r["sim_cpu"] for r in rows),
                **{f: sum(r[f] for r in rows) for f in SUMMED},
            }
        )
    return out, results[0]["days"]


def bench_settings(url: str, args: argparse.Namespace, kafka: str) -> Settings:
    tag = uuid.uuid4().hex[:6]
    return Settings(
        resy_url=url,
        opentable_url=url,
        providers=args.providers,
        concurrency=args.concurrency,
        kafka_bootstrap=kafka,
        snapshot_topic=f"bench{tag}.snapshots",
        stats_topic=f"bench{tag}.buckets",
        drops_topic=f"bench{tag}.events",
        deadletter_topic=f"bench{tag}.deadletter",
        log_level="WARNING",
    )


def bench_size(venues: int, args: argparse.Namespace) -> list[dict[str, float]]:
    env = {
        **os.environ,
        "DROPS_SIM_VENUES": str(venues),
        "DROPS_SIM_PORT": str(args.port),
        "DROPS_SIM_SCRIPTED": "true",
        "DROPS_LOG_LEVEL": "WARNING",
        "DROPS_SIM_CACHE_MB": str(args.sim_cache_mb),
    }
    sim = subprocess.Popen(
        [sys.executable, "-m", "shell.cli", "simulate"], env=env, stdin=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{args.port}"
    try:
        with SimControl(url) as ctl:
            ctl.wait_ready(60)
        settings = bench_settings(url, args, args.kafka or "127.0.0.1:1")
        n = 1 if args.quick else 2
        if args.replicas > 1:
            rows, days = fleet_cycles(settings, n, args, sim.pid)
        else:
            rows, days = asyncio.run(cycles(settings, n, bool(args.kafka), sim.pid))
        pages = per_page_ms(sample_pages(url, days, venues, args.sample)) if days else {}
        for r in rows:
            r["venues"] = venues
            r.update({f"page_{k}": v for k, v in pages.items()})
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
    p.add_argument("--sample", type=int, default=40, help="pages timed per reading")
    p.add_argument("--sim-cache-mb", type=int, default=8192, help="the simulator's page cache")
    p.add_argument("--replicas", type=int, default=1, help="producer processes at once")
    p.add_argument("--replica", default="", help=argparse.SUPPRESS)  # i/k: one of --replicas
    p.add_argument("--url", default="", help=argparse.SUPPRESS)
    p.add_argument("--cycles", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--barrier", default="", help=argparse.SUPPRESS)
    p.add_argument("--sim-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.replica:
        return replica_main(args)
    if args.json and not args.kafka and os.environ.get("DROPS_KAFKA_BOOTSTRAP"):
        args.kafka = os.environ["DROPS_KAFKA_BOOTSTRAP"]  # `drops bench` passes its broker
    import logging

    logging.basicConfig(level=logging.WARNING)
    header = (
        f"{'venues':>7} {'cycle':>8} {'wall s':>7} {'req':>6} {'req/s':>7} {'slots':>8} "
        f"{'records':>7} {'prod CPU s':>10} {'sim CPU s':>9} {'incompl':>7} {'ms/page':>7}"
    )
    print(f"providers={args.providers} concurrency={args.concurrency} "
          f"kafka={args.kafka or 'off (encoded, not sent)'} cores={os.cpu_count()} "
          f"load={os.getloadavg()[0]:.1f}")  # fmt: skip
    print(header)
    figures: list[dict[str, object]] = []
    for venues in args.venues:
        rows = bench_size(venues, args)
        figures += figures_of(venues, rows, args.replicas)
        for i, r in enumerate(rows):
            kind = "baseline" if i == 0 else "poll"
            sim_cpu = f"{r['sim_cpu']:9.1f}"
            print(
                f"{venues:>7} {kind:>8} {r['wall']:7.2f} {int(r['requests']):>6} "
                f"{r['requests'] / r['wall']:7.0f} {int(r['slots']):>8} {int(r['records']):>7} "
                f"{r['cpu']:10.1f} {sim_cpu} {int(r['incomplete']):>7} "
                f"{r['cpu'] / max(r['requests'], 1) * 1000:7.2f}",
                flush=True,
            )
        r = rows[-1]
        if "page_floor" in r:
            print(
                f"{venues:>7} per page ({r['page_page_kb']:.0f} KB, one core): decode floor "
                f"(msgspec) {r['page_floor']:.3f} ms, orjson.loads {r['page_orjson']:.3f} ms, "
                f"main's parser {r['page_main']:.3f} ms, the Python typed reading "
                f"{r['page_typed']:.3f} ms, this parser ({native.READER}) {r['page_this']:.3f} ms, "
                f"producer CPU {r['cpu'] / max(r['requests'], 1) * 1000:.3f} ms "
                f"({r['cpu'] / max(r['requests'], 1) * 1000 / r['page_floor']:.2f}x the floor), "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    if args.json:
        print(orjson.dumps({"figures": figures}).decode())
    return 0


def replica_main(args: argparse.Namespace) -> int:
    """One replica of ``--replicas``: its cycles, as one JSON line."""
    i, k = (int(x) for x in args.replica.split("/"))
    settings = bench_settings(args.url, args, "127.0.0.1:1")
    rows, days = asyncio.run(
        cycles(settings, args.cycles, False, args.sim_pid, (i, k), Path(args.barrier))
    )
    print(orjson.dumps({"rows": rows, "days": days}).decode())
    return 0


def figures_of(
    venues: int, rows: list[dict[str, float]], replicas: int = 1
) -> list[dict[str, object]]:
    """The ``drops bench`` figures of one market size: the slowest poll cycle decides, or the
    one cycle of ``--quick`` (the baseline cycle is mostly the simulator rendering every page,
    10 ms of its own CPU each; it serves the poll cycles from its cache)."""
    steady = rows[1:] if len(rows) > 1 else rows
    worst = max(steady, key=lambda r: r["wall"])
    kind = "poll cycle" if steady is not rows else "28-bucket cycle"
    kind += ", one producer" if replicas == 1 else f", {replicas} producer replicas"
    goal = "<= 30 s (the poll interval)"
    per_page = worst["cpu"] / max(worst["requests"], 1) * 1000
    pages: list[dict[str, object]] = []
    if "page_floor" in worst:
        floor = worst["page_floor"]
        pages = [
            _fig(f"decode floor per page (msgspec), {venues:,} venues", floor, "ms"),
            _fig(f"main's parser per page, {venues:,} venues", worst["page_main"], "ms"),
            _fig(f"Python typed reading per page, {venues:,} venues", worst["page_typed"], "ms"),
            _fig(
                f"this parser ({native.READER}) per page, {venues:,} venues",
                worst["page_this"],
                "ms",
            ),
            _fig(f"producer CPU per page, {venues:,} venues", per_page, "ms"),
            {
                "area": "producer",
                "metric": f"producer CPU per page / decode floor, {venues:,} venues",
                "value": round(per_page / floor, 2),
                "unit": "x",
                "goal": "<= 2x",
                "ok": per_page / floor <= 2,
            },
        ]
    return [
        {
            "area": "producer",
            "metric": f"{kind}, {venues:,} venues",
            "value": round(worst["wall"], 2),
            "unit": "s",
            "goal": goal,
            "ok": worst["wall"] <= 30,
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
        *pages,
    ]


def _fig(metric: str, value: float, unit: str) -> dict[str, object]:
    return {"area": "producer", "metric": metric, "value": round(value, 3), "unit": unit,
            "goal": "", "ok": None}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
