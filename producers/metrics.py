"""The producer's Prometheus metrics: each cycle's report added to counters per market."""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

# CycleReport field -> (metric name without _total, help)
CYCLE_COUNTS: dict[str, tuple[str, str]] = {
    "started": ("drops_producer_fetches_started", "Bucket fetches started"),
    "finished": ("drops_producer_fetches_finished", "Bucket fetches finished"),
    "skipped": ("drops_producer_fetches_skipped", "Fetches skipped: the stream's last still ran"),
    "incomplete": ("drops_producer_fetches_incomplete", "Fetches that were not complete"),
    "errors": ("drops_producer_fetch_errors", "Fetches that failed with an error"),
    "closed": ("drops_producer_buckets_closed", "Buckets that left the window"),
    "slots": ("drops_producer_slots_seen", "Slots seen by finished fetches"),
    "records": ("drops_producer_records", "Snapshot records written"),
    "requests": ("drops_producer_requests", "Provider requests"),
    "retries": ("drops_producer_retries", "Provider request retries"),
}


class Report(Protocol):
    started: int
    finished: int
    skipped: int
    incomplete: int
    errors: int
    closed: int
    slots: int
    records: int
    requests: int
    retries: int


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.counters = {
            field: Counter(name, text, ["market"], registry=registry)
            for field, (name, text) in CYCLE_COUNTS.items()
        }

    def cycle(self, market: str, report: Report) -> None:
        """Add one cycle's report (the jobs finished since the last heartbeat)."""
        for field, counter in self.counters.items():
            counter.labels(market).inc(getattr(report, field))
