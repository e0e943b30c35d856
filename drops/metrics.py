"""Prometheus metrics of every long-running process, on prometheus-client.

Each process kind declares its metrics where its counts live: a :class:`Counter` or
:class:`Histogram` of prometheus-client where an event happens, or a :class:`Readings`
collector where a stage already keeps a running total (read at scrape time, typed as a
counter or a gauge). Every registry carries ``drops_build_info`` (:func:`registry`).

The API serves its registry at ``GET /metrics`` on its own port; the producer, the
processor and a standalone sink serve theirs with :func:`serve` on a port of their own
(``DROPS_PRODUCER__METRICS_PORT``, ``DROPS_PROCESSOR__METRICS_PORT``,
``DROPS_SINK__METRICS_PORT``; 0 turns it off).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from importlib import metadata

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Info, generate_latest
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drops.log import get_log

__all__ = ["CONTENT_TYPE_LATEST", "Readings", "generate_latest", "registry", "serve", "version"]

log = get_log("metrics")


def version() -> str:
    """The installed version of Discovery Drops (``drops --version``, ``drops_build_info``)."""
    try:
        return metadata.version("discovery-drops")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def registry(process: str) -> CollectorRegistry:
    """A new registry for one process kind, with ``drops_build_info{version, python,
    process}``. One per process (or per app in tests, so that apps do not share counts)."""
    reg = CollectorRegistry(auto_describe=True)
    Info("drops_build", "Version of Discovery Drops", registry=reg).info(
        {"version": version(), "python": platform.python_version(), "process": process}
    )
    return reg


class Readings(Collector):
    """Counters and gauges read at scrape time from the objects that keep the running totals.

    A counter's name is given with its ``_total`` suffix, as it is exposed; a reading that
    raises is left out of that scrape."""

    def __init__(self) -> None:
        self._counters: list[tuple[str, str, Callable[[], float]]] = []
        self._gauges: list[tuple[str, str, Callable[[], float]]] = []

    def counter(self, name: str, help_text: str, read: Callable[[], float]) -> Readings:
        if not name.endswith("_total"):
            raise ValueError(f"a counter's name ends in _total: {name}")
        self._counters.append((name, help_text, read))
        return self

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> Readings:
        self._gauges.append((name, help_text, read))
        return self

    def collect(self) -> Iterator[Metric]:
        for name, help_text, read in self._counters:
            try:
                value = float(read())
            except Exception:
                continue
            yield CounterMetricFamily(name.removesuffix("_total"), help_text, value=value)
        for name, help_text, read in self._gauges:
            try:
                value = float(read())
            except Exception:
                continue
            yield GaugeMetricFamily(name, help_text, value=value)


def serve(reg: CollectorRegistry, port: int, host: str) -> bool:
    """Serve ``reg`` at ``http://host:port/metrics`` from a daemon thread. 0 turns it off; a
    port that cannot be bound is logged and the process goes on without metrics (metrics never
    stop the pipeline). True if serving."""
    if port <= 0:
        return False
    try:
        _start_http_server(port, addr=host, registry=reg)
    except OSError as exc:
        log.warning("metrics_unavailable", host=host, port=port, error=str(exc))
        return False
    log.info("metrics_listening", url=f"http://{host}:{port}/metrics")
    return True
