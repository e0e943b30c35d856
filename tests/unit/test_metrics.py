"""Metrics follow Prometheus' conventions: a running total is a counter (and only a counter
has the ``_total`` suffix), one thing is counted once, a sink's totals go on across its
restarts, every registry carries build info, and the producer counts its cycles."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.app import State, _gauges
from drops.metrics import registry, version
from producers.metrics import ProducerMetrics
from producers.service import ProducerService
from sinks.service import Sink, SinkThread
from store.clickhouse import ClickHouse
from tests.conftest import base_settings
from tests.unit.test_producer_service import OneSlotProvider, Recording

NO_BROKER = "127.0.0.1:9"  # nothing listens: the Kafka clients are built but never used


def families(text: str | bytes) -> dict[str, Any]:
    raw = text.decode() if isinstance(text, bytes) else text
    return {f.name: f for f in text_string_to_metric_families(raw)}


def api_metrics_text(tmp_path: Path) -> str | bytes:
    settings = base_settings(kafka_bootstrap=NO_BROKER)
    st = State(settings)
    st.hub = SimpleNamespace(  # type: ignore[assignment]
        clients={1: None}, events_in=7, ring=[1, 2], dropped_clients=2, cut_clients=1
    )
    st.sink = SinkThread(settings, ClickHouse(f"chdb://{tmp_path / 'ch'}"))
    st.sink.sink.totals.drops = 5
    _gauges(st)
    text: str | bytes = st.metrics.render()
    return text


def test_running_totals_are_counters_and_only_counters_end_in_total(tmp_path: Path) -> None:
    fams = families(api_metrics_text(tmp_path))
    samples = {s.name: (f.type, s.value) for f in fams.values() for s in f.samples}
    totals = {name: t for name, (t, _) in samples.items() if name.endswith("_total")}
    assert {
        "drops_live_events_total",
        "drops_sse_dropped_clients_total",
        "drops_sse_cut_clients_total",
        "drops_sink_rows_total",
        "drops_sink_skipped_total",
        "drops_sink_deadletters_total",
        "drops_sink_restarts_total",
    } <= set(totals)
    assert {name: t for name, t in totals.items() if t != "counter"} == {}
    assert samples["drops_live_events_total"][1] == 7
    assert samples["drops_sink_rows_total"][1] == 5
    assert samples["drops_sse_clients"][0] == "gauge"
    assert samples["drops_sink_paused"][0] == "gauge"


def test_a_dropped_sse_client_is_counted_once() -> None:
    """The hub counts a slow client it drops; the stream does not count it a second time."""
    source = (Path(__file__).resolve().parents[2] / "api" / "app.py").read_text()
    assert "drops_sse_dropped_total" not in source


def test_every_registry_has_build_info() -> None:
    fams = families(generate_latest(registry("producer")))
    (sample,) = fams["drops_build_info"].samples
    assert sample.name == "drops_build_info" and sample.value == 1
    assert sample.labels["version"] == version() and sample.labels["process"] == "producer"


def test_sink_totals_go_on_when_the_sink_thread_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    restarted = threading.Event()

    def run(self: Sink) -> None:
        self.totals.drops += 5
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("Commit failed: Unknown member")
        restarted.set()
        self.stop.wait(30)

    monkeypatch.setattr(Sink, "run", run)
    thread = SinkThread(base_settings(kafka_bootstrap=NO_BROKER), ClickHouse("chdb://unused"))
    thread.start()
    try:
        assert restarted.wait(10), "the sink was not restarted"
        assert thread.restarts == 1
        assert thread.sink.totals.drops == 10
    finally:
        thread.close(5)


def test_the_producer_counts_each_cycle() -> None:
    settings = base_settings(providers="resy")
    reg = registry("producer")
    service = ProducerService(settings, {"resy": OneSlotProvider()}, Recording())
    service.metrics = ProducerMetrics(reg)
    ny = ZoneInfo("America/New_York")
    asyncio.run(service.run_once(datetime(2026, 3, 2, 12, tzinfo=ny)))
    service.report = asyncio.run(service.run_once(datetime(2026, 3, 2, 12, 1, tzinfo=ny)))
    service.heartbeat(time.monotonic())
    fams = families(generate_latest(reg))
    value = {s.name: s.value for f in fams.values() for s in f.samples if s.labels.get("market")}
    assert value["drops_producer_fetches_finished_total"] >= 1
    assert fams["drops_producer_fetches_finished"].type == "counter"
