"""``drops up``: the whole pipeline on this machine, as child processes, until Ctrl-C.

Start order: broker (and topics), simulator, API (with the sink in-process when ClickHouse is
the embedded engine, which one process must own), processor, producer. A stage that crashes is
restarted with a back-off, a few times. Ctrl-C or SIGTERM stops them in reverse order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from drops import topics
from drops.errors import DropsError
from drops.log import get_log
from drops.runtime import Backoff
from drops.settings import Settings
from shell import broker

log = get_log("up")


@dataclass
class Child:
    name: str
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(2.0, 30.0, calm=300.0))
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "shell.cli", *self.args]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        self.started_at = time.monotonic()
        log.info("stage_started", stage=self.name, pid=self.proc.pid)


def stages(settings: Settings) -> list[Child]:
    children = [Child("simulator", ["simulate"])] if settings.up.simulator else []
    if settings.uses_chdb:
        children.append(Child("api+sink", ["api", "--with-sink"]))
    else:
        children += [Child("sink", ["sink"]), Child("api", ["api"])]
    children += [
        Child("processor", ["process"]),
        Child("matcher", ["match"]),
        Child("delivery", ["deliver"]),
        Child("producer", ["produce"]),
    ]
    return children


def child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["DROPS_UP__SIMULATOR"] = "true" if settings.up.simulator else "false"
    env.pop("DROPS_UP_SIMULATOR", None)  # the old name would warn in every stage
    if settings.up.simulator and not ({"DROPS_POLL_INTERVAL", "DROPS_PRODUCER__POLL_INTERVAL"}
                                      & set(env)):  # fmt: skip
        # the demo polls its simulator fast; real providers keep theirs
        env["DROPS_PRODUCER__POLL_INTERVAL"] = str(settings.up.poll_interval)
    env.setdefault("DROPS_DATA_DIR", str(settings.data_dir.resolve()))
    if "DROPS_LOG_FORMAT" not in env:  # (the old name, if the user gave it)
        env.setdefault("DROPS_LOG__FORMAT", settings.log.format)
    if settings.clock_.start:  # every stage (and each restart of one) reads the same clock
        for old in ("DROPS_CLOCK_START", "DROPS_CLOCK_ANCHOR"):
            env.pop(old, None)
        env["DROPS_CLOCK__START"] = settings.clock_.start
        env["DROPS_CLOCK__ANCHOR"] = repr(settings.clock_.anchor)
    env.setdefault("DROPS_TOPICS__CREATE", "true" if settings.topics.create else "false")
    env.setdefault("DROPS_TOPICS__REPLICATION_FACTOR", str(settings.topics.replication_factor))
    env.setdefault("DROPS_TOPICS__MIN_INSYNC_REPLICAS", str(settings.topics.min_insync_replicas))
    return env


class _Stop(DropsError):
    pass


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def up(settings: Settings) -> int:
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    children: list[Child] = []
    started_broker = False
    try:
        started_broker = not broker.is_ready(settings, timeout=1.0)
        if broker.start(settings):  # ours, single node: the stages create replication-1 topics
            settings = broker.local_settings(settings)
        for drift in topics.ensure_topics(settings):
            log.warning("topic_drift", topic=drift.topic, what=drift.what, wanted=drift.wanted,
                        found=drift.found)  # fmt: skip
        env = child_env(settings)
        children = stages(settings)
        for child in children:
            child.start(env)
        url = f"http://{settings.api.host}:{settings.api.port}/"
        print(
            f"\n  Discovery Drops is up: open {url}  (feed: {url}feed, Ctrl-C stops)\n", flush=True
        )
        log.info("up", page=url, stages=[c.name for c in children])
        _watch(children, env, settings)
    except _Stop as stop:
        log.info("stopping", signal=str(stop))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_all(children)
        if started_broker:
            broker.stop(settings)
    return 0


def _watch(children: list[Child], env: dict[str, str], settings: Settings) -> None:
    while True:
        now = time.monotonic()
        for child in children:
            if child.proc is None:
                if now >= child.next_start:
                    child.start(env)
                continue
            code = child.proc.poll()
            if code is None:
                continue
            child.proc = None
            if child.restarts >= settings.up.restarts:
                raise RuntimeError(f"stage {child.name} keeps crashing (exit {code})")
            ran = now - child.started_at
            if ran > 300:
                child.restarts = 0  # it ran a while: a fresh failure, not a crash loop
            child.restarts += 1
            delay = child.backoff.next(ran)
            child.next_start = now + delay
            log.warning("stage_exited", stage=child.name, code=code, restart_in_s=delay)
        time.sleep(0.5)


def _stop_all(children: list[Child], wait: float = 20.0) -> None:
    for child in reversed(children):
        if child.proc is not None and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + wait
    for child in reversed(children):
        if child.proc is None:
            continue
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("stage_killed", stage=child.name)
            child.proc.kill()
            child.proc.wait()
        log.info("stage_stopped", stage=child.name, code=child.proc.returncode)
