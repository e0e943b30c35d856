"""The pipeline's stages as real subprocesses (the ``drops`` command), with their settings
passed as ``DROPS_*`` env vars, and readers of what they serve (topics, the feed, SSE).

Used by the end-to-end tests and by ``drops chaos``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from pydantic import SecretStr

from drops import kafka
from drops.settings import FLAT, Settings, env_name, leaves

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a child process that reads exactly ``settings`` (secrets included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPS_")}
    for path, value in leaves(settings):
        if value is None or path == "markets":  # the markets follow from the rest
            continue
        from_file = path.startswith(("producer.", "providers.")) and not path.endswith("api_key")
        if settings.config is not None and from_file:
            continue  # the child reads them from the file (explicit ones would beat it)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple):
            text = json.dumps(list(value))
        else:
            text = str(value)
        env[env_name(path)] = text
    for key, value in extra.items():  # an old name (DROPS_API_PORT) as its new one: the
        flat = key[len("DROPS_") :].lower() if key.startswith("DROPS_") else ""  # new wins
        env[env_name(FLAT[flat]) if flat in FLAT else key] = value
    return env


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 60.0, every: float = 0.3) -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # the thing is not up yet
            last_error = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} ({last_error!r})")


class Pipeline:
    """The stages as child processes; logs go to ``<logs>/<stage>.log``."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "shell.cli", *args],
            env=settings_env(self.settings, **(env or {})),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self, name: str, timeout: float = 30.0) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            tails = "\n".join(f"--- {n}\n{self.log_tail(n)}" for n in dead)
            raise AssertionError(f"stages exited: {dead}\n{tails}")


def read_topic(settings: Settings, topic: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Every committed record of ``topic`` up to its end when called, decoded as JSON."""
    consumer = kafka.consumer(
        settings,
        {
            "group.id": f"test-reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        },
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {}
        for p in partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        pending = {p for p, high in ends.items() if high > 0}
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                records.append(orjson.loads(msg.value()))
            for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
        return records
    finally:
        consumer.close()


def sse_events(
    url: str,
    headers: dict[str, str] | None = None,
    until: Callable[[list[dict[str, Any]]], bool] | None = None,
    timeout: float = 30.0,
) -> Iterator[dict[str, Any]]:
    """Parse an SSE stream into ``{"id", "event", "data"}`` dicts until ``until(events)``."""
    seen: list[dict[str, Any]] = []
    with httpx.stream("GET", url, headers=headers or {}, timeout=timeout) as resp:
        resp.raise_for_status()
        event: dict[str, Any] = {}
        for line in resp.iter_lines():
            if line == "":
                if "data" in event:
                    seen.append(event)
                    yield event
                    if until is not None and until(seen):
                        return
                event = {}
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    event["data"] = (event.get("data", "") + "\n" + value).lstrip("\n")
                elif name in ("id", "event", "retry"):
                    event[name] = value


BEGINNING = "AQA"  # the feed cursor before the first record of the drops log


def feed_items(api: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of ``/feed`` from the beginning, page by page."""
    items: list[dict[str, Any]] = []
    since = BEGINNING
    while True:
        resp = httpx.get(f"{api}/feed", params={"since": since, "limit": 500, **params}, timeout=30)
        resp.raise_for_status()
        body = resp.json()
        items += body["items"]
        if not body["items"]:
            return items
        since = body["next"]
