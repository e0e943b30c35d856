"""API benchmark: ``python -m bench.api_bench [--quick]``.

1. ``/feed`` page of 100 with N drop rows (default 10 million) in ClickHouse (chDB): p50/p99
   of pages read at random cursors, unfiltered and filtered.
2. SSE (``GET /feed/stream``, sse-starlette's ``EventSourceResponse``): C concurrent clients
   (default 1,000) while drops arrive at R a second (default 200): p50/p99 delivery from the
   API's receipt of the drop (the live tail's read), from its Kafka commit and from its
   produce; the API's memory per idle client, its CPU, and its garbage-collector pauses
   (``server_gc``: collections, total ms, full collections and the longest one).

Uses the Kafka broker of the settings (``DROPS_KAFKA__BOOTSTRAP``) with topics of its own. The
API runs in a child process (chDB: one process owns the data folder); the data set is built
by another child process before it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from api import cursor as C
from drops import kafka

PY = sys.executable


def _settings(data_dir: Path, tag: str, port: int, **extra: Any) -> Any:
    from drops.settings import Settings

    return Settings(
        data_dir=data_dir,
        drops_topic=f"bench{tag}.events",
        stats_topic=f"bench{tag}.buckets",
        deadletter_topic=f"bench{tag}.deadletter",
        snapshot_topic=f"bench{tag}.snapshots",
        sink_group=f"bench{tag}-sink",
        api_port=port,
        log_format="text",
        log_level="WARNING",
        **extra,
    )


# ----------------------------------------------------------------------------------- children


def build(data_dir: Path, rows: int, tag: str, stats_rows: int = 0) -> None:
    """Fill drop_events with ``rows`` rows over 399 days, merged as a settled table (and
    discovery_buckets with ``stats_rows`` fetches, :func:`build_stats`)."""
    from store.clickhouse import prepare
    from store.rows import ITEM_KEYS

    s = _settings(data_dir, tag, 0)
    ch = prepare(s)
    step = 1_000_000
    span = 399 * 86_400  # inside the 400-day retention: the TTL removes none
    t0 = time.time()
    for lo in range(0, rows, step):
        hi = min(rows, lo + step)
        ch.command(
            f"""
INSERT INTO drop_events (event, dedupe_key, bucket_id, market, provider, date, time_slot,
    slot_id, venue_id, venue_name, neighborhood, actual_time, time_zone, seating_types,
    party_min, party_max, booking, opened_at, snapshot_id, closed_at, open_seconds, v,
    venue_slug, venue_city, booking_url, kafka_partition, kafka_offset, item)
SELECT event, dedupe_key, bucket_id, market, provider, toDate(date), time_slot, slot_id,
    venue_id, venue_name, neighborhood, actual_time, time_zone, seating_types, party_min,
    party_max, booking, ts, snapshot_id, fromUnixTimestamp64Milli(closed_at_ms, 'UTC'),
    open_seconds, v, venue_slug, venue_city, booking_url, kafka_partition, kafka_offset,
    formatRowNoNewline('JSONEachRow', {", ".join(ITEM_KEYS)})
FROM (SELECT number, ts,
    if(number % 5 = 4, 'close', 'open') AS event, concat('k', toString(number)) AS dedupe_key,
    concat('nyc:', toString(toDate(ts)), if(number % 2 = 0, ':1500', ':1900')) AS bucket_id,
    'nyc' AS market, if(number % 3 = 0, 'opentable', 'resy') AS provider,
    toString(toDate(ts)) AS date, if(number % 2 = 0, '15:00', '19:00') AS time_slot,
    hex(cityHash64(number)) AS slot_id, toString(1000 + number % 5000) AS venue_id,
    concat('Venue ', toString(1000 + number % 5000)) AS venue_name,
    ['SoHo', 'Tribeca', 'Harlem', 'Chelsea', 'West Village'][1 + number % 5] AS neighborhood,
    toString(ts) AS actual_time, 'EST5EDT' AS time_zone, ['Dining Room'] AS seating_types,
    toUInt16(2) AS party_min, toUInt16(4) AS party_max,
    concat('https://example.invalid/book/', venue_id) AS booking,
    toUnixTimestamp64Milli(ts) AS opened_at_ms, 'snap' AS snapshot_id,
    if(event = 'close', toNullable(opened_at_ms + 60000), NULL) AS closed_at_ms,
    if(event = 'close', toNullable(60.5), NULL) AS open_seconds,
    CAST(NULL, 'Nullable(Int64)') AS opened_after_ms, 'search' AS read_via, toUInt8(2) AS v,
    concat('venue-', venue_id) AS venue_slug, 'ny' AS venue_city,
    concat('https://example.invalid/cities/ny/venues/venue-', venue_id, '?seats=2') AS booking_url,
    toUInt16(0) AS kafka_partition, toUInt64(number) AS kafka_offset
    FROM (SELECT number,
          toDateTime64(now() - {span} + intDiv(number * {span}, {rows}), 3, 'UTC') AS ts
          FROM numbers({lo}, {hi - lo})))
