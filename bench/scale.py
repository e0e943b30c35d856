"""``drops scale``: N replicas of every stage, one of each kind killed mid-run, every feed
checked against the script.

It starts the local broker, the simulator (scripted: its market changes only when told),
``--producers`` producers, ``--processors`` processors and ``--apis`` API replicas (each
``drops api --with-sink`` on its own port, with its own chDB folder and sink group). For
``--minutes`` it opens slots at random buckets; at seeded moments of the run it kill -9s one
replica of each kind and starts it again a little later (the producer after its streams
have moved to the others, the processor after the survivors took its partitions or before,
the API after a few seconds). Then a share of the opened slots is closed, and every API
replica's ``/feed`` must hold each scripted open exactly once and each close exactly once,
and nothing else. One verdict line, ``PASS`` or ``FAIL`` with the counts; exit 1 on FAIL.

The run reuses the chaos run's pieces (:mod:`bench.chaos`: settings, the market script, the
settle-and-count of a feed) with replicas instead of faults. One market: the simulator
serves one market per process.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from bench.chaos import Chaos, Config, Report, chaos_settings
from bench.pipeline import feed_items, free_port, wait_for
from drops.log import get_log
from shell import broker

log = get_log("scale")


@dataclass
class ScaleConfig(Config):
    producers: int = 2
    processors: int = 2
    apis: int = 2
    down: float = 8.0  # seconds a killed replica stays down


@dataclass
class ScaleReport:
    replicas: dict[str, int] = field(default_factory=dict)
    feeds: dict[str, Report] = field(default_factory=dict)  # API replica -> its feed's counts
    kills: Counter[str] = field(default_factory=Counter)
    crashes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.feeds) and all(
            r.ok and r.opens_expected > 0 and r.closes_expected > 0 for r in self.feeds.values()
        )

    def verdict(self) -> str:
        def total(attr: str) -> int:
            return sum(getattr(r, attr) for r in self.feeds.values())

        first = next(iter(self.feeds.values()), Report())
        counts = " ".join(f"{k}={v}" for k, v in self.replicas.items())
        kills = ",".join(f"{k}x{v}" for k, v in sorted(self.kills.items())) or "none"
        return (
            f"{'PASS' if self.ok else 'FAIL'} scale: {counts}; feeds checked {len(self.feeds)}; "
            f"opens {first.opens_expected} scripted, served {total('opens_served')} over all "
            f"feeds, missing {total('missing')}, duplicated {total('duplicated')}, "
            f"false {total('false')}; closes {first.closes_expected} scripted, missing "
            f"{total('closes_missing')}, duplicated {total('closes_duplicated')}, false "
            f"{total('closes_false')}; kill -9s {kills}; crashes "
            f"{sum(self.crashes.values())}; {self.seconds:.0f} s"
        )


class Scale(Chaos):
    def __init__(self, cfg: ScaleConfig, data_dir: Path, bootstrap: str, port: int) -> None:
        settings = chaos_settings(data_dir, cfg, bootstrap, port)
        super().__init__(settings, cfg, data_dir / "logs")
        self.scfg = cfg
        self.ports = {f"api-{i}": free_port() for i in range(cfg.apis)}
        self.api = self.url("api-0")
        self.down: dict[str, float] = {}  # killed replicas -> when they come back
        self.result = ScaleReport(
            replicas={"producers": cfg.producers, "processors": cfg.processors,
                      "apis": cfg.apis},
        )  # fmt: skip

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def command(self, name: str) -> None:
        kind = name.split("-")[0]
        if kind == "api":
            env = {"DROPS_API__PORT": str(self.ports[name])}
            self.pipeline.start(name, "api", "--with-sink", env=env)
            url = self.url(name)
            wait_for(name, lambda: httpx.get(f"{url}/healthz").status_code == 200, 120)
        else:
            self.pipeline.start(name, {"producer": "produce", "processor": "process"}[kind])

    def start_stages(self) -> None:
        self.pipeline.start("simulator", "simulate")
        self.sim.wait_ready()
        for i in range(self.scfg.apis):
            self.command(f"api-{i}")
        for i in range(self.scfg.processors):
            self.command(f"processor-{i}")
        for i in range(self.scfg.producers):
            self.command(f"producer-{i}")

    def revive(self) -> None:
        for name in list(self.pipeline.procs):
            if self.pipeline.alive(name) or name in self.down:
                continue
            log.warning("stage_crashed", stage=name, tail=self.pipeline.log_tail(name, 1500))
            self.result.crashes[name] += 1
            self.command(name)

    def storm(self) -> None:
        cfg = self.scfg
        start = time.monotonic()
        deadline = start + cfg.seconds
        victims = [n for n, c in (("producer-0", cfg.producers), ("processor-0",
                   cfg.processors), ("api-0", cfg.apis)) if c > 1]  # fmt: skip
        self.rng.shuffle(victims)
        # seeded moments in the run's first 60 %, each back before the end
        room = max(1.0, cfg.seconds * 0.6 - cfg.down)
        kills = sorted((start + self.rng.uniform(0.15, 1.0) * room, v) for v in victims)
        self.down = {}
        next_open = start
        while (now := time.monotonic()) < deadline:
            for name, back in list(self.down.items()):
                if now >= back:
                    del self.down[name]
                    log.info("replica_back", replica=name)
                    self.command(name)
            if kills and now >= kills[0][0]:
                _, name = kills.pop(0)
                log.info("disruption", what=f"kill {name}")
                self.pipeline.kill(name)
                self.down[name] = time.monotonic() + cfg.down
                self.result.kills[name.split("-")[0]] += 1
            self.revive()
            if now >= next_open:
                self.open_one()
                next_open = now + self.rng.expovariate(1 / cfg.open_every)
            time.sleep(0.1)
        for name in list(self.down):
            self.command(name)
        self.down = {}

    def check_all(self) -> None:
        """Every API replica's feed against the script: opens, then closes after closing."""
        expected = set(self.opened)
        to_close = sorted(expected)[: int(len(expected) * self.cfg.close_share)]
        reports = {f"api-{i}": Report() for i in range(self.scfg.apis)}
        for name, r in reports.items():
            self.api = self.url(name)
            opens = self.settle("open", expected)
            counts = Counter(i["slot_id"] for i in opens)
            r.opens_expected, r.opens_served = len(expected), len(counts)
            r.missing = len(expected - set(counts))
            r.duplicated = sum(n - 1 for n in counts.values() if n > 1)
            r.false = len(set(counts) - expected)
        for sid in to_close:
            venue, actual = self.opened[sid]
            self.sim.close("resy", venue, actual)
        for name, r in reports.items():
            self.api = self.url(name)
            self.settle("close", set(to_close))
            time.sleep(2 * self.cfg.poll_interval)  # more clean polls: nothing else may appear
            items = [i for i in self._feed() if i["event"] in ("open", "close")]
            seen = Counter(i["slot_id"] for i in items if i["event"] == "open")
            c = Counter(i["slot_id"] for i in items if i["event"] == "close")
            r.missing = len(expected - set(seen))
            r.duplicated = sum(n - 1 for n in seen.values() if n > 1)
            r.false = len(set(seen) - expected)
            r.closes_expected, r.closes_served = len(to_close), len(c)
            r.closes_missing = len(set(to_close) - set(c))
            r.closes_duplicated = sum(n - 1 for n in c.values() if n > 1)
            r.closes_false = len(set(c) - set(to_close))
        self.result.feeds = reports

    def _feed(self) -> list[dict[str, object]]:
        return feed_items(self.api)


