"""``drops chaos``: the whole pipeline under fire, checked against what the simulator was told.

The simulator runs in scripted mode: its seeded market never changes by itself, so every slot
that opens is one this run opened, at a known moment. For a bounded time the run opens new
slots at random buckets while the simulator fails a share of requests (5xx, timeouts, 429
with Retry-After, malformed and truncated responses), and, at seeded random moments, it
kill -9s the processor or the API process (which holds the sink), or restarts the broker.
It also kill -9s the producer at seeded moments and keeps it down for tens of seconds while
slots go on opening: those must be reported after it is back, and nothing the baseline had
may come back as a drop.
The alert path runs too: two watches are created through the API before the storm (a signed
webhook to a real HTTP receiver for half the venues, with closes, and an Apprise ``json://``
channel to another for the whole market; the receivers answer 503 to the first post of a
fifth of the alerts), and the matcher and the delivery worker are killed -9 at seeded
moments (and at random among the other disruptions).
Then the faults stop, the stages settle, a share of the opened slots is closed again, and
what ``/feed`` served is compared with the reference: every opened slot exactly once as an
open, every closed one exactly once as a close, nothing else. The receivers are compared
with the reference too, by idempotency key: every expected (watch, drop) alert accepted,
none for a false drop, and how many were accepted twice (a send answered in the instant
before a kill of the delivery worker, the documented limit).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson

from bench.pipeline import Pipeline, feed_items, free_port, read_topic, wait_for
from bench.receiver import AlertReceiver
from domain.calendar import Bucket, window
from domain.watches import alert_id
from drops.log import get_log
from drops.settings import Settings
from producers.windows import bucket_window
from schemas import slot_id
from shell import broker
from simulator.control import SimControl

log = get_log("chaos")

FAULT_KINDS = ("5xx", "timeout", "429", "malformed", "truncated")
DISRUPTIONS = (
    "kill processor",
    "kill api+sink",
    "restart broker",
    "kill matcher",
    "kill delivery",
)
COMMANDS = {
    "simulator": ["simulate"],
    "processor": ["process"],
    "producer": ["produce"],
    "matcher": ["match"],
    "delivery": ["deliver"],
}


@dataclass
class Config:
    seconds: float = 600.0
    seed: int = 1
    fault_rate: float = 0.15  # share of provider requests that fail, over all kinds
    disrupt_every: float = 45.0  # mean seconds between disruptions
    open_every: float = 1.5  # mean seconds between scripted openings
    close_share: float = 0.5  # share of the opened slots closed after the storm
    days: int = 3
    venues: int = 40
    poll_interval: float = 2.0
    settle_timeout: float = 240.0
    producer_kills: int = -1  # kill -9s of the producer (-1: one per 150 s of storm, >= 1)
    producer_down: tuple[float, float] = (15.0, 40.0)  # seconds it stays down, drawn
    alert_kills: int = -1  # kill -9s each of the matcher and the delivery worker, at seeded
    # moments (-1: one per 150 s of storm, >= 1), besides those drawn among the disruptions


DELIVERY_CONCURRENCY = 8
REPEAT_PER_KILL = DELIVERY_CONCURRENCY


@dataclass
class Report:
    opens_expected: int = 0
    opens_served: int = 0
    missing: int = 0
    duplicated: int = 0
    false: int = 0
    closes_expected: int = 0
    closes_served: int = 0
    closes_missing: int = 0
    closes_duplicated: int = 0
    closes_false: int = 0
    topic_duplicates: int = 0
    disruptions: Counter[str] = field(default_factory=Counter)
    crashes: Counter[str] = field(default_factory=Counter)  # stages that died by themselves
    faults_applied: int = 0
    opened_while_producer_down: int = 0
    alerts_expected: int = 0
    alerts_accepted: int = 0  # distinct expected alerts a receiver answered 2xx
    alerts_missing: int = 0
    alerts_false: int = 0  # accepted alerts of no expected (watch, drop): a false drop's
    alerts_repeated: int = 0  # 2xx answers beyond the first, per idempotency key
    alert_send_retries: int = 0  # posts the receivers answered 503
    delivery_kills: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.duplicated
            or self.false
            or self.closes_missing
            or self.closes_duplicated
            or self.closes_false
            or self.topic_duplicates
            or self.alerts_missing
            or self.alerts_false
            or self.alerts_repeated > self.repeat_limit
        )

    @property
    def repeat_limit(self) -> int:
        """Repeats the documented limit allows: at most the sends in flight at each kill of
        the delivery worker (each carrying its idempotency key)."""
        return self.delivery_kills * REPEAT_PER_KILL

    def lines(self) -> list[str]:
        return [
            f"drops expected   {self.opens_expected}",
            f"drops served     {self.opens_served}",
            f"missing          {self.missing}",
            f"duplicated       {self.duplicated}",
            f"false            {self.false}",
            f"closes expected  {self.closes_expected}",
            f"closes served    {self.closes_served} (missing {self.closes_missing}, "
            f"duplicated {self.closes_duplicated}, false {self.closes_false})",
            f"duplicates on the drops topic  {self.topic_duplicates}",
            f"faults injected  {self.faults_applied}",
            f"opened while the producer was down  {self.opened_while_producer_down}",
            f"alerts expected  {self.alerts_expected}, accepted {self.alerts_accepted} "
            f"(missing {self.alerts_missing}, false {self.alerts_false}, accepted twice "
            f"{self.alerts_repeated} after {self.delivery_kills} kills of the delivery "
            f"worker, limit {self.repeat_limit}; {self.alert_send_retries} posts answered "
            "503 and retried)",
            "disruptions survived  "
            + (", ".join(f"{k} x{v}" for k, v in sorted(self.disruptions.items())) or "none"),
            "stages restarted after crashing by themselves  "
            + (", ".join(f"{k} x{v}" for k, v in sorted(self.crashes.items())) or "none"),
            f"verdict          {'PASS' if self.ok else 'FAIL'} in {self.seconds:.0f} s",
        ]


def chaos_settings(data_dir: Path, cfg: Config, bootstrap: str, controller_port: int) -> Settings:
    sim_port, api_port = free_port(), free_port()
    return Settings(
        data_dir=data_dir,
        kafka_bootstrap=bootstrap,
        kafka_controller_port=controller_port,
        kafka_dist=Path(".drops/dist").resolve(),
        sim_port=sim_port,
        sim_scripted=True,
        sim_venues=cfg.venues,
        resy_url=f"http://127.0.0.1:{sim_port}",
        api_port=api_port,
        poll_interval=cfg.poll_interval,
        days=cfg.days,
        request_timeout=2.0,
        max_retries=2,
        retry_after_max=5.0,
        log_format="json",
        delivery_backoff=0.2,
        delivery_backoff_max=2.0,
        delivery_attempts=10,
        delivery_rate=1000.0,
        delivery_concurrency=DELIVERY_CONCURRENCY,
        matcher_metrics_port=0,
        delivery_metrics_port=0,
    )


class Chaos:
    def __init__(self, settings: Settings, cfg: Config, logs: Path) -> None:
        self.s = settings
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.pipeline = Pipeline(settings, logs)
        self.api = f"http://127.0.0.1:{settings.api.port}"
        self.sim = SimControl(f"http://127.0.0.1:{settings.simulator.port}")
        self.report = Report()
        self.opened: dict[str, tuple[str, str]] = {}  # slot id -> (venue, actual time)
        self.taken: set[tuple[str, str]] = set()
        self.buckets: list[Bucket] = []
        self.venues: list[str] = []
        self.producer_down = False  # killed on purpose, to be started again at producer_back
        self.producer_back = 0.0
        self.hooks = AlertReceiver()  # the signed webhook's receiver
        self.json = AlertReceiver()  # Apprise json://'s
        self.hook_venues: set[str] = set()
        self.watch_ids: dict[str, str] = {}  # "hook" / "apprise" -> watch id

    # ------------------------------------------------------------------ stages
    def start_stages(self) -> None:
        p = self.pipeline
        p.start("simulator", "simulate")
        self.sim.wait_ready()
        self.start_api()
        p.start("processor", "process")
        p.start("producer", "produce")
        p.start("matcher", "match")
        p.start("delivery", "deliver")

    def start_api(self) -> None:
        self.pipeline.start("api", "api", "--with-sink")
        wait_for("the API", lambda: httpx.get(f"{self.api}/healthz").status_code == 200, 90)

    def revive(self) -> None:
        """Restart a stage that died by itself, as a supervisor would, and count it."""
        commands = COMMANDS
        for name in list(self.pipeline.procs):
            if self.pipeline.alive(name) or (name == "producer" and self.producer_down):
                continue
            log.warning("stage_crashed", stage=name, tail=self.pipeline.log_tail(name, 1500))
            self.report.crashes[name] += 1
            if name == "api":
                self.start_api()
            else:
                self.pipeline.start(name, *commands[name])

    def wait_baselines(self) -> None:
        want = self.cfg.days * len(self.s.producer.time_slots)

        # the processor has never seen these streams: each one's first snapshot (a poll) is
        # its baseline
        def ready() -> bool:
            self.revive()
            stats = read_topic(self.s, self.s.topics.stats, timeout=5)
            return len({r["bucket_id"] for r in stats}) >= want

        wait_for(f"a first fetch of {want} buckets", ready, timeout=180, every=1)

    # ------------------------------------------------------------------ actions
    def learn_market(self) -> None:
        tz = ZoneInfo(self.s.market.time_zone)
        every = window(
            self.s.clock().now(), self.s.market.name, tz, self.cfg.days, self.s.producer.time_slots
        )
        self.buckets = [b for b in every if b.date > every[0].date]  # not today: times pass
        self.venues = [str(v["id"]) for v in self.sim.venues("resy")]
        for b in self.buckets:
            for slot in self.sim.slots(str(b.date), b.time_slot):
                self.taken.add((str(slot["venue_id"]), slot["actual_time"]))

    def create_watches(self) -> None:
        """Through the API, as a user would: a webhook for half the venues (with closes) and
        an Apprise json:// channel for the whole market."""
        self.hook_venues = set(sorted(self.venues)[: len(self.venues) // 2])
        specs = {
            "hook": {
                "name": "half the venues",
                "criteria": {"venue_ids": sorted(self.hook_venues)},
                "channels": [{"type": "webhook", "url": self.hooks.url + "/hook"}],
                "closes": True,
            },
            "apprise": {
                "name": "the market",
                "criteria": {"markets": [self.s.market.name]},
                "channels": [{"type": "apprise", "url": "json" + self.json.url[4:] + "/apprise"}],
            },
        }
        for name, spec in specs.items():
            r = httpx.post(f"{self.api}/watches", json=spec, timeout=30)
            assert r.status_code == 201, r.text
            self.watch_ids[name] = r.json()["watch_id"]

    def open_one(self) -> None:
        for _ in range(50):
            bucket = self.rng.choice(self.buckets)
            lo, hi = bucket_window(bucket.time_slot, self.s.producer.time_slots)
            minute = self.rng.randrange(lo // 15, (hi - 1) // 15 + 1) * 15
            actual = f"{bucket.date} {minute // 60:02d}:{minute % 60:02d}:00"
            venue = self.rng.choice(self.venues)
            if (venue, actual) in self.taken:
                continue
            self.taken.add((venue, actual))
            sid = self.sim.open("resy", venue, actual)
            assert sid == slot_id("resy", venue, actual)
            self.opened[sid] = (venue, actual)
            self.report.opened_while_producer_down += int(self.producer_down)
            return

    def disrupt(self) -> None:
        what = self.rng.choice(DISRUPTIONS)
        log.info("disruption", what=what)
        pause = self.rng.uniform(0.5, 3.0)
        if what == "kill processor":
            self.pipeline.kill("processor")
            time.sleep(pause)
            self.pipeline.start("processor", "process")
        elif what == "kill api+sink":
            self.pipeline.kill("api")
            time.sleep(pause)
            self.start_api()
        elif what in ("kill matcher", "kill delivery"):
            self.kill_stage(what.split()[1], pause)
            return
        else:
            broker.stop(self.s)
            time.sleep(pause)
            broker.start(self.s)
        self.report.disruptions[what] += 1

    def kill_stage(self, name: str, pause: float) -> None:
        """kill -9 the matcher or the delivery worker, and start it again after ``pause``."""
        self.pipeline.kill(name)
        time.sleep(pause)
        self.pipeline.start(name, *COMMANDS[name])
        self.report.disruptions[f"kill {name}"] += 1
        self.report.delivery_kills += int(name == "delivery")

    def alert_kill_times(self, start: float) -> list[tuple[float, str]]:
        """Seeded moments of the storm's middle for the kills of the alert stages."""
        n = self.cfg.alert_kills
        if n < 0:
            n = max(1, int(self.cfg.seconds // 150))
        return sorted(
            (start + self.rng.uniform(0.2, 0.9) * self.cfg.seconds, name)
            for name in ("matcher", "delivery")
            for _ in range(n)
        )

    def kill_producer(self, now: float) -> None:
        """kill -9 the producer; it stays down (slots go on opening) until producer_back."""
        down = self.rng.uniform(*self.cfg.producer_down)
        log.info("disruption", what="kill producer", down_s=round(down, 1))
        self.pipeline.kill("producer")
        self.producer_down, self.producer_back = True, now + down
        self.report.disruptions["kill producer"] += 1

    def producer_kill_times(self, start: float) -> list[float]:
        """Seeded moments of the storm's first 70 % (each down time ends before it is over)."""
        n = self.cfg.producer_kills
        if n < 0:
            n = max(1, int(self.cfg.seconds // 150))
        room = max(0.0, self.cfg.seconds - self.cfg.producer_down[1])
        return sorted(start + self.rng.uniform(0.1, 0.7) * room for _ in range(n))

    def storm(self) -> None:
        share = self.cfg.fault_rate / len(FAULT_KINDS)
        for kind in FAULT_KINDS:
            extra: dict[str, Any] = {"delay_ms": 4000} if kind == "timeout" else {}
            self.sim.fault(kind, rate=share, **extra)
        deadline = time.monotonic() + self.cfg.seconds
        next_open = time.monotonic()
        next_disruption = time.monotonic() + self.rng.expovariate(1 / self.cfg.disrupt_every)
        producer_kills = self.producer_kill_times(time.monotonic())
        alert_kills = self.alert_kill_times(time.monotonic())
        last_beat = time.monotonic()
        while (now := time.monotonic()) < deadline:
            if self.producer_down and now >= self.producer_back:
                self.pipeline.start("producer", "produce")
                self.producer_down = False
            elif not self.producer_down and producer_kills and now >= producer_kills[0]:
                producer_kills.pop(0)
                self.kill_producer(now)
            if alert_kills and now >= alert_kills[0][0]:
                name = alert_kills.pop(0)[1]
                log.info("disruption", what=f"kill {name}", scheduled=True)
                self.kill_stage(name, self.rng.uniform(0.5, 3.0))
            self.revive()
            if now >= next_open:
                self.open_one()
                next_open = now + self.rng.expovariate(1 / self.cfg.open_every)
            if now >= next_disruption:
                self.disrupt()
                next_disruption = time.monotonic() + self.rng.expovariate(
                    1 / self.cfg.disrupt_every
                )
            if now - last_beat >= 15:
                log.info(
                    "chaos_progress",
                    opened=len(self.opened),
                    left_s=round(deadline - now),
                    disruptions=sum(self.report.disruptions.values()),
                )
                last_beat = now
            time.sleep(0.1)
        # Scheduled kills the storm's end overtook (a broker restart can take longer than the
        # time left) are still made: the run promises each of them.
        if producer_kills and not self.producer_down:
            self.kill_producer(time.monotonic())
            time.sleep(max(0.0, self.producer_back - time.monotonic()))
        for _, name in alert_kills:
            log.info("disruption", what=f"kill {name}", scheduled=True, late=True)
            self.kill_stage(name, self.rng.uniform(0.5, 3.0))
        if self.producer_down:  # (a down time that outlasted the storm)
            self.pipeline.start("producer", "produce")
            self.producer_down = False
        self.report.faults_applied = sum(int(f.get("applied", 0)) for f in self.sim.faults())
        self.sim.clear_faults()

    # ------------------------------------------------------------------ verdict
    def settle(self, kind: str, expected: set[str]) -> list[dict[str, Any]]:
        def served() -> list[dict[str, Any]] | None:
            self.revive()
            items = [i for i in feed_items(self.api) if i["event"] == kind]
            return items if {i["slot_id"] for i in items} >= expected else None

        try:
            return wait_for(f"every {kind}", served, timeout=self.cfg.settle_timeout, every=2)
        except AssertionError:
            return [i for i in feed_items(self.api) if i["event"] == kind]

    def verdict(self) -> None:
        r = self.report
        expected = set(self.opened)
        opens = self.settle("open", expected)
        time.sleep(3 * self.cfg.poll_interval)  # more clean polls: nothing else may appear
        opens = [i for i in feed_items(self.api) if i["event"] == "open"]
        counts = Counter(i["slot_id"] for i in opens)
        r.opens_expected, r.opens_served = len(expected), len(counts)
        r.missing = len(expected - set(counts))
        r.duplicated = sum(n - 1 for n in counts.values() if n > 1)
        r.false = len(set(counts) - expected)

        to_close = sorted(expected)[: int(len(expected) * self.cfg.close_share)]
        for sid in to_close:
            venue, actual = self.opened[sid]
            self.sim.close("resy", venue, actual)
        closes = self.settle("close", set(to_close))
        close_counts = Counter(i["slot_id"] for i in closes)
        r.closes_expected, r.closes_served = len(to_close), len(close_counts)
        r.closes_missing = len(set(to_close) - set(close_counts))
        r.closes_duplicated = sum(n - 1 for n in close_counts.values() if n > 1)
        r.closes_false = len(set(close_counts) - set(to_close))
        records = read_topic(self.s, self.s.topics.drops)
        on_topic = Counter(rec["dedupe_key"] for rec in records)
        r.topic_duplicates = sum(n - 1 for n in on_topic.values() if n > 1)
        self.verdict_alerts(records, set(to_close))

    def verdict_alerts(self, records: list[dict[str, Any]], closed: set[str]) -> None:
        """Every expected (watch, drop) alert accepted by its receiver, none else."""
        r = self.report
        expected: set[str] = set()
        for rec in records:
            sid, kind = rec["slot_id"], rec["event"]
            if sid not in self.opened or (kind == "close" and sid not in closed):
                continue  # a false drop or close: no alert may come of it
            if kind == "open":
                expected.add(alert_id(self.watch_ids["apprise"], rec["dedupe_key"]))
            if rec["venue_id"] in self.hook_venues:
                expected.add(alert_id(self.watch_ids["hook"], rec["dedupe_key"]))

        def accepted() -> list[str]:
            self.revive()
            return [x["key"] for x in self.hooks.accepted("/hook")] + [
                x["key"] for x in self.json.accepted("/apprise")
            ]

        with contextlib.suppress(AssertionError):  # what is missing is counted below
            wait_for(
                "every alert",
                lambda: set(accepted()) >= expected or None,
                timeout=self.cfg.settle_timeout,
                every=2,
            )
        time.sleep(3)  # nothing else may come
        counts = Counter(accepted())
        r.alerts_expected = len(expected)
        r.alerts_accepted = len(expected & set(counts))
        r.alerts_missing = len(expected - set(counts))
        r.alerts_false = len(set(counts) - expected)
        r.alerts_repeated = sum(n - 1 for n in counts.values() if n > 1)
        r.alert_send_retries = sum(
            1 for recv in (self.hooks, self.json) for q in recv.requests if q["code"] == 503
        )


def run(cfg: Config, data_dir: Path, bootstrap: str, controller_port: int) -> Report:
    shutil.rmtree(data_dir, ignore_errors=True)
    settings = chaos_settings(data_dir, cfg, bootstrap, controller_port)
    broker.start(settings)
    broker.ensure_topics(settings)
    chaos = Chaos(settings, cfg, data_dir / "logs")
    started = time.monotonic()
    try:
        chaos.start_stages()
        chaos.wait_baselines()
        chaos.learn_market()
        chaos.create_watches()
        log.info("chaos_storm", seconds=cfg.seconds, seed=cfg.seed, fault_rate=cfg.fault_rate)
        chaos.storm()
        log.info("chaos_settle", opened=len(chaos.opened))
        chaos.verdict()
    finally:
        chaos.pipeline.stop_all()
        chaos.hooks.close()
        chaos.json.close()
        broker.stop(settings)
        chaos.report.seconds = time.monotonic() - started
    return chaos.report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="drops chaos", description=(__doc__ or "").replace("``", "`"))
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the storm")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fault-rate", type=float, default=Config.fault_rate)
    ap.add_argument("--disrupt-every", type=float, default=Config.disrupt_every)
    ap.add_argument(
        "--producer-kills",
        type=int,
        default=Config.producer_kills,
        help="kill -9s of the producer, each down 15-40 s (default: one per 150 s of storm)",
    )
    ap.add_argument(
        "--alert-kills",
        type=int,
        default=Config.alert_kills,
        help="kill -9s each of the matcher and the delivery worker at seeded moments "
        "(default: one per 150 s of storm), besides those drawn among the disruptions",
    )
    ap.add_argument("--data-dir", type=Path, default=Path(".drops/chaos"))
    ap.add_argument("--bootstrap", default="127.0.0.1:19492")
    ap.add_argument("--controller-port", type=int, default=19493)
    args = ap.parse_args(argv)
    cfg = Config(
        seconds=args.minutes * 60,
        seed=args.seed,
        fault_rate=args.fault_rate,
        disrupt_every=args.disrupt_every,
        producer_kills=args.producer_kills,
        alert_kills=args.alert_kills,
    )
    report = run(cfg, args.data_dir.resolve(), args.bootstrap, args.controller_port)
    print("\n".join(report.lines()))
    print(orjson.dumps({"chaos": {**vars(report), "ok": report.ok}}, default=dict).decode())
    return 0 if report.ok else 1