SETTINGS max_partitions_per_insert_block = 0, async_insert = 0,
    output_format_json_quote_64bit_integers = 0, output_format_json_escape_forward_slashes = 0
"""
        )
    ch.command(
        "INSERT INTO venues (market, provider, venue_id, venue_name, neighborhood, time_zone, "
        "last_seen) SELECT any(market), provider, venue_id, any(venue_name), any(neighborhood), "
        "any(time_zone), max(opened_at) FROM drop_events GROUP BY provider, venue_id "
        "SETTINGS async_insert = 0"
    )
    ch.save_progress(s.topics.drops, {0: rows - 1})
    if stats_rows:
        build_stats(ch, stats_rows, span)
    # merged as background merges leave a table that has been running for a while (this
    # short-lived process would otherwise hand them to the API process during the timing)
    ch.command("OPTIMIZE TABLE drop_events FINAL")
    n = ch.query("SELECT count() FROM drop_events")[0][0]
    parts = ch.query("SELECT count() FROM system.parts WHERE table = 'drop_events' AND active")
    stats = ch.query("SELECT count() FROM discovery_buckets")[0][0]
    print(
        f"built {n} rows, {stats} stats rows in {time.time() - t0:.1f}s, "
        f"active parts {parts[0][0]}",
        flush=True,
    )
    ch.close()


def build_stats(ch: Any, rows: int, span: int) -> None:
    """Fill discovery_buckets with ``rows`` fetches over the ``span`` seconds before now: 28
    buckets (14 days ahead of the poll day, 15:00 and 19:00) of two providers, polled in turn,
    one baseline build in 100; the watched days follow through their materialized view."""
    step = 2_000_000
    for lo in range(0, rows, step):
        hi = min(rows, lo + step)
        ch.command(
            f"""
INSERT INTO discovery_buckets (market, provider, bucket_id, date, time_slot, kind,
    snapshot_id, polled_at, duration_ms, venues, slots, complete, failures, requests, retries,
    kafka_partition, kafka_offset)
SELECT 'nyc', provider, concat('nyc:', toString(bdate), if(number % 2 = 0, ':1500', ':1900')),
    bdate, if(number % 2 = 0, '15:00', '19:00'), if(number % 100 = 0, 'baseline', 'poll'),
    concat('s', toString(intDiv(number, 56))), ts, toUInt32(800 + number % 400),
    toUInt32(5000), toUInt32(20000 + number % 5000), number % 50 != 0, toUInt32(number % 50 = 0),
    toUInt32(5000), toUInt32(number % 7 = 0), toUInt16(0), toUInt64(number)
FROM (SELECT number, if(intDiv(number, 28) % 2 = 0, 'resy', 'opentable') AS provider,
      toDateTime64(now() - {span} + intDiv(number * {span}, {rows}), 3, 'UTC') AS ts,
      toDate(ts) + intDiv(number % 28, 2) AS bdate
      FROM numbers({lo}, {hi - lo}))
