"""Each stage's view of the settings: the sections it reads, and nothing else.

The shell builds one :class:`drops.settings.Settings` and hands it to every stage's ``run()``;
each ``run()`` (and every function under it) is typed against its own view below, a
:class:`typing.Protocol` that names only the sections (and derived values) that stage reads.
``Settings`` satisfies every view structurally, so nothing changes at run time, and
``mypy --strict`` proves a stage reads no section outside its view: the processor cannot read
``settings.api``, the API cannot read ``settings.providers``.

The foundation's helpers take the smallest view they need: the Kafka clients
(:mod:`drops.kafka`) take :class:`KafkaSettings` (the ``kafka`` section), the topic admin
(:mod:`drops.topics`) takes :class:`TopicSettings` (``kafka``, ``topics`` and the delivery
log's retention, ``delivery``).

Members are read-only properties (a stage never assigns a section), so a plain attribute,
a pydantic field or a property satisfies them. The views are listed in :data:`VIEWS`
(tests/unit/test_stage_views.py checks each names only what ``Settings`` has).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from drops.clock import Clock
from drops.settings import (
    ApiSection,
    ClickHouseSection,
    DeliverySection,
    KafkaSection,
    LogSection,
    Market,
    MarketSection,
    MatcherSection,
    MetricsSection,
    ProcessorSection,
    ProducerSection,
    ProvidersSection,
    SinkSection,
    SseSection,
    TopicsSection,
    WatchesSection,
)

__all__ = [
    "VIEWS",
    "ApiSettings",
    "ClickHouseSettings",
    "DeliverySettings",
    "KafkaSettings",
    "MarketsSettings",
    "MatcherSettings",
    "ProcessorSettings",
    "ProducerSettings",
    "SinkSettings",
    "TopicSettings",
]


# ------------------------------------------------------------------ the foundation's views


class KafkaSettings(Protocol):
    """How to reach the cluster (:mod:`drops.kafka`)."""

    @property
    def kafka(self) -> KafkaSection: ...


class TopicSettings(KafkaSettings, Protocol):
    """The topics as an operator creates them (:mod:`drops.topics`); the deliveries topic's
    retention is the delivery section's ``log_retention_hours``."""

    @property
    def topics(self) -> TopicsSection: ...

    @property
    def delivery(self) -> DeliverySection: ...


class LogSettings(Protocol):
    @property
    def log(self) -> LogSection: ...


class ClockSettings(Protocol):
    def clock(self) -> Clock:
        """The product's clock (``DROPS_CLOCK__*``)."""
        ...


class MarketsSettings(Protocol):
    """The markets every stage knows (:mod:`drops.markets`)."""

    @property
    def markets(self) -> tuple[Market, ...]: ...


class ClickHouseSettings(MarketsSettings, Protocol):
    """Where ClickHouse is, the markets' zones its views use and the retry pause while it is
    down, the sink section's ``backoff_max`` (``store.clickhouse.prepare``)."""

    @property
    def clickhouse(self) -> ClickHouseSection: ...

    @property
    def clickhouse_url(self) -> str: ...

    @property
    def uses_chdb(self) -> bool: ...

    @property
    def sink(self) -> SinkSection: ...


class _Stage(TopicSettings, Protocol):
    """What every long-running stage reads: the cluster, its topics (checked at start) and the
    bind address of its ``/metrics``."""

    @property
    def metrics(self) -> MetricsSection: ...


# ------------------------------------------------------------------ the stages' views


class ProducerSettings(_Stage, ClockSettings, MarketsSettings, Protocol):
    """``producers/``: polls the markets' providers."""

    @property
    def producer(self) -> ProducerSection: ...

    @property
    def providers(self) -> ProvidersSection: ...

    @property
    def market(self) -> MarketSection: ...

    @property
    def config_source(self) -> str: ...


class ProcessorSettings(_Stage, ClockSettings, Protocol):
    """``processors/app.py``: snapshots to drop records."""

    @property
    def processor(self) -> ProcessorSection: ...

    @property
    def producer(self) -> ProducerSection: ...

    @property
    def state_dir(self) -> Path: ...


class MatcherSettings(_Stage, Protocol):
    """``processors/alerts.py``: drop records and watches to alerts."""

    @property
    def matcher(self) -> MatcherSection: ...

    @property
    def processor(self) -> ProcessorSection: ...

    @property
    def state_dir(self) -> Path: ...


class DeliverySettings(_Stage, Protocol):
    """``delivery/``: alerts to their channels."""

    @property
    def processor(self) -> ProcessorSection: ...


class SinkSettings(_Stage, LogSettings, ClickHouseSettings, Protocol):
    """``sinks/``: topics to ClickHouse (its own section is the ClickHouse view's ``sink``)."""


class ApiSettings(SinkSettings, ClockSettings, Protocol):
    """``api/``: the HTTP API; it runs the sink in its own process with chDB (so its view
    holds the sink's)."""

    @property
    def api(self) -> ApiSection: ...

    @property
    def sse(self) -> SseSection: ...

    @property
    def watches(self) -> WatchesSection: ...

    @property
    def market(self) -> MarketSection: ...

    @property
    def producer(self) -> ProducerSection: ...

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy with ``update`` (an embedded replica's own chDB folder and sink group)."""
        ...


VIEWS: dict[str, type[Any]] = {
    "producer": ProducerSettings,
    "processor": ProcessorSettings,
    "matcher": MatcherSettings,
    "delivery": DeliverySettings,
    "sink": SinkSettings,
    "api": ApiSettings,
}
"""Each stage's view, by stage."""
