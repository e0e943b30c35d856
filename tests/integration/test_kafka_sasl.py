"""The whole pipeline through a SASL listener: the local broker started with
SASL_PLAINTEXT and one SCRAM-SHA-256 account (no plain listener for clients), and every stage a
real ``drops`` subprocess with the credentials as ``DROPS_KAFKA_*`` settings: simulator →
producer → processor (Quix) → sink and API (feed, live SSE tail, watches) → matcher (Quix) →
delivery to a webhook. Every client the stages make must carry the security settings, or it
never gets an answer. A client with a wrong password, or none, is refused within seconds with
an error that names the setting."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
from pydantic import SecretStr

from bench.pipeline import Pipeline, feed_items, free_port, read_topic, settings_env, wait_for
from domain.calendar import window
from drops import kafka
from drops.settings import Settings
from schemas import slot_id
from shell import broker
from simulator.control import SimControl
from tests.conftest import isolated_settings
from tests.integration.test_delivery import Receiver
from tests.integration.test_end_to_end import free_time, wait_first_fetches

# Not marked ``clock``: its use of the clock (a bucket of the window, a free time in it) is
# test_end_to_end's, which ``make test-clock`` runs at every chosen instant; this test checks
# the security path, so it runs once, at the test's instant.
pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SASL_BOOTSTRAP = os.environ.get("DROPS_TEST_KAFKA_SASL_BOOTSTRAP", "127.0.0.1:19196")
SASL_CONTROLLER_PORT = int(os.environ.get("DROPS_TEST_KAFKA_SASL_CONTROLLER_PORT", "19197"))
PASSWORD = "s3cret-of-the-drops-app"
NO_METRICS = {f"DROPS_{k}_METRICS_PORT": "0" for k in ("PRODUCER", "PROCESSOR", "SINK")}


@pytest.fixture(scope="module")
def sasl_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A broker of this module's own whose only client listener is SASL_PLAINTEXT."""
    root = tmp_path_factory.mktemp("sasl")
    s = isolated_settings(
        root,
        "sasl",
        data_dir=root / "data",
        kafka_bootstrap=SASL_BOOTSTRAP,
        kafka_controller_port=SASL_CONTROLLER_PORT,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="drops-app",
        kafka_sasl_password=PASSWORD,
        snapshot_partitions=2,
    )
    broker.start(s, wait=120)
    try:
        broker.ensure_topics(s)
        yield s
    finally:
        broker.stop(s)


def drops_command(s: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shell.cli", *args],
        env=settings_env(s, DROPS_LOG__FORMAT="json", **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_whole_pipeline_runs_through_sasl(sasl_settings: Settings, tmp_path: Path) -> None:
    sim_port, api_port = free_port(), free_port()
    s = sasl_settings.model_copy(
        update={
            "sim_port": sim_port,
            "sim_scripted": True,
            "sim_venues": 40,
            "resy_url": f"http://127.0.0.1:{sim_port}",
            "api_port": api_port,
            "poll_interval": 1.0,
            "commit_interval": 0.5,
            "matcher_commit_interval": 0.25,
            "max_retries": 1,
            "delivery_rate": 1000.0,
            "log_format": "json",
            "producer_metrics_port": 0,
            "processor_metrics_port": 0,
            "matcher_metrics_port": 0,
            "delivery_metrics_port": 0,
        }
    )
    api = f"http://127.0.0.1:{api_port}"
    receiver = Receiver()
    pipeline = Pipeline(s, tmp_path / "logs")
    try:
        pipeline.start("simulator", "simulate")
        sim = SimControl(f"http://127.0.0.1:{sim_port}")
        sim.wait_ready()
        pipeline.start("api", "api", "--with-sink")
        wait_for("the API", lambda: httpx.get(f"{api}/healthz").status_code == 200)
        venue = int(sim.venues("resy")[0]["id"])
        watch: dict[str, Any] = {
            "name": "through SASL",
            "criteria": {"venue_ids": [str(venue)]},
            "channels": [{"type": "webhook", "url": f"{receiver.url}/hook"}],
        }
        created = httpx.post(f"{api}/watches", json=watch, timeout=30)
        assert created.status_code == 201, created.text
        pipeline.start("processor", "process")
        pipeline.start("matcher", "match")
        pipeline.start("delivery", "deliver")
        pipeline.start("producer", "produce")
        wait_first_fetches(pipeline, s)

        b = window(s.clock().now(), s.market.name, ZoneInfo(s.market.time_zone))[3]
        actual = free_time(sim, str(b.date), b.time_slot, venue, ["14:10", "14:25", "14:40"])
        with httpx.stream("GET", f"{api}/feed/stream", timeout=60) as live:
            sim.open("resy", venue, actual)
            expected = slot_id("resy", str(venue), actual)
            lines = live.iter_lines()
            event = next(ln for ln in lines if ln.startswith("data:") and expected in ln)
        assert orjson.loads(event[5:])["slot_id"] == expected  # the live tail, through SASL

        def in_feed() -> list[dict[str, Any]] | None:
            pipeline.check_alive()
            items = feed_items(api)
            return items or None

        items = wait_for("the drop in /feed", in_feed, timeout=90, every=1)
        assert [i["slot_id"] for i in items] == [expected]
        sent = wait_for("the alert at the webhook", lambda: receiver.got("/hook"), timeout=60)
        assert orjson.loads(sent[0]["body"])["drop"]["slot_id"] == expected
        alerts = read_topic(s, s.topics.alerts)
        assert [a["drop"]["slot_id"] for a in alerts] == [expected]
        pipeline.check_alive()
    finally:
        pipeline.stop_all()
        receiver.close()
    for stage in pipeline.procs:
        assert PASSWORD not in pipeline.log_tail(stage, 10**7), f"{stage} logged the password"


def test_a_wrong_password_is_refused_at_once_naming_the_setting(sasl_settings: Settings) -> None:
    wrong = sasl_settings.model_copy(update={"kafka_sasl_password": SecretStr("not-it")})
    started = time.monotonic()
    with pytest.raises(kafka.KafkaAccessError, match="DROPS_KAFKA__SASL_PASSWORD") as err:
        kafka.check_access(wrong)
    assert err.value.refused
    assert time.monotonic() - started < 15
    assert "not-it" not in str(err.value)

    for args in (("broker", "topics"), ("process",), ("produce",), ("sink",)):
        started = time.monotonic()
        out = drops_command(wrong, *args, **NO_METRICS)
        assert out.returncode != 0, args
        assert "DROPS_KAFKA__SASL_PASSWORD" in out.stderr, (args, out.stderr[-2000:])
        assert "invalid credentials" in out.stderr, args
        assert time.monotonic() - started < 45, args


def test_a_client_without_sasl_is_told_to_check_the_protocol(sasl_settings: Settings) -> None:
    plain = sasl_settings.model_copy(
        update={"kafka_security_protocol": "PLAINTEXT", "kafka_sasl_username": ""}
    )
    with pytest.raises(kafka.KafkaAccessError, match="DROPS_KAFKA__SECURITY_PROTOCOL") as err:
        kafka.check_access(plain, timeout=8)
    assert not err.value.refused
    out = drops_command(plain, "broker", "topics")
    assert out.returncode == 2
    assert "DROPS_KAFKA__SECURITY_PROTOCOL" in out.stderr
