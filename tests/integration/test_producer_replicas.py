"""Two `drops produce` replicas on the real broker: the group splits the streams, no stream is
polled by both, and a kill -9 of one moves its streams to the other within two poll
intervals."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import pytest

from bench.pipeline import free_port
from bench.replicas_bench import held, polls, produce
from drops.settings import Settings
from producers.core import stream_part
from simulator.control import serve
from simulator.market import Market
from simulator.server import create_app

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 8.0


def test_two_producers_split_streams_and_fail_over(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    settings = kafka_settings.model_copy(
        update={
            "resy_url": f"http://127.0.0.1:{port}",
            "days": 6,  # 12 streams
            "poll_interval": INTERVAL,
            "request_timeout": 5.0,
        }
    )
    app = create_app(
        Market(seed=5, venues=30), api_key=settings.providers.resy.api_key.get_secret_value()
    )
    with serve(app, port=port):
        logs = [tmp_path / "p0.log", tmp_path / "p1.log"]
        procs = [produce(settings, logs[0]), produce(settings, logs[1])]
        try:
            deadline = time.monotonic() + 60
            while True:
                h = [held(p) for p in logs]
                if all(h) and len(h[0] | h[1]) == settings.topics.producers_partitions:  # type: ignore[operator]
                    break
                assert all(p.poll() is None for p in procs), logs[0].read_text()[-2000:]
                assert time.monotonic() < deadline, h
                time.sleep(0.3)
            time.sleep(3 * INTERVAL)  # a few cycles of both
            h0, h1 = held(logs[0]), held(logs[1])
            assert h0 and h1 and not h0 & h1
            keys = set(polls(settings))
            assert len(keys) == 12
            moved = {k for k in keys if stream_part(k, settings.topics.producers_partitions) in h0}
            assert moved and moved != keys  # both replicas poll some streams
            killed_ms = int(time.time() * 1000)
            os.kill(procs[0].pid, signal.SIGKILL)
            procs[0].wait(10)
            time.sleep(2 * INTERVAL + 2)
            assert procs[1].poll() is None
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    p.wait(30)
    seen = polls(settings)
    # every moved stream was polled again within two poll intervals of the kill
    late = {k: [t - killed_ms for t in seen[k] if t > killed_ms][:1] for k in moved}
    assert all(v and v[0] <= 2 * INTERVAL * 1000 for v in late.values()), late
    # no stream polled by two live replicas: polls of a stream stay an interval apart, but
    # for the one early poll a move causes (the second replica's join, the kill)
    gap = INTERVAL * 500
    short = {k: sum(b - a < gap for a, b in itertools.pairwise(v)) for k, v in seen.items()}
    assert all(n <= 2 for n in short.values()), short
    assert max(len(v) for v in seen.values()) >= 5
