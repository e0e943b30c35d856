"""The processor harness of the integration tests and the benchmark: write snapshots, run the
processor as a child process, read the drops topic (read_committed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Producer, TopicPartition

from bench.pipeline import settings_env
from drops import kafka
from drops.settings import Settings
from schemas import DropEvent, Snapshot, decode_drop, encode

ROOT = Path(__file__).resolve().parents[1]

# (event, bucket, slot, opened_at, closed_at, opened_after)
Event = tuple[str, str, str, int, int | None, int | None]


def producer(settings: Settings) -> Producer:
    return kafka.producer(
        settings,
        {
            "partitioner": "murmur2_random",  # the same as Quix's producers
            "enable.idempotence": True,
            "message.max.bytes": settings.kafka.max_message_bytes,
            "linger.ms": 5,
        },
    )


def write(
    settings: Settings,
    records: Iterable[Snapshot | tuple[bytes | None, bytes]],
    p: Producer | None = None,
) -> int:
    p = p or producer(settings)
    n = 0
    for rec in records:
        if isinstance(rec, Snapshot):
            p.produce(settings.topics.snapshots, key=rec.key.encode(), value=encode(rec))
        else:
            p.produce(settings.topics.snapshots, key=rec[0], value=rec[1])
        n += 1
        p.poll(0)
    assert p.flush(30) == 0
    return n


class ProcessorProc:
    """``python -m processors`` as a child process."""

    def __init__(self, settings: Settings, log_path: Path, **env: str) -> None:
        self.log_path = log_path
        self.started = 1  # "processor_started" lines expected in the log once this one runs
        self.out = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "processors"],
            cwd=ROOT,
            env=settings_env(settings, **env),
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.out.close()

    def stop(self, timeout: float = 60) -> int:
        # a graceful stop commits the last transaction and leaves the group; with a
        # rebalance under way on a loaded machine it has taken more than 30 s
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self.out.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    c = kafka.consumer(settings, {"group.id": "probe"})
    meta = c.list_topics(topic, timeout=10)
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in
            meta.topics[topic].partitions}  # fmt: skip
    c.close()
    return ends


def committed(settings: Settings) -> dict[int, int]:
    c = kafka.consumer(settings, {"group.id": settings.processor.group})
    parts = c.list_topics(settings.topics.snapshots, timeout=10).topics[settings.topics.snapshots]
    tps = [TopicPartition(settings.topics.snapshots, p) for p in parts.partitions]
    done = {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
    c.close()
    return done


def wait_processed(settings: Settings, proc: ProcessorProc | None, deadline_s: float) -> None:
    """Until the processor's committed offsets reach the end of the snapshot topic."""
    ends = end_offsets(settings, settings.topics.snapshots)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        done = committed(settings)
        if all(done.get(p, -1) >= end for p, end in ends.items() if end > 0):
            return
        if proc is not None and not proc.alive():
            raise AssertionError(f"the processor exited:\n{proc.log()[-4000:]}")
        time.sleep(0.2)
    log = proc.log()[-4000:] if proc else ""
    raise AssertionError(f"not processed in {deadline_s}s: {committed(settings)} < {ends}\n{log}")


def read_all(
    settings: Settings, topic: str, timeout: float = 30.0
) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    """Every committed record of ``topic`` (read_committed), to the end."""
    c = kafka.consumer(
        settings,
        {
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        },
    )
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    at_end: set[int] = set()
    out: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
    deadline = time.monotonic() + timeout
    while len(at_end) < len(parts) and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
                continue
            raise AssertionError(str(err))
        at_end.discard(msg.partition())
        out.append((msg.key(), msg.value(), list(msg.headers() or [])))
    c.close()
    assert len(at_end) == len(parts), f"did not reach the end of {topic}"
    return out


def drops(settings: Settings) -> list[DropEvent]:
    return [decode_drop(v) for _, v, _ in read_all(settings, settings.topics.drops)]


def as_events(records: Iterable[DropEvent]) -> list[Event]:
    return sorted(
        (d.event, d.bucket_id, d.slot_id, d.opened_at_ms, d.closed_at_ms, d.opened_after_ms)
        for d in records
    )


def headers_dict(headers: list[tuple[str, Any]]) -> dict[str, bytes]:
    return {k: v for k, v in headers}
