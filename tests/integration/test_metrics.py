"""The producer, the processor and a standalone sink serve Prometheus metrics on a port of
their own, with build info, running totals as counters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.pipeline import free_port, settings_env, wait_for
from bench.processor_harness import ROOT, ProcessorProc, wait_processed, write
from drops.settings import Settings
from tests.unit.test_rule import UNIVERSE, snapshot

pytestmark = pytest.mark.kafka


def scrape(port: int) -> dict[str, Any]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], family: str, sample: str) -> float:
    return float(sum(s.value for s in fams[family].samples if s.name == sample))


def check_conventions(fams: dict[str, Any], process: str) -> None:
    (info,) = fams["drops_build_info"].samples
    assert info.labels["process"] == process and info.labels["version"]
    wrong = {
        s.name: f.type
        for f in fams.values()
        for s in f.samples
        if s.name.endswith("_total") and f.type != "counter"
    }
    assert wrong == {}


def test_processor_serves_metrics(kafka_settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    slots = [UNIVERSE[k] for k in sorted(UNIVERSE)]
    write(
        kafka_settings,
        [snapshot("m0", 1_000, slots[:3], kind="baseline"), snapshot("m1", 31_000, slots[:5])],
    )
    proc = ProcessorProc(
        kafka_settings, tmp_path / "processor.log", DROPS_PROCESSOR_METRICS_PORT=str(port)
    )
    try:
        wait_processed(kafka_settings, proc, 90)
        fams = wait_for(
            "processor counts",
            lambda: (
                (f := scrape(port))
                and value(f, "drops_processor_snapshots", "drops_processor_snapshots_total") >= 2
                and f
            ),
        )
        check_conventions(fams, "processor")
        assert value(fams, "drops_processor_drops", "drops_processor_drops_total") == 2
    finally:
        proc.stop()


def _child(settings: Settings, log: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shell.cli", *args],
        cwd=ROOT,
        env=settings_env(settings, **env),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def test_standalone_sink_serves_metrics(kafka_settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    proc = _child(kafka_settings, tmp_path / "sink.log", "sink", DROPS_SINK_METRICS_PORT=str(port))
    try:
        fams = wait_for("sink metrics", lambda: scrape(port), timeout=90)
        check_conventions(fams, "sink")
        assert fams["drops_sink_rows"].type == "counter"
        assert fams["drops_sink_paused"].type == "gauge"
    finally:
        _stop(proc)


def test_producer_serves_metrics(kafka_settings: Settings, tmp_path: Path) -> None:
    """Against a provider that refuses every connection: the fetches fail (and are counted)."""
    port = free_port()
    settings = kafka_settings.model_copy(
        update={"resy_url": "http://127.0.0.1:9", "poll_interval": 1.0, "days": 1, "max_retries": 0}
    )
    proc = _child(
        settings, tmp_path / "producer.log", "produce", DROPS_PRODUCER_METRICS_PORT=str(port)
    )
    try:
        fams = wait_for(
            "producer cycle counts",
            lambda: (
                (f := scrape(port))
                and "drops_producer_fetches_started" in f
                and value(
                    f, "drops_producer_fetches_started", "drops_producer_fetches_started_total"
                )
                and f
            ),
            timeout=90,
        )
        check_conventions(fams, "producer")
    finally:
        _stop(proc)


def test_processor_log_is_json_lines_including_quix_streams(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """Quix Streams' own log lines come out as JSON like ours (its handler is not installed)."""
    slots = [UNIVERSE[k] for k in sorted(UNIVERSE)]
    write(kafka_settings, [snapshot("j0", 1_000, slots[:3], kind="baseline")])
    log_path = tmp_path / "processor.log"
    proc = ProcessorProc(kafka_settings, log_path, DROPS_LOG_FORMAT="json")
    try:
        wait_processed(kafka_settings, proc, 90)
    finally:
        proc.stop()
    lines = [ln for ln in log_path.read_text().splitlines() if ln.strip()]
    docs = []
    for ln in lines:
        try:
            docs.append(orjson.loads(ln))
        except orjson.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {ln!r}") from None
    loggers = {d["logger"] for d in docs}
    assert any(name.startswith("quixstreams") for name in loggers), loggers
    assert "drops.processor" in loggers
