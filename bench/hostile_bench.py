"""Hostile-client benchmark: ``python -m bench.hostile_bench [--base DIR] [--quick]``.

Event-loop latency of the API (``/healthz`` round trips, p50/p99) while drops arrive at R a
second, with no hostile client and with C clients holding an oversized cursor (4,096
partitions, the most the cursor format allows, ~16,000 characters) on ``/feed/stream``.
With ``--base DIR`` (a checkout of an earlier revision) the same run is made against that
revision's API too, in the same session, so the two are compared as ratios on a noisy
machine. The API runs in a child process (``bench.api_bench serve``, with the sink) from the
given source tree; the broker is the settings' (``DROPS_KAFKA_BOOTSTRAP``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

from api import cursor as C
from bench.api_bench import _cpu_s, _pct, wait_ready

ROOT = Path(__file__).resolve().parent.parent
OVERSIZED = C.encode(dict.fromkeys(range(4096), 0))


def _server(src: Path, data: Path, tag: str, port: int) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "bench.api_bench", "serve", "--data-dir", str(data)]
    args += ["--tag", tag, "--port", str(port), "--with-sink"]
    proc = subprocess.Popen(args, cwd=src, env={**os.environ, "PYTHONPATH": str(src)})
    return wait_ready(proc, port)


def _writer(tag: str, rate: int, stop: threading.Event) -> None:
    from bench.api_bench import _settings
    from sinks.testdata import DropWriter, make_drop

    w = DropWriter(_settings(Path(tempfile.gettempdir()), tag, 0))
    n = 0
    began = time.monotonic()
    while not stop.is_set():
        batch = [make_drop(n + i) for i in range(max(1, rate // 10))]
        w.write(batch)
        n += len(batch)
        time.sleep(max(0.0, began + n / rate - time.monotonic()))
    w.close()


async def _hostile(port: int, n: int, seconds: float, accepted: list[int]) -> None:
    async with httpx.AsyncClient(timeout=None) as http:

        async def one() -> None:
            headers = {"Last-Event-ID": OVERSIZED}
            async with http.stream(
                "GET", f"http://127.0.0.1:{port}/feed/stream", headers=headers
            ) as r:
                if r.status_code != 200:
                    return
                accepted.append(1)
                end = time.monotonic() + seconds
                async for _ in r.aiter_raw():
                    if time.monotonic() > end:
                        return

        await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)


PROBE_TIMEOUT_S = 5.0  # a probe that gets no answer in time counts as this long


def _probe(port: int, seconds: float) -> list[float]:
    out: list[float] = []
    end = time.monotonic() + seconds
    with httpx.Client(timeout=PROBE_TIMEOUT_S) as http:
        while time.monotonic() < end:
            t = time.perf_counter()
            try:
                http.get(f"http://127.0.0.1:{port}/healthz")
                out.append((time.perf_counter() - t) * 1000)
            except httpx.HTTPError:
                out.append(PROBE_TIMEOUT_S * 1000)
            time.sleep(0.02)
    return out


def run(src: Path, clients: int, rate: int, seconds: float, port: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    data = Path(tempfile.mkdtemp(prefix="hostile-"))
    proc = _server(src, data, tag, port)
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(tag, rate, stop), daemon=True)
    writer.start()
    try:
        time.sleep(2)
        quiet = _probe(port, seconds / 2)
        accepted: list[int] = []
        hostile = threading.Thread(
            target=lambda: asyncio.run(_hostile(port, clients, seconds + 5, accepted)),
            daemon=True,
        )
        hostile.start()
        time.sleep(2)
        loaded = _probe(port, seconds)
        hostile.join(seconds + 30)
    finally:
        stop.set()
        writer.join(30)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return {
        "src": str(src),
        "hostile_clients": clients,
        "hostile_accepted": len(accepted),
        "quiet_p50_ms": round(_pct(quiet, 0.5), 2),
        "quiet_p99_ms": round(_pct(quiet, 0.99), 2),
        "hostile_p50_ms": round(_pct(loaded, 0.5), 2),
        "hostile_p99_ms": round(_pct(loaded, 0.99), 2),
        "samples": len(loaded),
        "timeouts": sum(v >= PROBE_TIMEOUT_S * 1000 for v in loaded),
    }


def serve(data: Path, tag: str, port: int) -> None:
    """The API with the sink, under the product's server configuration (``api.server``:
    connection cap, request-head timeout)."""
    import uvicorn

    from api.app import create_app
    from api.server import GC_THRESHOLD, uvicorn_config
    from bench.api_bench import _settings
    from drops.runtime import tune_gc
    from shell import broker
    from sinks.service import SinkThread

    s = _settings(data, tag, port)
    broker.ensure_topics(s)
    app = create_app(s, sink=SinkThread)
    server = uvicorn.Server(
        uvicorn_config(app, s, log_level="warning", timeout_graceful_shutdown=3)
    )
    tune_gc(*GC_THRESHOLD)  # as api.server.run does
    server.run()


_OPENED = re.compile(rb'"opened_at_ms":(\d+)')
UNTIMED_READ_PAUSE_S = 0.5  # an untimed client reads what arrived, then sleeps this long
FILTER_KINDS = 50  # distinct filters of a crowd whose query has "{i}" in it


async def _crowd(
    port: int,
    n: int,
    slow: int,
    seconds: float,
    counts: dict[str, int],
    timed: bool = False,
    delivery: list[tuple[float, float]] | None = None,
    query: bytes = b"",
) -> None:
    """``n`` SSE clients (raw sockets: one coroutine each) and ``slow`` slowloris
    connections (a request head trickled a byte a second, reopened when cut). ``timed``
    clients note, in ``delivery``, each event's ``(arrival, latency)`` in ms: its arrival
    less its drop's ``opened_at_ms`` (the writer's clock when it made the drop, just before
    producing it; same machine). Untimed ones read what arrived every
    ``UNTIMED_READ_PAUSE_S`` (a crowd of such readers costs the client processes far less
    than the server: the bench measures the API, not its own clients)."""
    end = time.monotonic() + seconds

    async def sse(i: int) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        q = query.replace(b"{i}", str(i % FILTER_KINDS).encode())
        path = b"/feed/stream" + (b"?" + q if q else b"")
        w.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        if b" 200 " in head.split(b"\r\n", 1)[0]:
            counts["sse"] += 1
        else:
            counts["refused"] += 1
        buf = b""
        try:
            while time.monotonic() < end:
                left = max(0.1, end - time.monotonic())
                chunk = await asyncio.wait_for(r.read(1 << 20), timeout=left)
                if not chunk:
                    counts["ended"] += 1
                    break
                if timed and delivery is not None:
                    now_ms = time.time() * 1000
                    buf += chunk
                    done, _, buf = buf.rpartition(b"\n\n")
                    delivery.extend((now_ms, now_ms - int(ms)) for ms in _OPENED.findall(done))
                else:
                    await asyncio.sleep(UNTIMED_READ_PAUSE_S)
        except TimeoutError:
            pass
        w.close()

    async def loris() -> None:
        while time.monotonic() < end:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            try:
                for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000:
                    if time.monotonic() > end:
                        return
                    w.write(bytes([byte]))
                    await w.drain()
                    await asyncio.sleep(1.0)
                    if r.at_eof():
                        break
            except (ConnectionError, OSError):
                pass
            counts["cut"] += 1
            w.close()

    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(sse(i)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    tasks += [asyncio.create_task(loris()) for _ in range(slow)]
    await asyncio.gather(*tasks, return_exceptions=True)


def crowd_clients(
    port: int, n: int, slow: int, seconds: float, timed: bool, query: str, out: Path
) -> None:
    """One client process of the crowd run; its counts and timings go to ``out`` (JSON)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    counts = {"sse": 0, "refused": 0, "ended": 0, "cut": 0}
    delivery: list[tuple[float, float]] = []

    def done(*_: Any) -> None:  # at the end of its time, or when the bench ends it (SIGTERM)
        out.write_bytes(orjson.dumps({**counts, "delivery": delivery}))
        os._exit(0)

    signal.signal(signal.SIGTERM, done)
    asyncio.run(_crowd(port, n, slow, seconds, counts, timed, delivery, query.encode()))
    done()