def run(cfg: ScaleConfig, data_dir: Path, bootstrap: str, controller_port: int) -> ScaleReport:
    shutil.rmtree(data_dir, ignore_errors=True)
    scale = Scale(cfg, data_dir, bootstrap, controller_port)
    broker.start(scale.s)
    broker.ensure_topics(scale.s)
    started = time.monotonic()
    try:
        scale.start_stages()
        scale.wait_baselines()
        scale.learn_market()
        log.info("scale_run", seconds=cfg.seconds, seed=cfg.seed, **scale.result.replicas)
        scale.storm()
        log.info("scale_settle", opened=len(scale.opened))
        scale.check_all()
    finally:
        scale.pipeline.stop_all()
        broker.stop(scale.s)
        scale.result.seconds = time.monotonic() - started
    return scale.result


def main(argv: list[str] | None = None) -> int:
    text = (__doc__ or "").replace("``", "`").replace(":mod:", "")
    ap = argparse.ArgumentParser(prog="drops scale", description=text)
    ap.add_argument("--minutes", type=float, default=3.0, help="length of the scripted run")
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--processors", type=int, default=2)
    ap.add_argument("--apis", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data-dir", type=Path, default=Path(".drops/scale"))
    ap.add_argument("--bootstrap", default="127.0.0.1:19692")
    ap.add_argument("--controller-port", type=int, default=19693)
    args = ap.parse_args(argv)
    cfg = ScaleConfig(
        seconds=args.minutes * 60,
        seed=args.seed,
        fault_rate=0.0,
        producers=args.producers,
        processors=args.processors,
        apis=args.apis,
    )
    report = run(cfg, args.data_dir.resolve(), args.bootstrap, args.controller_port)
    feeds = {k: vars(v) for k, v in report.feeds.items()}
    doc = {"scale": {"feeds": feeds, "kills": report.kills, "ok": report.ok}}
    print(orjson.dumps(doc, default=dict).decode())
    print(report.verdict())
    return 0 if report.ok else 1
