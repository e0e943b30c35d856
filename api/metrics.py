"""The API's Prometheus metrics, on prometheus-client (one registry per app)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Histogram
from prometheus_client.registry import Collector

from drops.metrics import CONTENT_TYPE_LATEST, Readings, generate_latest, registry

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = registry("api")
        self.requests = Counter(
            "drops_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "drops_http_request_seconds",
            "HTTP request duration (streams: time to start)",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.counters: dict[str, Counter] = {}
        self.readings = Readings()
        self.registry.register(self.readings)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def inc(self, name: str, value: float = 1.0, help_text: str = "") -> None:
        """Count an event of the counter ``name`` (given with its ``_total`` suffix)."""
        c = self.counters.get(name)
        if c is None:
            c = Counter(name.removesuffix("_total"), help_text or name, registry=self.registry)
            self.counters[name] = c
        c.inc(value)

    def counter(self, name: str, fn: Callable[[], float], help_text: str) -> None:
        """A running total kept elsewhere, read at scrape time."""
        self.readings.counter(name, help_text, fn)

    def gauge(self, name: str, fn: Callable[[], float], help_text: str) -> None:
        self.readings.gauge(name, help_text, fn)

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)