def _clients_proc(
    port: int, n: int, slow: int, seconds: float, timed: bool, query: str, out: Path
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "bench.hostile_bench", "crowd-clients", "--port", str(port)]
    args += ["--n", str(n), "--slow", str(slow), "--seconds", str(seconds), "--out", str(out)]
    args += ["--query", query] + (["--timed"] if timed else [])
    return subprocess.Popen(args, cwd=ROOT)


def _sse_clients(port: int) -> float:
    from bench.api_bench import _metric

    try:
        return _metric(port, "drops_sse_clients")
    except httpx.HTTPError:
        return -1.0


def crowd(
    clients: int,
    slow: int,
    rate: int,
    seconds: float,
    port: int,
    sampled: int = 100,
    idle_filter: str = "",
    src: Path = ROOT,
    procs: int = 2,
) -> dict[str, Any]:
    """``/healthz`` round trips and live delivery (drop made and produced -> event at a
    client) with ``clients`` SSE clients and ``slow`` slowloris connections, drops at
    ``rate`` a second, the API from the source tree ``src``. The clients run in ``procs``
    processes of their own, plus one for the ``sampled`` timed clients (unfiltered; they
    connect last, once the crowd is in). With ``idle_filter`` (a query) the untimed clients'
    streams are filtered: ``{i}`` in it is the client's number mod ``FILTER_KINDS`` (so
    ``neighborhood=N{i}`` is 50 distinct filters, each shared by a 50th of the crowd)."""
    tag = uuid.uuid4().hex[:8]
    data = Path(tempfile.mkdtemp(prefix="crowd-"))
    args = [sys.executable, "-m", "bench.hostile_bench", "serve", "--data-dir", str(data)]
    env = {**os.environ, "PYTHONPATH": str(src)}
    server = subprocess.Popen([*args, "--tag", tag, "--port", str(port)], cwd=src, env=env)
    proc = wait_ready(server, port)
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(tag, rate, stop), daemon=True)
    writer.start()
    untimed = clients - sampled
    children: list[tuple[subprocess.Popen[bytes], Path]] = []
    life = seconds + 200.0  # the clients' time: connecting, then the timed window
    began = time.monotonic()
    cpu0 = 0.0
    try:
        time.sleep(2)
        quiet = _probe(port, 10)
        share = [untimed // procs + (1 if k < untimed % procs else 0) for k in range(procs)]
        for k, n in enumerate(share):
            out = data / f"clients-{k}.json"
            children.append(
                (_clients_proc(port, n, slow if k == 0 else 0, life, False, idle_filter, out), out)
            )
        deadline = time.monotonic() + 120
        while _sse_clients(port) < untimed and time.monotonic() < deadline:
            time.sleep(0.5)
        out = data / "clients-timed.json"
        children.append((_clients_proc(port, sampled, 0, life, True, "", out), out))
        deadline = time.monotonic() + 60
        while _sse_clients(port) < clients and time.monotonic() < deadline:
            time.sleep(0.5)
        connected = _sse_clients(port)
        time.sleep(3)  # the timed clients' catch-up ends
        cpu0 = _cpu_s(proc.pid)
        t0 = time.time() * 1000
        loaded = _probe(port, seconds)
        t1 = time.time() * 1000
        cpu = _cpu_s(proc.pid) - cpu0
        still = _sse_clients(port)
        rss = int(Path(f"/proc/{proc.pid}/status").read_text().split("VmRSS:")[1].split()[0])
        load = os.getloadavg()
    finally:
        stop.set()
        writer.join(30)
        for child, _ in children:
            child.terminate()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    docs = []
    for child, path in children:
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)
        docs.append(orjson.loads(path.read_bytes()) if path.exists() else {})
    delivery = [lat for at, lat in docs[-1].get("delivery", []) if t0 <= at <= t1]
    return {
        "src": str(src),
        "idle_filter": idle_filter,
        "sse_clients": int(connected),
        "sse_clients_at_end": int(still),
        "refused": sum(d.get("refused", 0) for d in docs),
        "streams_ended": sum(d.get("ended", 0) for d in docs),
        "slow_connections": slow,
        "slow_cut": sum(d.get("cut", 0) for d in docs),
        "quiet_p50_ms": round(_pct(quiet, 0.5), 2),
        "quiet_p99_ms": round(_pct(quiet, 0.99), 2),
        "crowd_p50_ms": round(_pct(loaded, 0.5), 2),
        "crowd_p99_ms": round(_pct(loaded, 0.99), 2),
        "delivery_p50_ms": round(_pct(delivery, 0.5), 1),
        "delivery_p99_ms": round(_pct(delivery, 0.99), 1),
        "delivery_samples": len(delivery),
        "delivery_expected": int(rate * seconds * min(sampled, clients)),
        "sampled": min(sampled, clients),
        "samples": len(loaded),
        "timeouts": sum(v >= PROBE_TIMEOUT_S * 1000 for v in loaded),
        "api_cpu_percent": round(100 * cpu / max(seconds, 1e-9), 1),
        "api_rss_mb": round(rss / 1024, 1),
        "load_average": [round(x, 2) for x in load],
        "wall_s": round(time.monotonic() - began, 1),
    }


