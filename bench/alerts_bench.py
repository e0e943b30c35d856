"""Watches and alerts: matching throughput at 100,000 watches, and snapshot -> webhook latency.

``python -m bench.alerts_bench [--quick] [--json]`` against the broker of ``DROPS_KAFKA__BOOTSTRAP``
(``drops bench`` starts one). Every stage is the real one, as a child process:

- **match**: 100,000 watches on the compacted topic (venue, neighborhood, date and weekday
  watches, as people write them), the real matcher (``drops match``); first a backlog of drops
  it reads as fast as it can (drops/s), then drops at 200/s for a while (its CPU as a share of
  one core, alerts/s). The same run measures the index against a linear scan of the same
  watches in process (the baseline).
- **e2e**: snapshot record -> real processor -> drops topic -> real matcher -> alerts topic
  -> real delivery worker -> a signed webhook received by an HTTP server here; from the
  snapshot's produce to the receipt, p50 and p99.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import TopicPartition

from bench.pipeline import settings_env
from domain.watches import WatchIndex, matches
from drops import kafka
from drops.settings import Settings
from schemas import Slot, Snapshot, bucket_id, encode
from schemas.watches import Channel, Criteria, Watch, encode_record
from shell import broker
from sinks.testdata import DropWriter, make_drop

PY = sys.executable
VENUES = 10_000  # a market's venues
HOODS = tuple(f"Hood {i}" for i in range(60))  # and its neighborhoods


def _settings(root: Path, tag: str, **extra: Any) -> Settings:
    base = Settings()
    return Settings(
        data_dir=root,
        kafka_bootstrap=base.kafka.bootstrap,
        drops_topic=f"bench{tag}.events",
        stats_topic=f"bench{tag}.buckets",
        deadletter_topic=f"bench{tag}.deadletter",
        snapshot_topic=f"bench{tag}.snapshots",
        watches_topic=f"bench{tag}.watches",
        alerts_topic=f"bench{tag}.alerts",
        deliveries_topic=f"bench{tag}.deliveries",
        processor_group=f"bench{tag}-processor",
        matcher_group=f"bench{tag}-matcher",
        delivery_group=f"bench{tag}-delivery",
        state_path=root / "state",
        log_format="json",
        log_level="INFO",
        **extra,
    )


def _child(s: Settings, root: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    out = (root / f"{name}.log").open("ab")
    return subprocess.Popen(
        [PY, "-m", "shell.cli", *args],
        env=settings_env(s),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def watches(n: int, day0: str, rng: random.Random) -> list[Watch]:
    """``n`` watches of the kinds people write: venues (80%), a neighborhood on a few dates in
    an hour's window for a party size (10%), a neighborhood on weekend nights for a party
    size (10%)."""
    d0 = datetime.fromisoformat(day0).date()
    hook = [Channel(type="webhook", url="http://127.0.0.1:9/hook")]
    out = []
    for i in range(n):
        r = rng.random()
        hood = [rng.choice(HOODS)]
        party = rng.randint(2, 6)
        if r < 0.8:
            venues = [str(1000 + rng.randrange(VENUES)) for _ in range(rng.randint(1, 3))]
            c = Criteria(venue_ids=venues)
        elif r < 0.9:
            start = d0 + timedelta(days=rng.randrange(14))
            end = start + timedelta(days=rng.randrange(3))
            h = rng.randint(17, 21)
            c = Criteria(
                neighborhoods=hood,
                date_from=start,
                date_to=end,
                time_from=f"{h}:00",
                time_to=f"{h + 1}:00",
                party_size=party,
            )
        else:
            c = Criteria(
                neighborhoods=hood, weekdays=["fri", "sat"], time_from="20:00", party_size=party
            )
        out.append(
            Watch(
                watch_id=f"w{i}",
                owner="bench",
                secret="s" * 32,
                created_at_ms=1,
                updated_at_ms=1,
                channels=hook,
                criteria=c,
            )
        )
    return out


def write_watches(s: Settings, ws: list[Watch]) -> None:
    p = kafka.producer(s, {"linger.ms": 50, "acks": "all"})
    for w in ws:
        while True:
            try:
                p.produce(s.topics.watches, key=w.watch_id.encode(), value=encode_record(w))
                break
            except BufferError:
                p.poll(0.1)
    p.flush(60)


def drops_for(n: int, day0: str, rng: random.Random, start: int = 0) -> list[Any]:
    d0 = datetime.fromisoformat(day0).date()
    return [
        make_drop(
            start + i,
            date=(d0 + timedelta(days=rng.randrange(14))).isoformat(),
            venue=rng.randrange(VENUES),
            neighborhood=rng.choice(HOODS),
        )
        for i in range(n)
    ]


def committed(s: Settings) -> int:
    c = kafka.consumer(s, {"group.id": s.matcher.group})
    try:
        [tp] = c.committed([TopicPartition(s.topics.drops, 0)], timeout=10)
        return max(int(tp.offset), 0)
    finally:
        c.close()


def end_offset(s: Settings, topic: str) -> int:
    c = kafka.consumer(s, {"group.id": uuid.uuid4().hex})
    try:
        return int(c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        c.close()


def wait_log(root: Path, name: str, event: str, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = root / f"{name}.log"
        if path.exists() and f'"{event}"' in path.read_text(errors="replace"):
            return time.monotonic()
        time.sleep(0.1)
    raise RuntimeError(f"{name} never logged {event}")


def bench_match(n_watches: int, backlog: int, paced_s: float, root: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    s = _settings(root / "match", tag)
    broker.ensure_topics(s)
    rng = random.Random(12)
    day0 = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    ws = watches(n_watches, day0, rng)
    write_watches(s, ws)
    out: dict[str, Any] = {"watches": n_watches}

    # the baseline, in process: the index against a linear scan of the same watches
    sample = drops_for(400, day0, random.Random(5), start=10_000_000)
    docs = [d.to_dict() for d in sample]
    index = WatchIndex()
    for w in ws:
        index.upsert(w)
    t0 = time.perf_counter()
    hits = sum(len(index.match(d)) for d in docs)
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    scan_docs = docs[:20]
    scan_hits = sum(sum(1 for w in ws if matches(w.criteria, d)) for d in scan_docs)
    t_scan = (time.perf_counter() - t0) / len(scan_docs) * len(docs)
    assert scan_hits == sum(len(index.match(d)) for d in scan_docs)
    out["index_us_per_drop"] = t_index / len(docs) * 1e6
    out["scan_us_per_drop"] = t_scan / len(docs) * 1e6
    out["alerts_per_drop"] = hits / len(docs)
    del index

    writer = DropWriter(s)
    backlog_drops = drops_for(backlog, day0, rng)
    for i in range(0, backlog, 500):
        writer.write(backlog_drops[i : i + 500])
    started = time.monotonic()
    proc = _child(s, root, "matcher", "match")
    try:
        loaded = wait_log(root, "matcher", "watches_loaded")
        out["watches_load_s"] = loaded - started
        cpu0 = _cpu_s(proc.pid)
        t0 = time.monotonic()
        while committed(s) < backlog:
            if proc.poll() is not None:
                raise RuntimeError("the matcher exited (matcher.log)")
            time.sleep(0.2)
        t_backlog = time.monotonic() - t0
        out["backlog_drops_per_s"] = backlog / t_backlog
        out["backlog_cpu_s"] = _cpu_s(proc.pid) - cpu0
        alerts0 = end_offset(s, s.topics.alerts)
        # paced: 200 drops a second, one transaction per 0.25 s
        paced = drops_for(int(200 * paced_s), day0, rng, start=backlog)
        cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
        for k in range(0, len(paced), 50):
            writer.write(paced[k : k + 50])
            time.sleep(max(0.0, t0 + (k + 50) / 200 - time.monotonic()))
        while committed(s) < backlog + len(paced):
            time.sleep(0.1)
        wall = time.monotonic() - t0
        out["paced_drops_per_s"] = len(paced) / wall
        out["paced_cpu_share"] = (_cpu_s(proc.pid) - cpu0) / wall
        out["paced_alerts_per_s"] = (end_offset(s, s.topics.alerts) - alerts0) / wall
    finally:
        _stop(proc)
        writer.close()
    print(f"match: {out}", flush=True)
    return out


class Receiver:
    def __init__(self) -> None:
        self.got: list[tuple[float, dict[str, Any]]] = []
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recv.got.append((time.time(), orjson.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def bench_e2e(samples: int, background: int, root: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    s = _settings(root / "e2e", tag)
    broker.ensure_topics(s)
    recv = Receiver()
    rng = random.Random(4)
    day = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    ws = watches(background, day, rng)
    ws.append(
        Watch(
            watch_id="bench",
            owner="bench",
            secret="s" * 32,
            created_at_ms=1,
            updated_at_ms=1,
            channels=[Channel(type="webhook", url=recv.url)],
            criteria=Criteria(neighborhoods=["SoHo"], providers=["resy"]),
        )
    )
    write_watches(s, ws)
    procs = [
        _child(s, root, "processor", "process"),
        _child(s, root, "matcher", "match"),
        _child(s, root, "delivery", "deliver"),
    ]
    out: dict[str, Any] = {"samples": samples, "background_watches": background}
    try:
        p = kafka.producer(
s, { "partitioner": "murmur2_random",
                      "enable.idempotence": True, "linger.ms": 0})  # fmt: skip
        bid = bucket_id("nyc", day, "19:00")

        def slot(k: int) -> Slot:
            return Slot("resy", str(5000 + k % 2000), f"Venue {k}", f"{day} 19:{k % 60:02d}:00",
                        "EST5EDT", "SoHo", ("Dining Room",), 2, 4, "")  # fmt: skip

        base = tuple(slot(k) for k in range(40))
        produced: dict[str, float] = {}

        def send(i: int, kind: str, slots: tuple[Slot, ...]) -> None:
            sid = f"bench-{tag}-{i}"
            snap = Snapshot(sid, kind, "nyc", "resy", bid, day, "19:00",  # type: ignore[arg-type]
                            int(time.time() * 1000), True, slots=slots)  # fmt: skip
            produced[sid] = time.time()
            p.produce(s.topics.snapshots, key=snap.key.encode(), value=encode(snap))
            p.flush(10)

        send(0, "baseline", base)
        i = 1
        deadline = time.monotonic() + 180
        while not recv.got:  # warm-up: every stage running
            if time.monotonic() > deadline or any(x.poll() is not None for x in procs):
                raise RuntimeError("no alert reached the webhook (logs in the bench folder)")
            send(i, "poll", (*base, slot(100 + i)))
            i += 1
            time.sleep(0.5)
        time.sleep(3.0)
        first = i
        for _ in range(samples):
            send(i, "poll", (*base, slot(100 + i)))
            i += 1
            time.sleep(rng.uniform(0.2, 0.6))
        time.sleep(6.0)
        lat = [
            (t - produced[a["drop"]["snapshot_id"]]) * 1000
            for t, a in recv.got
            if a["kind"] == "open"
            and a["drop"]["snapshot_id"] in produced
            and int(a["drop"]["snapshot_id"].rsplit("-", 1)[1]) >= first
        ]
        out.update(
            received=len(lat), p50_ms=_pct(lat, 0.5), p99_ms=_pct(lat, 0.99), max_ms=max(lat)
        )
    finally:
        for x in procs:
            _stop(x)
        recv.server.shutdown()
    print(f"e2e: {out}", flush=True)
    return out


def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(
        metric: str, value: float, unit: str, goal: str | None = None, ok: bool | None = None
    ) -> None:
        out.append(
            {
                "area": "alerts",
                "metric": metric,
                "value": value,
                "unit": unit,
                "goal": goal,
                "ok": ok,
            }
        )

    m = r.get("match")
    if m:
        n = f"{m['watches']:,} watches"
        per_drop = m["paced_cpu_share"] / m["paced_drops_per_s"]  # CPU seconds per drop
        add(f"matcher throughput, backlog, {n}", m["backlog_drops_per_s"], "drops/s",
            ">= 200 drops/s", m["backlog_drops_per_s"] >= 200)  # fmt: skip
        add(f"matcher paced run: drops/s reached, {n}", m["paced_drops_per_s"], "drops/s")
        add(f"matcher paced run: CPU, {n}", 100 * m["paced_cpu_share"], "% of a core")
        add(f"matcher paced run: alerts/s, {n}", m["paced_alerts_per_s"], "alerts/s")
        add(f"alerts per drop, {n}", m["alerts_per_drop"], "")
        add(f"drops/s one core can match (CPU per drop), {n}", 1 / per_drop, "drops/s",
            ">= 400 drops/s (200/s with room to spare)", 1 / per_drop >= 400)  # fmt: skip
        add(f"matcher start: watches read, {n}", m["watches_load_s"], "s")
        add(f"index match per drop, {n}", m["index_us_per_drop"], "us")
        add(
            f"linear scan per drop / index, {n}",
            m["scan_us_per_drop"] / m["index_us_per_drop"],
            "x",
        )
    e = r.get("e2e")
    if e:
        add("snapshot record -> webhook received: p50", e["p50_ms"], "ms")
        add(
            "snapshot record -> webhook received: p99",
            e["p99_ms"],
            "ms",
            "p99 <= 3000 ms",
            e["p99_ms"] <= 3000,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.alerts_bench")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--watches", type=int, default=100_000)
    ap.add_argument("--skip-match", action="store_true")
    ap.add_argument("--skip-e2e", action="store_true")
    args = ap.parse_args()
    root = Path(
        tempfile.mkdtemp(
            prefix="alerts-bench-",
            dir=Path(".drops").resolve() if Path(".drops").exists() else None,
        )
    )
    results: dict[str, Any] = {}
    try:
        if not args.skip_match:
            results["match"] = bench_match(
                args.watches, 5000 if args.quick else 20000, 15 if args.quick else 60, root
            )
        if not args.skip_e2e:
            results["e2e"] = bench_e2e(
                30 if args.quick else 100, 1000 if args.quick else 10_000, root
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        print(orjson.dumps({"figures": figures(results)}).decode(), flush=True)


if __name__ == "__main__":
    main()