SETTINGS max_partitions_per_insert_block = 0, async_insert = 0
"""
        )
    ch.command("OPTIMIZE TABLE discovery_buckets FINAL")


def serve(data_dir: Path, tag: str, port: int, with_sink: bool, live: bool) -> None:
    import uvicorn

    from api.app import create_app
    from shell import broker

    s = _settings(data_dir, tag, port)
    if live or with_sink:
        broker.ensure_topics(s)
    from sinks.service import SinkThread

    app = create_app(s, sink=SinkThread if with_sink else None, live=live)

    async def receipts(request: Any) -> Any:
        from api.app import JSON

        hub = app.state.drops.hub
        return JSON(list(hub.receipts) if hub is not None else [])

    import gc

    pauses: list[tuple[int, float]] = []  # (generation, ms) of each collection while serving
    began = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], (time.perf_counter() - began[0]) * 1000))

    async def gc_stats(request: Any) -> Any:
        from api.app import JSON

        full = [ms for g, ms in pauses if g == 2]
        return JSON(
            {
                "collections": len(pauses),
                "total_ms": round(sum(ms for _, ms in pauses), 1),
                "full": len(full),
                "full_max_ms": round(max(full), 1) if full else 0.0,
            }
        )

    from starlette.routing import Route

    app.router.routes.insert(0, Route("/_bench/receipts", receipts))
    app.router.routes.insert(0, Route("/_bench/gc", gc_stats))
    from api.server import GC_THRESHOLD
    from drops.runtime import tune_gc

    tune_gc(*GC_THRESHOLD)  # as api.server.run does
    gc.callbacks.append(on_gc)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=3,
    )


# ----------------------------------------------------------------------------------- helpers


def _start_server(
    data_dir: Path, tag: str, port: int, sink: bool, live: bool
) -> subprocess.Popen[bytes]:
    args = [
        PY,
        "-m",
        "bench.api_bench",
        "serve",
        "--data-dir",
        str(data_dir),
        "--tag",
        tag,
        "--port",
        str(port),
    ]
    if sink:
        args.append("--with-sink")
    if not live:
        args.append("--no-live")
    return wait_ready(subprocess.Popen(args), port)


def wait_ready(
    proc: subprocess.Popen[bytes], port: int, timeout: float = 120.0
) -> subprocess.Popen[bytes]:
    """``proc`` once the API it runs answers ``/readyz`` with 200 on ``port`` (terminated, and
    an error raised, if it exits first or is not ready within ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("API exited")
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("API not ready")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ----------------------------------------------------------------------------------- feed


def _kept_build(keep: Path, rows: int, stats_rows: int) -> tuple[Path, str]:
    """The data folder in ``keep`` and its tag, built there unless a build of this size is."""
    stamp = keep / "built.json"
    want = {"rows": rows, "stats_rows": stats_rows}
    if stamp.exists():
        done = orjson.loads(stamp.read_bytes())
        if {k: done.get(k) for k in want} == want:
            print(f"reading the data built in {keep}", flush=True)
            return keep / "data", str(done["tag"])
    shutil.rmtree(keep / "data", ignore_errors=True)  # a build of another size: only its own
    keep.mkdir(parents=True, exist_ok=True)
    tag = _build(keep / "data", rows, stats_rows)
    stamp.write_bytes(orjson.dumps({**want, "tag": tag}))
    return keep / "data", tag


def _build(data_dir: Path, rows: int, stats_rows: int = 0) -> str:
    """:func:`build` in a child process (its ClickHouse engine goes with it); the tag."""
    tag = uuid.uuid4().hex[:6]
    cmd = [PY, "-m", "bench.api_bench", "build", "--data-dir", str(data_dir)]
    cmd += ["--rows", str(rows), "--tag", tag, "--stats-rows", str(stats_rows)]
    subprocess.run(cmd, check=True)
    return tag


def bench_feed(rows: int, requests: int, port: int, root: Path) -> dict[str, Any]:
    data_dir = root / "feed"
    tag = _build(data_dir, rows)
    proc = _start_server(data_dir, tag, port, sink=False, live=False)
    out: dict[str, Any] = {"rows": rows}
    try:
        url = f"http://127.0.0.1:{port}/feed"
        rnd = random.Random(7)
        with httpx.Client(timeout=30) as client:
            for _ in range(100):  # warm up, with the same access pattern as the timing
                client.get(url, params={"since": C.encode({0: rnd.randrange(rows)}), "limit": 100})
            cases = {
                "unfiltered": {},
                "filtered (provider=resy, time_slot=19:00)": {
                    "provider": "resy",
                    "time_slot": "19:00",
                },
                "filtered (neighborhood=SoHo, party_size=2)": {
                    "neighborhood": "SoHo",
                    "party_size": "2",
                },
            }
            for name, filters in cases.items():
                lat: list[float] = []
                short = 0
                for _ in range(requests):
                    since = C.encode({0: rnd.randrange(rows)})
                    t = time.perf_counter()
                    r = client.get(url, params={"since": since, "limit": 100, **filters})
                    lat.append((time.perf_counter() - t) * 1000)
                    if r.status_code != 200:
                        raise RuntimeError(f"/feed answered {r.status_code}: {r.text[:200]}")
                    short += len(r.json()["items"]) < 100
                out[name] = {
                    "p50_ms": round(_pct(lat, 0.5), 2),
                    "p99_ms": round(_pct(lat, 0.99), 2),
                    "max_ms": round(max(lat), 2),
                    "requests": len(lat),
                    "short_pages": short,
                }
                print(f"/feed {name}: {out[name]}", flush=True)
            lat = []
            for _ in range(max(20, requests // 5)):
                vid = 1000 + rnd.randrange(5000)
                t = time.perf_counter()
                r = client.get(f"http://127.0.0.1:{port}/venues/{vid}")
                lat.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"/venues answered {r.status_code}: {r.text[:200]}")
            out["venue"] = {
                "p50_ms": round(_pct(lat, 0.5), 2),
                "p99_ms": round(_pct(lat, 0.99), 2),
                "max_ms": round(max(lat), 2),
                "requests": len(lat),
            }
            print(f"/venues/{{id}}: {out['venue']}", flush=True)
    finally:
        _stop(proc)
    return out


def bench_scans(
    rows: int, stats_rows: int, requests: int, port: int, root: Path, keep: Path | None = None
) -> dict[str, Any]:
    """The requests that scan unless a key bounds them, at ``rows`` drop rows and
    ``stats_rows`` fetch rows: a feed page from the beginning with a filter that matches
    nothing (bounded by ``DROPS_API__FEED_SCAN_MAX``), ``/venues/{id}`` (its days watched) and
    ``/buckets`` (the window's day partitions).

    ``keep``: a folder the data is built in once and read again by later runs (the build
    takes minutes; its size and tag are written beside it, and a different size builds anew)."""
    if keep:
        data_dir, tag = _kept_build(keep, rows, stats_rows)
    else:
        data_dir = root / "scans"
        tag = _build(data_dir, rows, stats_rows)
    proc = _start_server(data_dir, tag, port, sink=False, live=False)
    out: dict[str, Any] = {"rows": rows, "stats_rows": stats_rows}
    base = f"http://127.0.0.1:{port}"
    rnd = random.Random(11)
    cases: dict[str, Any] = {
        "from the beginning, neighborhood matching nothing": lambda: (
            "/feed",
            {"since": C.encode({0: -1}), "limit": 100, "neighborhood": "Nowhere"},
        ),
        "venue": lambda: (f"/venues/{1000 + rnd.randrange(5000)}", {}),
        "buckets": lambda: ("/buckets", {}),
    }
    try:
        with httpx.Client(timeout=60) as client:
            for name, req in cases.items():
                lat: list[float] = []
                for i in range(requests + 10):
                    path, params = req()
                    t = time.perf_counter()
                    r = client.get(base + path, params=params)
                    if i >= 10:  # the first ten warm the caches
                        lat.append((time.perf_counter() - t) * 1000)
                    if r.status_code != 200:
                        raise RuntimeError(f"{path} answered {r.status_code}: {r.text[:200]}")
                out[name] = {
                    "p50_ms": round(_pct(lat, 0.5), 2),
                    "p99_ms": round(_pct(lat, 0.99), 2),
                    "max_ms": round(max(lat), 2),
                    "requests": len(lat),
                }
                print(f"{name}: {out[name]}", flush=True)
            out["buckets_listed"] = len(client.get(base + "/buckets").json()["buckets"])
    finally:
        _stop(proc)
    return out


# ----------------------------------------------------------------------------------- SSE


_EVENT = re.compile(
    rb'"snapshot_id":"([^"]*)"[^\n]*?"kafka_partition":(\d+),"kafka_offset":(\d+)\}'
)


class _Clients:
    """SSE load clients (run in their own process): every client reads and discards; the
    sampled ones note ``(partition, offset, arrival time)`` per event (one regex per read)."""

    def __init__(self, port: int, n: int, sampled: int, query: str = "") -> None:
        self.port, self.n, self.sampled, self.query = port, n, sampled, query
        self.seen: list[tuple[int, int, float, str]] = []
        self.connected = 0
        self.errors = 0
        self.stop = asyncio.Event()

    async def one(self, i: int) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        except OSError:
            self.errors += 1
            return
        writer.write(
            f"GET /feed/stream{self.query} HTTP/1.1\r\nHost: x\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        sample = i < self.sampled
        counted = False
        tail = b""
        seen = self.seen
        try:
            while not self.stop.is_set():
                chunk = await reader.read(1 << 16)
                if not chunk:
                    break
                if not counted:
                    counted = True
                    self.connected += 1
                if sample:
                    now = time.time()
                    data = tail + chunk
                    cut = data.rfind(b"\n")
                    tail = data[cut + 1 :]
                    for sid, p, o in _EVENT.findall(data, 0, cut + 1):
                        seen.append((int(p), int(o), now, sid.decode()))
        except (OSError, asyncio.IncompleteReadError):
            self.errors += 1
        finally:
            writer.close()

    async def run(self, out: Path) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        tasks = []
        for i in range(self.n):
            tasks.append(asyncio.create_task(self.one(i)))
            if i % 50 == 49:
                await asyncio.sleep(0.02)
        while self.connected + self.errors < self.n and not self.stop.is_set():
            await asyncio.sleep(0.05)
        print(f"connected {self.connected} errors {self.errors}", flush=True)
        await self.stop.wait()
        await asyncio.sleep(0)  # let readers note what they already have
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        out.write_bytes(orjson.dumps({"seen": self.seen, "errors": self.errors}))


def run_clients(port: int, n: int, sampled: int, out: Path, query: str) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_Clients(port, n, sampled, query).run(out))


class _LoadClients:
    """The client process, from the bench's side."""

    def __init__(self, port: int, n: int, sampled: int, root: Path, query: str = "") -> None:
        self.out = root / f"clients-{uuid.uuid4().hex[:6]}.json"
        args = [PY, "-m", "bench.api_bench", "clients", "--port", str(port), "--n", str(n)]
        args += ["--sampled", str(sampled), "--out", str(self.out), "--query", query]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)

    def wait_connected(self, timeout: float = 120) -> str:
        assert self.proc.stdout is not None
        ready: list[str] = []
        th = threading.Thread(target=lambda: ready.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        th.start()
        th.join(timeout)
        if not ready or not ready[0].startswith("connected"):
            self.proc.kill()
            raise RuntimeError(f"load clients did not connect: {ready}")
        return ready[0].strip()

    def finish(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        doc: dict[str, Any] = orjson.loads(self.out.read_bytes())
        return doc


class _Writer:
    """Transactional drops writer that notes each record's produce and commit times."""

    def __init__(self, settings: Any) -> None:

        self.s = settings
        self.p = kafka.producer(
            settings,
            {
                "transactional.id": f"bench-{uuid.uuid4().hex}",
                "linger.ms": 2,
                "partitioner": "murmur2_random",
            },
        )
        self.p.init_transactions(30)
        self.committed: dict[tuple[int, int], float] = {}
        self.produced: dict[tuple[int, int], float] = {}

    def write(self, events: list[Any]) -> None:
        from schemas import encode

        pending: list[tuple[int, int]] = []
        t0 = time.time()

        def done(err: Any, msg: Any) -> None:
            if err is None:
                pending.append((msg.partition(), msg.offset()))

        self.p.begin_transaction()
        for ev in events:
            self.p.produce(self.s.topics.drops, encode(ev), ev.key.encode(), on_delivery=done)
        self.p.commit_transaction(30)
        t1 = time.time()
        for k in pending:
            self.produced[k] = t0
            self.committed[k] = t1


def _latencies(
    seen: list[list[Any]], stamps: dict[tuple[int, int], float]
) -> tuple[list[float], int]:
    out: list[float] = []
    missing = 0
    for p, o, t, _ in seen:
        at = stamps.get((int(p), int(o)))
        if at is None:
            missing += 1
        else:
            out.append((t - at) * 1000)
    return out, missing


def _stats(lat: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(_pct(lat, 0.5), 1),
        "p99_ms": round(_pct(lat, 0.99), 1),
        "max_ms": round(max(lat), 1) if lat else float("nan"),
    }


def bench_sse(
    clients: int, rate: int, seconds: float, port: int, root: Path, sampled: int
) -> dict[str, Any]:
    from sinks.testdata import make_drop

    tag = uuid.uuid4().hex[:6]
    data_dir = root / "sse"
    proc = _start_server(data_dir, tag, port, sink=True, live=True)
    out: dict[str, Any] = {"clients": clients, "rate_per_s": rate, "seconds": seconds}
    try:
        time.sleep(1.0)
        rss0 = _rss_kb(proc.pid)
        load = _LoadClients(port, clients, min(sampled, clients), root)
        print(load.wait_connected(), flush=True)
        time.sleep(2.0)
        rss1 = _rss_kb(proc.pid)
        out["idle_rss_kb_before"] = rss0
        out["idle_rss_kb_with_clients"] = rss1
        out["memory_per_idle_client_kb"] = round((rss1 - rss0) / clients, 1)
        print(
            f"SSE idle: {clients} clients, {out['memory_per_idle_client_kb']} KB each", flush=True
        )
        w = _Writer(_settings(data_dir, tag, port))
        per_tx = max(1, rate // 20)  # a transaction every 50 ms, like a processor checkpoint
        n = 0
        cpu0 = _cpu_s(proc.pid)
        t_end = time.monotonic() + seconds
        next_t = time.monotonic()
        while time.monotonic() < t_end:
            now_ms = int(time.time() * 1000)
            w.write([make_drop(n + i, opened_at_ms=now_ms) for i in range(per_tx)])
            n += per_tx
            next_t += per_tx / rate
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        time.sleep(3.0)
        cpu1 = _cpu_s(proc.pid)
        receipts = {
            (int(p), int(o)): float(t)
            for p, o, t in httpx.get(f"http://127.0.0.1:{port}/_bench/receipts", timeout=30).json()
        }
        gc_doc = httpx.get(f"http://127.0.0.1:{port}/_bench/gc", timeout=30).json()
        got = load.finish()
        seen = got["seen"]
        from_api, missing = _latencies(seen, receipts)
        from_commit, _ = _latencies(seen, w.committed)
        from_produce, _ = _latencies(seen, w.produced)
        out.update(
            {
                "drops_written": n,
                "sampled_clients": min(sampled, clients),
                "events_measured": len(seen),
                "expected_measured": n * min(sampled, clients),
                "events_without_receipt": missing,
                "from_api_receipt": _stats(from_api),
                "from_kafka_commit": _stats(from_commit),
                "from_produce": _stats(from_produce),
                "client_errors": got["errors"],
                "api_cpu_percent": round(100 * (cpu1 - cpu0) / (seconds + 3.0), 1),
                "server_rss_kb_end": _rss_kb(proc.pid),
                "server_gc": gc_doc,
                "load_average": os.getloadavg()[0],
            }
        )
        print(f"SSE: {out}", flush=True)
    finally:
        _stop(proc)
    return out


def _env(settings: Any) -> dict[str, str]:
    from bench.pipeline import settings_env

    return settings_env(settings)


def bench_snapshot(samples: int, clients: int, port: int, root: Path) -> dict[str, Any]:
    """Snapshot record -> real processor (child) -> drops topic -> API (sink + live tail) ->
    SSE clients: from the snapshot's produce to each client's receipt of its drop."""

    from schemas import Slot, Snapshot, bucket_id, encode
    from shell import broker

    tag = uuid.uuid4().hex[:6]
    data_dir = root / "e2e"
    s = _settings(data_dir, tag, port, processor_group=f"bench{tag}-processor",
                  state_path=data_dir / "state")  # fmt: skip
    broker.ensure_topics(s)
    log_file = (root / "processor.log").open("wb")
    processor = subprocess.Popen([PY, "-m", "processors"], env=_env(s), stdout=log_file,
                                 stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    api = _start_server(data_dir, tag, port, sink=True, live=True)
    out: dict[str, Any] = {"samples": samples, "clients": clients}
    try:
        load = _LoadClients(port, clients, clients, root)
        load.wait_connected()
        p = kafka.producer(
s, { "partitioner": "murmur2_random",
                      "enable.idempotence": True, "linger.ms": 0})  # fmt: skip
        day = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
        bid = bucket_id("nyc", day, "19:00")

        def slot(k: int) -> Slot:
            return Slot("resy", str(5000 + k), f"Venue {k}", f"{day} 19:{k % 60:02d}:00",
                        "EST5EDT", "SoHo", ("Dining Room",), 2, 4, "")  # fmt: skip

        base = tuple(slot(k) for k in range(40))
        produced: dict[str, float] = {}

        def send(i: int, kind: str, slots: tuple[Slot, ...]) -> None:
            sid = f"bench-{tag}-{i}"
            snap = Snapshot(sid, kind, "nyc", "resy", bid, day, "19:00",  # type: ignore[arg-type]
                            int(time.time() * 1000), True, slots=slots)  # fmt: skip
            value = encode(snap)
            produced[sid] = time.time()
            p.produce(s.topics.snapshots, key=snap.key.encode(), value=value)
            p.flush(10)

        send(0, "baseline", base)
        rnd = random.Random(3)
        # warm-up: until the processor is running and a drop reaches the clients
        i = 1
        deadline = time.monotonic() + 120
        while not _metric(port, "drops_sse_events_sent_total"):
            if time.monotonic() > deadline or processor.poll() is not None:
                raise RuntimeError("no drop reached the clients (processor log in the bench dir)")
            send(i, "poll", (*base, slot(1000 + i)))
            i += 1
            time.sleep(0.5)
        time.sleep(2.0)
        first = i
        for _ in range(samples):
            send(i, "poll", (*base, slot(1000 + i)))  # opens slot i, closes slot i - 1
            i += 1
            time.sleep(rnd.uniform(0.2, 0.6))
        time.sleep(4.0)
        got = load.finish()
        lat = [(t - produced[sid]) * 1000 for _, _, t, sid in got["seen"]
               if sid in produced and int(sid.rsplit("-", 1)[1]) >= first]  # fmt: skip
        out.update({"events_measured": len(lat), "expected": 2 * samples * clients,
                    **_stats(lat), "commit_interval_s": s.processor.commit_interval})  # fmt: skip
        print(f"snapshot -> SSE: {out}", flush=True)
    finally:
        _stop(api)
        processor.terminate()
        try:
            processor.wait(30)
        except subprocess.TimeoutExpired:
            processor.kill()
        log_file.close()
    return out


def _metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per measured figure, for ``drops bench`` (goal ``None``: no target)."""
    out: list[dict[str, Any]] = []

    def add(metric: str, value: float, unit: str, goal: str | None, ok: bool | None) -> None:
        out.append(
            {"area": "api", "metric": metric, "value": value, "unit": unit, "goal": goal, "ok": ok}
        )

    feed = results.get("feed")
    if feed:
        rows = f"{feed['rows'] / 1e6:g}M rows"
        for name, doc in feed.items():
            if not isinstance(doc, dict):
                continue
            label = "/venues/{id}" if name == "venue" else f"/feed page of 100, {name}"
            goal = "p99 <= 25 ms" if name == "unfiltered" else None
            add(f"{label}, {rows}: p50", doc["p50_ms"], "ms", None, None)
            p99 = doc["p99_ms"]
            add(f"{label}, {rows}: p99", p99, "ms", goal, p99 <= 25 if goal else None)
    scans = results.get("scans")
    if scans:
        size = f"{scans['rows'] / 1e6:g}M drop rows, {scans['stats_rows'] / 1e6:g}M stats rows"
        labels = {"venue": "/venues/{id}", "buckets": "/buckets"}
        for name, doc in scans.items():
            if not isinstance(doc, dict):
                continue
            label = labels.get(name, f"/feed {name}")
            add(f"{label}, {size}: p50", doc["p50_ms"], "ms", None, None)
            p99 = doc["p99_ms"]
            add(f"{label}, {size}: p99", p99, "ms", "p99 <= 50 ms", p99 <= 50)
    sse = results.get("sse")
    if sse:
        load = f"{sse['clients']} clients, {sse['rate_per_s']} drops/s"
        api = sse["from_api_receipt"]
        add(f"SSE delivery from API receipt, {load}: p50", api["p50_ms"], "ms", None, None)
        add(
            f"SSE delivery from API receipt, {load}: p99",
            api["p99_ms"],
            "ms",
            "p99 <= 500 ms",
            api["p99_ms"] <= 500 and sse["events_measured"] == sse["expected_measured"],
        )
        commit = sse["from_kafka_commit"]
        add(f"SSE delivery from Kafka commit, {load}: p50", commit["p50_ms"], "ms", None, None)
        add(f"SSE delivery from Kafka commit, {load}: p99", commit["p99_ms"], "ms", None, None)
        mem = sse["memory_per_idle_client_kb"]
        add("SSE memory per idle client", mem, "KB", "<= 50 KB", mem <= 50)
    e2e = results.get("snapshot_to_sse")
    if e2e:
        add("snapshot record -> SSE client: p50", e2e["p50_ms"], "ms", None, None)
        add(
            "snapshot record -> SSE client: p99",
            e2e["p99_ms"],
            "ms",
            "p99 <= 2000 ms",
            e2e["p99_ms"] <= 2000 and e2e["events_measured"] == e2e["expected"],
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.api_bench")
    sub = ap.add_subparsers(dest="cmd")
    b = sub.add_parser("build")
    b.add_argument("--data-dir", type=Path, required=True)
    b.add_argument("--rows", type=int, required=True)
    b.add_argument("--tag", required=True)
    b.add_argument("--stats-rows", type=int, default=0, dest="build_stats_rows")
    sv = sub.add_parser("serve")
    sv.add_argument("--data-dir", type=Path, required=True)
    sv.add_argument("--tag", required=True)
    sv.add_argument("--port", type=int, required=True)
    sv.add_argument("--with-sink", action="store_true")
    sv.add_argument("--no-live", action="store_true")
    cl = sub.add_parser("clients")
    cl.add_argument("--port", type=int, required=True)
    cl.add_argument("--n", type=int, required=True)
    cl.add_argument("--sampled", type=int, required=True)
    cl.add_argument("--out", type=Path, required=True)
    cl.add_argument("--query", default="")
    ap.add_argument("--sampled", type=int, default=100, help="SSE clients whose events are timed")
    ap.add_argument("--quick", action="store_true", help="fewer requests, shorter SSE run")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--scan-rows", type=int, default=10_000_000, help="drop rows of the scans")
    ap.add_argument("--stats-rows", type=int, default=30_000_000, help="stats rows of the scans")
    ap.add_argument(
        "--scan-data",
        type=Path,
        default=None,
        help="build the scans' data in this folder once and read it again on later runs",
    )
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--port", type=int, default=48090)
    ap.add_argument("--skip-feed", action="store_true")
    ap.add_argument("--skip-scans", action="store_true")
    ap.add_argument("--skip-sse", action="store_true")
    ap.add_argument("--skip-snapshot", action="store_true")
    ap.add_argument(
        "--json", action="store_true", help='last stdout line: {"figures": [...]} for drops bench'
    )
    ap.add_argument("--samples", type=int, default=None, help="snapshot -> SSE samples")
    args = ap.parse_args()
    if args.cmd == "build":
        build(args.data_dir, args.rows, args.tag, args.build_stats_rows)
        return
    if args.cmd == "clients":
        run_clients(args.port, args.n, args.sampled, args.out, args.query)
        return
    if args.cmd == "serve":
        serve(args.data_dir, args.tag, args.port, args.with_sink, not args.no_live)
        return
    from drops.settings import Settings

    s = Settings()
    print(f"broker {s.kafka.bootstrap}; cores {os.cpu_count()}", flush=True)
    root = Path(
        tempfile.mkdtemp(
            prefix="api-bench-", dir=s.data_dir.resolve() if s.data_dir.exists() else None
        )
    )
    results: dict[str, Any] = {}
    failed: list[dict[str, Any]] = []

    def stage(name: str, fn: Any) -> None:
        try:
            results[name] = fn()
        except Exception as exc:  # a failed stage is reported, the others still run
            traceback.print_exc()
            failed.append(
                {"area": "api", "metric": f"{name} failed: {str(exc)[:200]}", "value": None,
                 "unit": "", "goal": None, "ok": False}
            )  # fmt: skip

    try:
        if not args.skip_feed:
            stage(
                "feed",
                lambda: bench_feed(args.rows, 1000 if args.quick else 3000, args.port, root),
            )
        if not args.skip_scans:
            stage(
                "scans",
                lambda: bench_scans(
                    args.scan_rows,
                    args.stats_rows,
                    100 if args.quick else 300,
                    args.port + 3,
                    root,
                    args.scan_data,
                ),
            )
        if not args.skip_sse:
            secs = args.seconds or (15.0 if args.quick else 60.0)
            stage(
                "sse",
                lambda: bench_sse(args.clients, args.rate, secs, args.port + 1, root, args.sampled),
            )
        if not args.skip_snapshot:
            n = args.samples or (30 if args.quick else 100)
            stage("snapshot_to_sse", lambda: bench_snapshot(n, 10, args.port + 2, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        print(orjson.dumps({"figures": figures(results) + failed}).decode(), flush=True)


if __name__ == "__main__":
    main()