CROWD = 5000  # SSE clients of the crowd run in drops bench
HEALTHZ_GOAL_MS = 100.0  # /healthz p99 with the crowd and the slowloris connections
DELIVERY_GOAL_MS = 1000.0  # drop produced -> event at a client, p99, with the crowd
HOSTILE_RATIO_GOAL = 2.0  # /healthz p99 with oversized-cursor clients / without


def figures(hostile: dict[str, Any], many: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``drops bench`` figures of the two runs."""
    out: list[dict[str, Any]] = []

    def add(metric: str, value: float, unit: str, goal: str | None, ok: bool | None) -> None:
        out.append(
            {"area": "api", "metric": metric, "value": value, "unit": unit, "goal": goal, "ok": ok}
        )

    n, slow = many["sse_clients"], many["slow_connections"]
    crowd_p99 = float(many["crowd_p99_ms"])
    add(f"/healthz p99, {n} SSE clients + {slow} slowloris", crowd_p99, "ms",
        f"p99 <= {HEALTHZ_GOAL_MS:g} ms", crowd_p99 <= HEALTHZ_GOAL_MS)  # fmt: skip
    add("/healthz p99 before the crowd connects", float(many["quiet_p99_ms"]), "ms", None, None)
    timed = many["delivery_samples"] > 0
    p50 = float(many["delivery_p50_ms"]) if timed else 0.0
    p99 = float(many["delivery_p99_ms"]) if timed else 0.0
    what = f"live delivery (drop produced -> client), {many['sampled']} timed of {n} SSE clients"
    what += "" if timed else " (no event arrived: not measured)"
    add(f"{what}: p50", p50, "ms", None, None)
    add(f"{what}: p99", p99, "ms", f"p99 <= {DELIVERY_GOAL_MS:g} ms",
        timed and p99 <= DELIVERY_GOAL_MS)  # fmt: skip
    ratio = float(hostile["hostile_p99_ms"]) / max(float(hostile["quiet_p99_ms"]), 1e-9)
    name = (
        f"/healthz p99, {hostile['hostile_clients']} oversized-cursor clients "
        f"({hostile['hostile_accepted']} accepted)"
    )
    add(f"{name} / without", ratio, "x", f"<= {HOSTILE_RATIO_GOAL:g}x", ratio <= HOSTILE_RATIO_GOAL)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        sv = argparse.ArgumentParser()
        sv.add_argument("cmd")
        sv.add_argument("--data-dir", type=Path, required=True)
        sv.add_argument("--tag", required=True)
        sv.add_argument("--port", type=int, required=True)
        a = sv.parse_args()
        serve(a.data_dir, a.tag, a.port)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "crowd-clients":
        cl = argparse.ArgumentParser()
        cl.add_argument("cmd")
        for name in ("--port", "--n", "--slow"):
            cl.add_argument(name, type=int, required=True)
        cl.add_argument("--seconds", type=float, required=True)
        cl.add_argument("--timed", action="store_true")
        cl.add_argument("--query", default="")
        cl.add_argument("--out", type=Path, required=True)
        a = cl.parse_args()
        crowd_clients(a.port, a.n, a.slow, a.seconds, a.timed, a.query, a.out)
        return
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true", help="both runs; a figures line (drops bench)")
    ap.add_argument("--quick", action="store_true", help="with --json: shorter runs")
    ap.add_argument("--sampled", type=int, default=100, help="with --crowd: clients timed")
    ap.add_argument("--crowd", type=int, default=0, help="instead: N idle SSE clients")
    ap.add_argument(
        "--idle-filter",
        default="",
        help="with --crowd: query of the untimed clients' streams ({i}: the client mod 50)",
    )
    ap.add_argument("--procs", type=int, default=2, help="with --crowd: client processes")
    ap.add_argument("--slow", type=int, default=200, help="with --crowd: slowloris connections")
    ap.add_argument("--base", type=Path, default=None, help="source tree of the revision before")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--port", type=int, default=48190)
    args = ap.parse_args()
    if args.json:
        secs = 15.0 if args.quick else args.seconds
        hostile = run(ROOT, args.clients, args.rate, secs, args.port)
        many = crowd(
            args.crowd or CROWD,
            args.slow,
            args.rate,
            secs,
            args.port + 1,
            args.sampled,
            args.idle_filter,
        )
        print(orjson.dumps({"oversized": hostile, "crowd": many}).decode(), flush=True)
        print(orjson.dumps({"figures": figures(hostile, many)}).decode(), flush=True)
        return
    if args.crowd:
        # with --base: the revision before, then this one, in the same session (A/B)
        runs = []
        for tree in ([args.base] if args.base else []) + [ROOT]:
            got = crowd(
                args.crowd,
                args.slow,
                args.rate,
                args.seconds,
                args.port,
                args.sampled,
                args.idle_filter,
                tree,
                args.procs,
            )
            print(orjson.dumps(got).decode(), flush=True)
            runs.append(got)
        print(orjson.dumps(runs, option=orjson.OPT_INDENT_2).decode())
        return
    trees = ([args.base] if args.base else []) + [ROOT]
    results = [run(t, args.clients, args.rate, args.seconds, args.port) for t in trees]
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
