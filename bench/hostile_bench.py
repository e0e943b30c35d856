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
from bench.api_bench import _pct

ROOT = Path(__file__).resolve().parent.parent
OVERSIZED = C.encode(dict.fromkeys(range(4096), 0))


def _server(src: Path, data: Path, tag: str, port: int) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "bench.api_bench", "serve", "--data-dir", str(data)]
    args += ["--tag", tag, "--port", str(port), "--with-sink"]
    proc = subprocess.Popen(args, cwd=src, env={**os.environ, "PYTHONPATH": str(src)})
    deadline = time.monotonic() + 120
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
        "hostile_accepted": len(accepted),
        "quiet_p50_ms": round(_pct(quiet, 0.5), 2),
        "quiet_p99_ms": round(_pct(quiet, 0.99), 2),
        "hostile_p50_ms": round(_pct(loaded, 0.5), 2),
        "hostile_p99_ms": round(_pct(loaded, 0.99), 2),
        "samples": len(loaded),
        "timeouts": sum(v >= PROBE_TIMEOUT_S * 1000 for v in loaded),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", type=Path, default=None, help="source tree of the revision before")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--port", type=int, default=48190)
    args = ap.parse_args()
    trees = ([args.base] if args.base else []) + [ROOT]
    results = [run(t, args.clients, args.rate, args.seconds, args.port) for t in trees]
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
