"""The one settings object, a section per concern (``settings.kafka.bootstrap``, ...).

Every value comes from an env var ``DROPS_<SECTION>__<NAME>`` (``DROPS_KAFKA__BOOTSTRAP``,
``DROPS_SSE__PING``; a list as JSON or comma separated), from a constructor argument, or,
for the producer's markets and providers, from the TOML file named by ``DROPS_CONFIG``
(``producers/markets.example.toml``), read by pydantic-settings' TOML source into the same
object. The flat names of before (``DROPS_KAFKA_BOOTSTRAP``, ``DROPS_CFG__<PATH>``) still
work: each is an alias (:data:`FLAT`) that logs ``deprecated_setting`` once.

Precedence, highest first:

1. constructor arguments;
2. env vars: ``DROPS_<SECTION>__<NAME>``, then the old flat names; ``DROPS_MARKETS__<NAME>__
   <KEY>`` (or the old ``DROPS_CFG__MARKETS__<NAME>__<KEY>``) sets one key of one market;
3. the file; a value of ``producer`` (``poll_interval``, ``days``, ``time_slots``,
   ``party_sizes``, ``slide_at``) or a provider limit shared by every provider
   (``concurrency``, ``rate_limit``) given by 1. or 2. is written into every market and every
   provider table of the file: explicit settings beat the file;
4. the defaults below.

Without a file, one market comes from the ``market`` section. Errors name the key
(``markets[1].time_zone: ...``) and are :class:`~drops.errors.ConfigError`. Secrets
(``providers.resy.api_key``, ``api.keys``) never appear in a repr; credentials never go in the
file. The README's settings table is generated from these classes (``drops settings``), so
the descriptions here are the documentation.
"""

from __future__ import annotations

import json
import os
import re
import time
import tomllib
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from drops.clock import Clock, parse_instant, parse_time_of_day
from drops.errors import ConfigError
from drops.log import warn_once

PREFIX = "DROPS_"
CFG_PREFIX = "DROPS_CFG__"  # the old path overrides
SECRET_KEYS = frozenset({"api_key", "key", "keys", "token", "secret", "password"})
KNOWN_PROVIDERS = ("resy", "opentable")


# ------------------------------------------------------------------ typed lists from env


def _split(value: Any) -> Any:
    """A list from the env: JSON (``["a","b"]``) or comma separated (``a,b``)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [v.strip() for v in text.split(",") if v.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return value


Strs = Annotated[tuple[str, ...], NoDecode]
Ints = Annotated[tuple[int, ...], NoDecode]


def _hhmm(slots: tuple[str, ...]) -> tuple[str, ...]:
    for i, t in enumerate(slots):
        hh, sep, mm = t.partition(":")
        ok = len(t) == 5 and sep == ":" and hh.isdigit() and mm.isdigit()
        if not ok or not (0 <= int(hh) < 24 and 0 <= int(mm) < 60):
            raise ValueError(f"[{i}]: not a time of day HH:MM: {t!r}")
    if len(set(slots)) != len(slots):
        raise ValueError("repeated bucket time")
    return slots


def _party_sizes(value: tuple[int, ...]) -> tuple[int, ...]:
    for i, size in enumerate(value):
        if not 1 <= size <= 20:
            raise ValueError(f"[{i}]: a party size in 1..20, not {size}")
    return value


def _slide_at(value: str) -> str:
    parse_time_of_day(value)
    return value


MARKET_NAME = re.compile(r"^[a-z0-9_\-]{1,32}$")
"""A market name: part of every bucket id and of the API's filters."""


def _zone(value: str) -> str:
    if not value or any(c in value for c in "'\\"):  # it goes into the views' SQL
        raise ValueError(f"not a time zone name: {value!r}")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


class Section(BaseModel):
    """A section of the settings: unknown keys are errors, lists may come comma separated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ------------------------------------------------------------------ the sections


class KafkaSection(Section):
    bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers")
    version: str = Field("4.1.1", description="Apache Kafka version of the local broker")
    dist: Path = Field(Path(".drops/dist"), description="Folder of the local broker's jars")
    controller_port: int = Field(19093, description="Local broker's KRaft controller port")
    max_message_bytes: int = Field(4_000_000, description="Max record size for our topics")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How every Kafka client connects: PLAINTEXT, SSL, SASL_PLAINTEXT or "
        "SASL_SSL (a managed cluster: SASL_SSL); the local broker listens with it too",
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (with SASL_*): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    sasl_username: str = Field("", description="SASL user name (with SASL_*)")
    sasl_password: SecretStr = Field(
        SecretStr(""), description="SASL password (with SASL_*; never logged)"
    )
    ssl_ca_location: str = Field(
        "",
        description="PEM file of the CA that signed the brokers' certificates (with SSL, "
        "SASL_SSL; empty: the system's CAs)",
    )
    ssl_certificate_location: str = Field(
        "", description="PEM file of this client's certificate (TLS client auth; optional)"
    )
    ssl_key_location: str = Field(
        "", description="PEM file of this client's private key (TLS client auth; optional)"
    )
    ssl_key_password: SecretStr = Field(
        SecretStr(""), description="Password of the client key file, if any (never logged)"
    )

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _security(self) -> KafkaSection:
        protocol = self.security_protocol
        if protocol.startswith("SASL_") and not (
            self.sasl_username and self.sasl_password.get_secret_value()
        ):
            raise ValueError(
                f"DROPS_KAFKA__SECURITY_PROTOCOL={protocol} needs DROPS_KAFKA__SASL_USERNAME and "
                "DROPS_KAFKA__SASL_PASSWORD"
            )
        for name in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"DROPS_KAFKA__{name.upper()}: no such file: {path}")
        if bool(self.ssl_certificate_location) != bool(self.ssl_key_location):
            raise ValueError(
                "DROPS_KAFKA__SSL_CERTIFICATE_LOCATION and DROPS_KAFKA__SSL_KEY_LOCATION go "
                "together"
            )
        return self


TopicRole = Literal[
    "snapshots", "drops", "deadletter", "stats", "producers", "watches", "alerts", "deliveries"
]
"""The project's topics, as the settings name them (``topics.<role>`` is the topic's name)."""


class Replication(Section):
    """One topic's replication where it is not the topics' own (``topics.replication``)."""

    replication_factor: int | None = Field(None, ge=1, description="Replication factor")
    min_insync_replicas: int | None = Field(None, ge=1, description="min.insync.replicas")


class TopicsSection(Section):
    snapshots: str = Field("drops.snapshots", description="Topic of snapshot records")
    drops: str = Field("drops.events", description="Topic of drop and close records")
    stats: str = Field("drops.buckets", description="Topic of per-bucket fetch stats")
    deadletter: str = Field("drops.deadletter", description="Topic of rejected records")
    watches: str = Field(
        "drops.watches", description="Compacted topic of watches (key = watch id; empty = deleted)"
    )
    alerts: str = Field("drops.alerts", description="Topic of alerts (one per watch, drop)")
    deliveries: str = Field(
        "drops.deliveries", description="Topic of the delivery log (one record per alert, channel)"
    )
    producers: str = Field(
        "drops.producers",
        description="Assignment topic of the producer replicas: each partition stands for a "
        "group of streams, polled by the replica the group assigns it to (no records)",
    )
    snapshots_partitions: int = Field(4, description="Partitions of the snapshot topic")
    drops_partitions: int = Field(1, description="Partitions of the drops topic (1 = total order)")
    producers_partitions: int = Field(
        24, description="Partitions of the producers' assignment topic (most useful replicas)"
    )
    alerts_partitions: int = Field(
        4,
        description="Partitions of the alerts topic (set at creation): delivery worker "
        "replicas in one group share them, so at most this many are busy",
    )
    create: bool = Field(
        False,
        description="Stages create missing topics at start (on for the local broker: "
        "`drops up`, `drops broker start`, the tests); off: a stage checks that its topics "
        "exist and fit and refuses to start otherwise (create them with `drops broker topics`)",
    )
    replication_factor: int = Field(
        3, description="Replication factor of the topics `drops broker topics` creates"
    )
    min_insync_replicas: int = Field(
        2, description="min.insync.replicas of our topics (acks=all writes need that many)"
    )
    snapshots_retention_hours: int = Field(
        168,
        description="Retention of the snapshot topic, hours (-1: forever); keep it above the "
        "longest processor outage",
    )
    drops_retention_hours: int = Field(
        -1,
        description="Retention of the drops topic, hours (-1: forever): the system of record "
        "the sink and new API replicas load from",
    )
    stats_retention_hours: int = Field(168, description="Retention of the stats topic, hours")
    deadletter_retention_hours: int = Field(
        720, description="Retention of the dead-letter topic, hours"
    )
    alerts_retention_hours: int = Field(168, description="Retention of the alerts topic, hours")
    replication: dict[TopicRole, Replication] = Field(
        default_factory=dict,
        description="Per topic (snapshots, drops, deadletter, stats, producers, watches, "
        "alerts, deliveries), a replication_factor and min_insync_replicas of its own, e.g. "
        '{"drops": {"replication_factor": 5, "min_insync_replicas": 3}}',
    )

    def replication_of(self, role: TopicRole) -> tuple[int, int]:
        """``(replication factor, min.insync.replicas)`` of one topic."""
        own = self.replication.get(role) or Replication()
        rf = self.replication_factor if own.replication_factor is None else own.replication_factor
        isr = (
            self.min_insync_replicas if own.min_insync_replicas is None else own.min_insync_replicas
        )
        return rf, isr

    @model_validator(mode="after")
    def _insync(self) -> TopicsSection:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"DROPS_TOPICS__MIN_INSYNC_REPLICAS={self.min_insync_replicas} is more than "
                f"DROPS_TOPICS__REPLICATION_FACTOR={self.replication_factor}: no write could "
                "succeed"
            )
        for role in self.replication:
            rf, isr = self.replication_of(role)
            if isr > rf:
                raise ValueError(
                    f"DROPS_TOPICS__REPLICATION: {role} has min.insync.replicas {isr} above "
                    f"its replication factor {rf}: no write could succeed"
                )
        return self


class MarketSection(Section):
    """The one market polled when no ``DROPS_CONFIG`` file lists markets."""

    name: str = Field("nyc", description="Market name, part of every bucket id")
    time_zone: str = Field("America/New_York", description="The market's time zone")
    providers: Strs = Field(("resy",), description="Providers polled (list)")
    opentable_venue_ids: Strs = Field(
        (), description="OpenTable restaurant ids (list; empty: the simulator's list)"
    )

    _lists = field_validator("providers", "opentable_venue_ids", mode="before")(_split)


class ProducerSection(Section):
    """The producer, and the defaults of every market (``[producer]`` of the file)."""

    poll_interval: float = Field(30.0, ge=0.1, description="Seconds between polls of one bucket")
    days: int = Field(14, ge=1, le=60, description="Days in the sliding window")
    time_slots: Strs = Field(("15:00", "19:00"), min_length=1, description="Bucket times (list)")
    party_sizes: Ints = Field(
        (2,),
        min_length=1,
        description="Party sizes asked of the providers (list); the first is the one drops' "
        "booking links ask",
    )
    slide_at: str = Field("02:05", description="Local time at which the bucket window slides")
    slots_per_record: int = Field(2000, description="Slots per snapshot record part")
    group: str = Field(
        "drops-producer", description="Consumer group of the producer replicas (fail-over)"
    )
    metrics_port: int = Field(9101, description="Producer's /metrics port (0: off)")

    _lists = field_validator("time_slots", "party_sizes", mode="before")(_split)
    _slots = field_validator("time_slots")(_hhmm)
    _slide = field_validator("slide_at")(_slide_at)

    _sizes = field_validator("party_sizes")(_party_sizes)


MARKET_DEFAULTS = ("poll_interval", "days", "time_slots", "party_sizes", "slide_at")


class ProviderBase(Section):
    base_url: str = Field("http://127.0.0.1:8081", description="Base URL of the API")
    concurrency: int = Field(8, ge=1, le=1000, description="Requests in flight")
    rate_limit: float = Field(0.0, ge=0, description="Requests per second (0: no limit)")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class ResySection(ProviderBase):
    api_key: SecretStr = Field(SecretStr("simulator"), description="Resy API key (never logged)")
    api_key_env: str = Field(
        "",
        description="Env var that holds the key instead (read by the client factory, never "
        "stored); empty: api_key",
    )
    per_page: int = Field(
        100, ge=1, le=100, description="Venues per Resy search page (server caps 100)"
    )
    fallback_max: int = Field(
        500, ge=0, le=100_000, description="Most venues read by find when a search page failed"
    )


class OpenTableSection(ProviderBase):
    batch: int = Field(50, ge=1, le=500, description="OpenTable restaurants per availability query")


class ProvidersSection(Section):
    """The provider clients; ``concurrency`` and ``rate_limit`` here apply to every provider
    that sets none of its own (``[providers.<name>]`` of the file)."""

    resy: ResySection = Field(default_factory=ResySection)
    opentable: OpenTableSection = Field(default_factory=OpenTableSection)
    concurrency: int = Field(8, ge=1, le=1000, description="Provider requests in flight")
    rate_limit: float = Field(0.0, ge=0, description="Requests per second per provider (0: none)")
    request_timeout: float = Field(12.0, description="Timeout of one provider request, seconds")
    max_retries: int = Field(3, description="Retries of one provider request")
    user_agent: str = Field(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0",
        description="User-Agent sent to the providers",
    )
    retry_base: float = Field(0.25, description="First retry backoff cap, seconds (full jitter)")
    retry_max_delay: float = Field(8.0, description="Largest retry backoff, seconds")
    retry_after_max: float = Field(30.0, description="Longest Retry-After honoured, seconds")
    breaker_failures: int = Field(
        20, description="Failed requests in a row that open a provider's circuit breaker"
    )
    breaker_reset: float = Field(30.0, description="Seconds a provider's open breaker waits")
    http: Literal["wire", "aiohttp", "httpx"] = Field(
        "wire",
        description="The provider clients' HTTP client: wire (the project's own keep-alive "
        "HTTP/1.1 pool, the least CPU per page), or httpx over aiohttp or over its own "
        "connections",
    )

    @model_validator(mode="before")
    @classmethod
    def _shared_limits(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in KNOWN_PROVIDERS:
            own = data.get(name)
            own = dict(own) if isinstance(own, dict) else own
            if own is None:
                own = {}
            if isinstance(own, dict):
                for key in ("concurrency", "rate_limit"):
                    if key in data and key not in own:
                        own[key] = data[key]
                data[name] = own
        return data

    def get(self, name: str) -> ResySection | OpenTableSection:
        if name == "resy":
            return self.resy
        if name == "opentable":
            return self.opentable
        raise KeyError(name)


class Area(Section):
    """A bounding box in degrees."""

    south: float = Field(ge=-180)
    west: float = Field(ge=-180)
    north: float = Field(ge=-180)
    east: float = Field(ge=-180)

    @model_validator(mode="after")
    def _ordered(self) -> Area:
        if not (self.south < self.north and self.west < self.east):
            raise ValueError("south < north and west < east are needed")
        return self

    @property
    def center(self) -> tuple[float, float]:
        return (self.south + self.north) / 2, (self.west + self.east) / 2


class Market(Section):
    """One market (``[[markets]]`` of the file); what it leaves out comes from ``producer``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    time_zone: str = "America/New_York"
    providers: Strs = Field(("resy",), min_length=1)
    time_slots: Strs = Field(("15:00", "19:00"), min_length=1)
    party_sizes: Ints = Field((2,), min_length=1)
    poll_interval: float = Field(30.0, ge=0.1)
    days: int = Field(14, ge=1, le=60)
    slide_at: str = "02:05"
    area: Area | None = None
    venues: dict[str, Strs] = Field(default_factory=dict)  # provider -> ids

    _lists = field_validator("providers", "time_slots", "party_sizes", mode="before")(_split)
    _slots = field_validator("time_slots")(_hhmm)
    _slide = field_validator("slide_at")(_slide_at)
    _tz = field_validator("time_zone")(_zone)
    _sizes = field_validator("party_sizes")(_party_sizes)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not MARKET_NAME.match(value):
            raise ValueError(f"a market name is 1-32 of a-z 0-9 _ -, not {value!r}")
        return value

    @field_validator("venues", mode="before")
    @classmethod
    def _venue_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _split(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Market:
        for p in self.providers:
            if p not in KNOWN_PROVIDERS:
                raise ValueError(
                    f"providers.{p}: unknown provider (known: {', '.join(KNOWN_PROVIDERS)})"
                )
        for p in self.venues:
            if p not in self.providers:
                raise ValueError(f"venues.{p}: not a provider of this market")
        return self


class ProcessorSection(Section):
    group: str = Field("drops-processor", description="Consumer group of the processor")
    state_path: Path | None = Field(
        None, description="RocksDB state folder (default: <data_dir>/state)"
    )
    commit_interval: float = Field(1.0, description="Processor checkpoint interval, seconds")
    seen_ttl: float = Field(7200.0, description="Seconds a reported slot is not reported again")
    heartbeat_interval: float = Field(10.0, description="Seconds between heartbeat log lines")
    instance: str = Field(
        "",
        description="Id of this processor replica (its Kafka transactional.id), unique per "
        "replica and stable across restarts; empty: the replica claims a free slot folder "
        "under the state folder and keeps a generated id there",
    )
    metrics_port: int = Field(
        9102, description="Processor's /metrics port (0: off; one per replica on a host)"
    )


class ClickHouseSection(Section):
    dsn: str = Field("", description="chdb:///path or http(s)://... (default: chDB)")
    retention_days: int = Field(
        400, description="Days ClickHouse keeps drop and bucket rows (TTL; applied at start)"
    )


class SinkSection(Section):
    group: str = Field("drops-sink", description="Consumer group of the ClickHouse sink")
    batch_size: int = Field(2000, description="Sink: most records per ClickHouse insert")
    batch_seconds: float = Field(0.2, description="Sink: longest wait to fill a batch, s")
    backoff_max: float = Field(30.0, description="Sink: longest retry pause while CH is down")
    identity_interval: float = Field(
        30.0,
        description="Sink: seconds between checks, while it runs, that the topics still have "
        "the cluster and topic ids its stored offsets belong to (also checked at once when an "
        "offset goes backwards)",
    )
    metrics_port: int = Field(9103, description="Standalone sink's /metrics port (0: off)")


class ApiSection(Section):
    host: str = Field("127.0.0.1", description="API bind address")
    port: int = Field(8000, description="API port")
    cors_origins: Strs = Field((), description="CORS origins (list; '*' = any)")
    keys: Strs = Field(
        (),
        repr=False,
        description="API keys (list); when set, X-API-Key or ?api_key= is required (never logged)",
    )
    feed_max_limit: int = Field(1000, description="Largest page /feed serves")
    feed_scan_max: int = Field(
        200_000,
        description="Feed: most offsets one request reads a partition; a page that ends early "
        "returns its cursor and more=true",
    )
    just_opened_minutes: int = Field(10, description="Window of GET /just-opened, minutes")
    max_connections: int = Field(
        12_000, description="API: most open connections; more are answered 503"
    )
    head_timeout: float = Field(
        10.0, description="API: seconds a client has to send a request's head, then closed"
    )
    head_cache_ms: int = Field(
        100,
        description="Feed: ms an API without the in-process sink reuses the stored head "
        "(sink_progress); with --with-sink the sink hands it over exactly",
    )

    _lists = field_validator("cors_origins", "keys", mode="before")(_split)


class SseSection(Section):
    ping: float = Field(15.0, description="SSE: seconds between ping comments")
    retry_ms: int = Field(2000, description="SSE: reconnection delay hint sent to clients")
    queue: int = Field(256, description="SSE: pending batches per client before it is dropped")
    send_timeout: float = Field(10.0, description="SSE: seconds one send may take")
    ring: int = Field(20000, description="SSE: recent live events kept for reconnects")
    flush_ms: int = Field(
        100, description="SSE: live events are handed to clients at most this often, ms"
    )
    max_clients: int = Field(
        10_000, description="SSE: most connected clients; more are answered 503 + Retry-After"
    )
    sends_per_s: int = Field(
        5_000,
        description="SSE: live batches are handed over less often than every flush_ms when "
        "the clients a batch wakes x batches a second would exceed this many sends a second",
        gt=0,
    )


class WatchesSection(Section):
    local_owner: str = Field("local", description="Owner of every watch when no API keys are set")
    per_owner: int = Field(1000, description="Most watches one owner may have")


class MatcherSection(Section):
    group: str = Field("drops-matcher", description="Consumer group of the alert matcher")
    commit_interval: float = Field(
        0.25,
        description="Matcher checkpoint interval, seconds (alerts become readable at commit)",
    )
    instance: str = Field(
        "0", description="Id of this matcher replica, stable across restarts (transactional.id)"
    )
    metrics_port: int = Field(
        9104, description="Alert matcher's /metrics port (0: off; one per replica on a host)"
    )
    told_max_days: float = Field(
        16.0,
        description="Matcher: longest a slot's told watches are kept for its close, days (each "
        "is kept until the slot's date has passed, by the drops' event time; this bounds it)",
    )


class DeliverySection(Section):
    group: str = Field("drops-delivery", description="Consumer group of the delivery worker")
    attempts: int = Field(6, description="Delivery: attempts per alert and channel")
    backoff: float = Field(0.5, description="Delivery: first retry pause cap, s (jitter)")
    backoff_max: float = Field(60.0, description="Delivery: longest retry pause, s")
    timeout: float = Field(10.0, description="Delivery: timeout of one send, s")
    rate: float = Field(
        5.0, description="Delivery: sends per second per channel (token bucket, burst of 10)"
    )
    concurrency: int = Field(16, description="Delivery: sends in flight")
    log_keep_hours: float = Field(
        24.0,
        description="Delivery: hours of the delivery log a worker reads and keeps in memory to "
        "skip what was sent (far above the longest retries of an uncommitted alert)",
    )
    log_retention_hours: float = Field(
        168.0,
        description="Delivery: retention of the deliveries topic, hours (set when the topic "
        "is created; the sink copies it to ClickHouse alert_deliveries)",
    )
    metrics_port: int = Field(9105, description="Delivery worker's /metrics port (0: off)")


class SimulatorSection(Section):
    host: str = Field("127.0.0.1", description="Simulator bind address")
    port: int = Field(8081, description="Simulator port")
    venues: int = Field(200, description="Venues in the simulated market")
    seed: int = Field(7, description="Seed of the simulated market")
    churn: float = Field(0.02, description="Share of slots that change per minute")
    scripted: bool = Field(
        False, description="Simulator scripted mode: no churn, only changes made by /_control"
    )
    fault_rate: float = Field(0.0, description="Share of simulator requests that fail")
    reach: Annotated[tuple[int, int], NoDecode] = Field(
        (150, 150),
        description="Simulator: minutes a time query answers around the asked time, "
        "'150' (±150) or 'before,after' such as '90,150'",
    )
    cache_mb: int = Field(
        512, description="Simulator: MiB of search pages kept while the market is unchanged"
    )
    fault_kinds: Strs = Field(
        ("5xx", "429", "timeout", "malformed", "truncated"),
        description="Fault kinds drawn at fault_rate (5xx,timeout,429,403,malformed,...)",
    )

    _lists = field_validator("fault_kinds", mode="before")(_split)

    @field_validator("reach", mode="before")
    @classmethod
    def _reach(cls, value: Any) -> Any:
        value = _split(value)
        if isinstance(value, (list, tuple)) and len(value) == 1:
            value = (value[0], value[0])  # '150': ±150
        return value

    @field_validator("reach")
    @classmethod
    def _reach_minutes(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 0:
            raise ValueError(f"reach is 'minutes' or 'before,after', not {value!r}")
        return value


class UpSection(Section):
    simulator: bool = Field(
        True,
        description="`drops up` starts the provider simulator; false (or `drops up "
        "--no-simulator`): poll the real providers at DROPS_PRODUCER__POLL_INTERVAL",
    )
    poll_interval: float = Field(
        5.0, description="Poll interval used by `drops up` with the simulator"
    )
    restarts: int = Field(5, description="Times `drops up` restarts a crashed stage")


class ClockSection(Section):
    start: str = Field(
        "",
        description="ISO instant this process's clock starts at (e.g. 2026-12-01T19:50:00Z), "
        "running at normal speed from there; empty: the machine's clock. For tests and demos",
    )
    anchor: float | None = Field(
        None,
        description="Unix time (real) at which the clock read DROPS_CLOCK__START (default: when "
        "the settings were read); processes given the same pair share one clock",
    )

    @field_validator("start")
    @classmethod
    def _instant(cls, value: str) -> str:
        if value.strip():
            parse_instant(value)  # a clear error naming the value
        return value.strip()

    @model_validator(mode="after")
    def _anchor(self) -> ClockSection:
        if self.start and self.anchor is None:
            # one clock for this process and its children (no re-validation: it is set once)
            object.__setattr__(self, "anchor", time.time())
        return self

    def clock(self) -> Clock:
        """The product's clock (:mod:`drops.clock`)."""
        if not self.start:
            return Clock()
        return Clock.starting_at(parse_instant(self.start), self.anchor)


class MetricsSection(Section):
    host: str = Field(
        "127.0.0.1",
        description="Bind address of the producer's, processor's, sink's, matcher's and "
        "delivery worker's /metrics (each stage's section has its port)",
    )


class LogSection(Section):
    level: str = Field("INFO", description="Log level")
    format: Literal["json", "text"] = Field("json", description="json or text")


# ------------------------------------------------------------------ old flat names

# old flat name -> its place now. Every DROPS_<OLD> env var and every constructor argument
# or model_copy(update=...) key of the old name still works.
FLAT: dict[str, str] = {
    "kafka_bootstrap": "kafka.bootstrap",
    "kafka_version": "kafka.version",
    "kafka_dist": "kafka.dist",
    "kafka_controller_port": "kafka.controller_port",
    "max_message_bytes": "kafka.max_message_bytes",
    "snapshot_topic": "topics.snapshots",
    "drops_topic": "topics.drops",
    "stats_topic": "topics.stats",
    "deadletter_topic": "topics.deadletter",
    "watches_topic": "topics.watches",
    "alerts_topic": "topics.alerts",
    "deliveries_topic": "topics.deliveries",
    "producer_topic": "topics.producers",
    "snapshot_partitions": "topics.snapshots_partitions",
    "drops_partitions": "topics.drops_partitions",
    "producer_partitions": "topics.producers_partitions",
    "market": "market.name",
    "time_zone": "market.time_zone",
    "providers": "market.providers",
    "opentable_venue_ids": "market.opentable_venue_ids",
    "poll_interval": "producer.poll_interval",
    "days": "producer.days",
    "time_slots": "producer.time_slots",
    "party_size": "producer.party_sizes",
    "slide_at": "producer.slide_at",
    "slots_per_record": "producer.slots_per_record",
    "producer_group": "producer.group",
    "producer_metrics_port": "producer.metrics_port",
    "resy_url": "providers.resy.base_url",
    "resy_api_key": "providers.resy.api_key",
    "resy_per_page": "providers.resy.per_page",
    "opentable_url": "providers.opentable.base_url",
    "opentable_batch": "providers.opentable.batch",
    "concurrency": "providers.concurrency",
    "rate_limit": "providers.rate_limit",
    "request_timeout": "providers.request_timeout",
    "max_retries": "providers.max_retries",
    "user_agent": "providers.user_agent",
    "retry_base": "providers.retry_base",
    "retry_max_delay": "providers.retry_max_delay",
    "retry_after_max": "providers.retry_after_max",
    "breaker_failures": "providers.breaker_failures",
    "breaker_reset": "providers.breaker_reset",
    "provider_http": "providers.http",
    "processor_group": "processor.group",
    "state_path": "processor.state_path",
    "commit_interval": "processor.commit_interval",
    "seen_ttl": "processor.seen_ttl",
    "heartbeat_interval": "processor.heartbeat_interval",
    "processor_instance": "processor.instance",
    "processor_metrics_port": "processor.metrics_port",
    "clickhouse_dsn": "clickhouse.dsn",
    "retention_days": "clickhouse.retention_days",
    "sink_group": "sink.group",
    "sink_batch_size": "sink.batch_size",
    "sink_batch_seconds": "sink.batch_seconds",
    "sink_backoff_max": "sink.backoff_max",
    "sink_identity_interval": "sink.identity_interval",
    "sink_metrics_port": "sink.metrics_port",
    "api_host": "api.host",
    "api_port": "api.port",
    "api_cors_origins": "api.cors_origins",
    "api_keys": "api.keys",
    "feed_max_limit": "api.feed_max_limit",
    "feed_scan_max": "api.feed_scan_max",
    "just_opened_minutes": "api.just_opened_minutes",
    "api_max_connections": "api.max_connections",
    "api_head_timeout": "api.head_timeout",
    "api_head_cache_ms": "api.head_cache_ms",
    "sse_ping": "sse.ping",
    "sse_retry_ms": "sse.retry_ms",
    "sse_queue": "sse.queue",
    "sse_send_timeout": "sse.send_timeout",
    "sse_ring": "sse.ring",
    "sse_flush_ms": "sse.flush_ms",
    "sse_max_clients": "sse.max_clients",
    "sse_sends_per_s": "sse.sends_per_s",
    "local_owner": "watches.local_owner",
    "watches_per_owner": "watches.per_owner",
    "matcher_group": "matcher.group",
    "matcher_commit_interval": "matcher.commit_interval",
    "matcher_instance": "matcher.instance",
    "matcher_metrics_port": "matcher.metrics_port",
    "matcher_told_max_days": "matcher.told_max_days",
    "delivery_group": "delivery.group",
    "delivery_attempts": "delivery.attempts",
    "delivery_backoff": "delivery.backoff",
    "delivery_backoff_max": "delivery.backoff_max",
    "delivery_timeout": "delivery.timeout",
    "delivery_rate": "delivery.rate",
    "delivery_concurrency": "delivery.concurrency",
    "delivery_metrics_port": "delivery.metrics_port",
    "delivery_log_keep_hours": "delivery.log_keep_hours",
    "delivery_log_retention_hours": "delivery.log_retention_hours",
    "alerts_partitions": "topics.alerts_partitions",
    "kafka_security_protocol": "kafka.security_protocol",
    "kafka_sasl_mechanism": "kafka.sasl_mechanism",
    "kafka_sasl_username": "kafka.sasl_username",
    "kafka_sasl_password": "kafka.sasl_password",
    "kafka_ssl_ca_location": "kafka.ssl_ca_location",
    "kafka_ssl_certificate_location": "kafka.ssl_certificate_location",
    "kafka_ssl_key_location": "kafka.ssl_key_location",
    "kafka_ssl_key_password": "kafka.ssl_key_password",
    "create_topics": "topics.create",
    "topic_replication_factor": "topics.replication_factor",
    "topic_min_insync_replicas": "topics.min_insync_replicas",
    "snapshot_retention_hours": "topics.snapshots_retention_hours",
    "drops_retention_hours": "topics.drops_retention_hours",
    "stats_retention_hours": "topics.stats_retention_hours",
    "deadletter_retention_hours": "topics.deadletter_retention_hours",
    "alerts_retention_hours": "topics.alerts_retention_hours",
    "sim_host": "simulator.host",
    "sim_port": "simulator.port",
    "sim_venues": "simulator.venues",
    "sim_seed": "simulator.seed",
    "sim_churn": "simulator.churn",
    "sim_scripted": "simulator.scripted",
    "sim_fault_rate": "simulator.fault_rate",
    "sim_reach": "simulator.reach",
    "sim_cache_mb": "simulator.cache_mb",
    "sim_fault_kinds": "simulator.fault_kinds",
    "up_simulator": "up.simulator",
    "up_poll_interval": "up.poll_interval",
    "up_restarts": "up.restarts",
    "clock_start": "clock.start",
    "clock_anchor": "clock.anchor",
    "metrics_host": "metrics.host",
    "log_level": "log.level",
    "log_format": "log.format",
}
# the old derived properties: same values, new places (read only)
DERIVED: dict[str, str] = {
    "slot_times": "producer.time_slots",
    "provider_names": "market.providers",
    "sim_reach_minutes": "simulator.reach",
}


def env_name(path: str) -> str:
    """``kafka.bootstrap`` -> ``DROPS_KAFKA__BOOTSTRAP``."""
    return PREFIX + "__".join(path.split(".")).upper()


def _put(doc: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        nxt = doc.get(key)
        if not isinstance(nxt, dict):
            nxt = doc[key] = {}
        doc = nxt
    doc[path[-1]] = value


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """Old flat keys (``kafka_bootstrap=...``) moved to their sections; the rest as given.
    A flat key beats the same value given nested in ``values``."""
    out: dict[str, Any] = {}
    flat = []
    for key, value in values.items():
        if key in FLAT and not isinstance(value, (dict, BaseModel)):  # market, providers: both
            flat.append((key, value))
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**value, **out[key]}
        else:
            out[key] = dict(value) if isinstance(value, dict) else value
    for key, value in flat:
        _put(out, FLAT[key].split("."), value)
    return out


def _parse_path_value(raw: str) -> Any:
    """The value of a ``DROPS_MARKETS__<NAME>__<KEY>`` or ``DROPS_CFG__...``: TOML, else text."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _is_secret(key: str) -> bool:
    return key.lower() in SECRET_KEYS


# ------------------------------------------------------------------ sources


class _Env(EnvSettingsSource):
    """pydantic-settings' env source over ``DROPS_<SECTION>__<NAME>``, minus the names it
    must not read: the old flat ``DROPS_MARKET``/``DROPS_PROVIDERS`` (now sections; see
    :class:`_Aliases`) and the per-market ``DROPS_MARKETS__<NAME>__<KEY>``."""

    _done: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        if self._done is None:  # read once: for the file's explicit values and for the merge
            self._done = super().__call__()
        return self._done

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = super()._load_env_vars()
        skip = ("drops_market", "drops_providers")
        out = {
            k: v
            for k, v in env.items()
            if k not in skip
            and not k.startswith(("drops_markets__", "drops_cfg__", "clock__"))
            and not (k.startswith("drops_") and k[6:] in FLAT)
        }
        # the clock section's field is ``clock_`` with the alias ``clock``, and pydantic-settings
        # reads an aliased field's env name without the prefix: DROPS_CLOCK__<NAME> is handed
        # to it as that name (and a bare CLOCK__<NAME> of the environment is not read)
        for k in [k for k in out if k.startswith("drops_clock__")]:
            out["clock__" + k[len("drops_clock__") :]] = out.pop(k)
        return out


class _Aliases(PydanticBaseSettingsSource):
    """The old names: ``DROPS_<FLAT>`` and ``DROPS_CFG__<PATH>``, each warned once; and the
    per-market overrides ``DROPS_MARKETS__<NAME>__<KEY>`` (kept under ``market_overrides``)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is done in __call__

    _done: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        if self._done is None:  # read once: for the file's explicit values and for the merge
            self._done = self._read()
        return self._done

    def _read(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        env = {k.upper(): v for k, v in self.environ.items() if k.upper().startswith(PREFIX)}
        for name in sorted(env):
            flat = name[len(PREFIX) :].lower()
            if flat in FLAT:
                new = env_name(FLAT[flat])
                warn_once(name, "deprecated_setting", setting=name, use=new)
                if new not in env:  # the new name wins when both are given
                    _put(out, FLAT[flat].split("."), env[name])
        overrides: dict[str, dict[str, Any]] = {}
        for name in sorted(env):
            old = name.startswith(CFG_PREFIX)
            if not (old or name.startswith(PREFIX + "MARKETS__")):
                continue
            rest = name[len(CFG_PREFIX if old else PREFIX) :]
            path = [p.lower() for p in rest.split("__") if p]
            if old:
                warn_once(
                    name, "deprecated_setting", setting=name, use=PREFIX + "__".join(path).upper()
                )
            if len(path) < 2:
                raise ConfigError(f"{name}: needs a path of at least two keys")
            if _is_secret(path[-1]):
                raise ConfigError(f"{name}: credentials are read from api_key_env, not set here")
            value = _parse_path_value(env[name])
            if path[0] == "markets":
                if len(path) != 3:
                    raise ConfigError(f"{name}: needs a market name and a key")
                overrides.setdefault(path[1], {})[path[2]] = value
            elif old and PREFIX + "__".join(path).upper() in env:
                continue  # the new name wins
            else:
                _put(out, path, value)
        if overrides:
            out["market_overrides"] = overrides
        return out


def _check_no_secrets(doc: Any, where: str) -> None:
    if isinstance(doc, dict):
        for key, value in doc.items():
            if _is_secret(str(key)):
                raise ConfigError(
                    f"{where}{key}: credentials never go in the config file; set the env var "
                    "named by api_key_env (default DROPS_RESY_API_KEY)"
                )
            _check_no_secrets(value, f"{where}{key}.")
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            _check_no_secrets(value, f"{where.rstrip('.')}[{i}].")


class _Toml(PydanticBaseSettingsSource):
    """The ``DROPS_CONFIG`` file through pydantic-settings' TOML source, with the settings
    given explicitly (``explicit``: constructor arguments and env vars) written into every
    market and provider table of it, so that they beat the file."""

    def __init__(
        self, settings_cls: type[BaseSettings], path: Path | None, explicit: dict[str, Any]
    ) -> None:
        super().__init__(settings_cls)
        self.path, self.explicit = path, explicit

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"config {self.path}: cannot read: {exc.strerror or exc}") from None
        try:
            doc = TomlConfigSettingsSource(self.settings_cls, toml_file=self.path)()
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {self.path}: not TOML: {exc}") from None
        for key in doc:
            if key not in ("producer", "providers", "markets"):
                raise ConfigError(
                    f"config {self.path}: {key}: unknown key (known: markets, producer, providers)"
                )
        try:
            _check_no_secrets(doc, "")
        except ConfigError as exc:
            raise ConfigError(f"config {self.path}: {exc}") from None
        producer = self.explicit.get("producer") or {}
        market = {k: v for k, v in producer.items() if k in MARKET_DEFAULTS}
        if market and isinstance(doc.get("markets"), list):
            doc["markets"] = [{**m, **market} if isinstance(m, dict) else m for m in doc["markets"]]
        shared = self.explicit.get("providers") or {}
        shared = {k: v for k, v in shared.items() if k in ("concurrency", "rate_limit")}
        provs = doc.get("providers")
        if shared and isinstance(provs, dict):
            for name, table in provs.items():
                if isinstance(table, dict):
                    provs[name] = {**table, **shared}
        doc["config_source"] = str(self.path)
        return doc


# ------------------------------------------------------------------ the settings


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "tuple[", "list[")):
            out += f".{part}" if out else str(part)
    return out


def config_error(exc: ValidationError, source: str = "") -> ConfigError:
    """A :class:`ConfigError` naming each bad key, from pydantic's errors."""
    lines = []
    for err in exc.errors():
        where = _loc(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if msg.startswith("[") and "]: " in msg:  # an item of a list: markets[0].days[1]
            index, msg = msg.split(": ", 1)
            where += index
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{where}: {msg}" if where else msg)
    head = f"config {source}: " if source else ""
    return ConfigError(head + "; ".join(lines))


def _resolve_markets(data: dict[str, Any]) -> list[Any]:
    """The market list of ``data`` (the sources' merged values, sections as dicts or models):
    the file's markets, each completed from ``producer``, or the ``market`` section's one
    market; then the per-market overrides (``market_overrides``, popped)."""
    overrides = data.pop("market_overrides", None) or {}
    producer = data.get("producer") or {}
    if isinstance(producer, BaseModel):
        producer = dict(producer)
    defaults = {k: producer[k] for k in MARKET_DEFAULTS if k in producer}
    market = data.get("market") or {}
    if isinstance(market, BaseModel):
        market = dict(market)
    markets = data.get("markets")
    if markets is None or (isinstance(markets, (list, tuple)) and not markets):
        if data.get("config_source", "settings") != "settings":
            raise ValueError("markets: at least one [[markets]] table is needed")
        one: dict[str, Any] = {
            "name": market.get("name", "nyc"),
            "time_zone": market.get("time_zone", "America/New_York"),
            "providers": market.get("providers", ("resy",)),
        }
        ids = _split(market.get("opentable_venue_ids", ()))
        if ids and "opentable" in _split(one["providers"]):
            one["venues"] = {"opentable": ids}
        markets = [one]
    if not isinstance(markets, (list, tuple)):
        raise ValueError("markets: at least one [[markets]] table is needed")
    out = []
    for m in markets:
        if isinstance(m, dict):
            m = {"providers": market.get("providers", ("resy",)), **defaults, **m}
        out.append(m)
    for name, values in overrides.items():
        found = [m for m in out if isinstance(m, dict) and str(m.get("name", "")).lower() == name]
        if not found:
            raise ValueError(f"no market named {name!r} in the config")
        found[0].update(values)
    return out


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    data_dir: Path = Field(Path(".drops"), description="Folder for broker data, jars, state, chDB")
    config: Path | None = Field(
        None,
        description="TOML file of markets and providers (producers/markets.example.toml); "
        "settings given explicitly override it (see drops/settings.py)",
    )
    kafka: KafkaSection = Field(default_factory=KafkaSection)
    topics: TopicsSection = Field(default_factory=TopicsSection)
    market: MarketSection = Field(default_factory=MarketSection)
    producer: ProducerSection = Field(default_factory=ProducerSection)
    providers: ProvidersSection = Field(default_factory=ProvidersSection)
    markets: tuple[Market, ...] = Field(
        (),
        description="The markets polled ([[markets]] of the DROPS_CONFIG file; without "
        "one: the market section's one market)",
    )
    processor: ProcessorSection = Field(default_factory=ProcessorSection)
    clickhouse: ClickHouseSection = Field(default_factory=ClickHouseSection)
    sink: SinkSection = Field(default_factory=SinkSection)
    api: ApiSection = Field(default_factory=ApiSection)
    sse: SseSection = Field(default_factory=SseSection)
    watches: WatchesSection = Field(default_factory=WatchesSection)
    matcher: MatcherSection = Field(default_factory=MatcherSection)
    delivery: DeliverySection = Field(default_factory=DeliverySection)
    simulator: SimulatorSection = Field(default_factory=SimulatorSection)
    up: UpSection = Field(default_factory=UpSection)
    clock_: ClockSection = Field(
        default_factory=ClockSection, alias="clock", validation_alias="clock"
    )
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    log: LogSection = Field(default_factory=LogSection)
    config_source: str = Field(
        "settings", exclude=True, description="The file the markets came from, or 'settings'"
    )

    def __init__(self, **values: Any) -> None:
        _check_known(values, "Settings()")
        try:
            super().__init__(**values)
        except ValidationError as exc:
            source = values.get("config") or os.environ.get("DROPS_CONFIG", "")
            raise config_error(exc, str(source) if source else "") from None
        except SettingsError as exc:  # an env value that is not JSON where JSON is needed
            raise ConfigError(str(exc).replace('source "_Env"', "the env")) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        given = init_settings.init_kwargs if isinstance(init_settings, InitSettingsSource) else {}
        init = InitSettingsSource(settings_cls, nest(given))
        env = _Env(settings_cls)
        aliases = _Aliases(settings_cls, os.environ)
        explicit = _merge(aliases(), env(), init())
        path = explicit.get("config") or os.environ.get("DROPS_CONFIG") or None
        return (init, env, aliases, _Toml(settings_cls, Path(path) if path else None, explicit))

    @model_validator(mode="before")
    @classmethod
    def _markets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = nest(data)  # model_validate with old flat keys
        data["markets"] = _resolve_markets(data)
        return data

    @model_validator(mode="after")
    def _unique(self) -> Settings:
        _check_unique(self.markets)
        return self

    # --- old flat names, read and copied (the rename script moves code to the new ones)

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            path = FLAT.get(name) or DERIVED.get(name)
            if path is None:
                return super().__getattr__(name)
            value: Any = self
            for part in path.split("."):
                value = getattr(value, "clock_" if part == "clock" and value is self else part)
            if name == "party_size":
                return value[0]
            return value

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy; ``update`` may name old flat keys (``{"sse_ping": 0.3}``), sections or root
        fields. Updated sections are validated; the markets follow the updated defaults as they
        would have from the env, and a new ``config`` file is read (what was given explicitly
        still beats it). The env is not read again."""
        if not update:
            return super().model_copy(deep=deep)
        _check_known(update, "Settings.model_copy()")
        root: dict[str, Any] = {}  # field name -> value
        sections: dict[str, Any] = {}
        for key, value in update.items():
            is_flat = key in FLAT and not isinstance(value, (dict, BaseModel))
            path = FLAT[key].split(".") if is_flat else [key]
            if key == "party_size":
                value = (value,)
            if len(path) == 1 and isinstance(value, dict) and path[0] != "markets":
                sections[path[0]] = _merge(sections.get(path[0], {}), value)  # {"sse": {...}}
            elif len(path) == 1:
                root["clock_" if path[0] == "clock" else path[0]] = value
            else:
                _put(sections, path, value)
        shared = sections.get("providers", {})
        for key in ("concurrency", "rate_limit"):
            if key in shared:  # like an explicit DROPS_CONCURRENCY: every provider
                for name in KNOWN_PROVIDERS:
                    shared.setdefault(name, {})[key] = shared[key]
        try:
            raw_markets, overrides = self._copy_config(root, sections)
            for name, values in sections.items():
                field = "clock_" if name == "clock" else name
                current = getattr(self, field)
                root[field] = _updated(current, values) if isinstance(values, dict) else values
            if raw_markets is None and "markets" in root:
                raw_markets = list(root["markets"])
            elif raw_markets is None and ("producer" in sections or "market" in sections):
                if self.config_source == "settings":
                    raw_markets = []  # the one market again, from the updated sections
                else:
                    given = {k: v for k, v in sections.get("producer", {}).items()
                             if k in MARKET_DEFAULTS}  # fmt: skip
                    raw_markets = [{**dict(m), **given} for m in self.markets]
            if raw_markets is not None:
                data = {
                    "producer": root.get("producer", self.producer),
                    "market": root.get("market", self.market),
                    "markets": raw_markets,
                    "config_source": root.get("config_source", self.config_source),
                    "market_overrides": overrides,
                }
                markets = [
                    m if isinstance(m, Market) else _market_at(i, m)
                    for i, m in enumerate(_resolve_markets(data))
                ]
                root["markets"] = tuple(markets)
        except ValidationError as exc:
            raise config_error(exc, str(root.get("config") or self.config or "")) from None
        except ValueError as exc:
            source = root.get("config") or self.config
            raise ConfigError(f"config {source}: {exc}" if source else str(exc)) from None
        if "markets" in root:
            try:
                _check_unique(root["markets"])
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return super().model_copy(update=root, deep=deep)

    def _copy_config(
        self, root: dict[str, Any], sections: dict[str, Any]
    ) -> tuple[list[Any] | None, dict[str, Any]]:
        """For :meth:`model_copy` with a new ``config``: the file's sections (into
        ``sections``, under what was given explicitly) and its raw markets."""
        if "config" not in root or root["config"] == self.config:
            return None, {}
        if root["config"] is None:
            root["config_source"] = "settings"
            return [], {}
        path = root["config"] = Path(root["config"])
        given = self.providers.model_fields_set
        explicit: dict[str, Any] = {
            "producer": {k: getattr(self.producer, k) for k in self.producer.model_fields_set},
            "providers": {k: getattr(self.providers, k) for k in given},
        }
        for name in KNOWN_PROVIDERS:
            sub = getattr(self.providers, name)
            if name in explicit["providers"]:
                explicit["providers"][name] = {k: getattr(sub, k) for k in sub.model_fields_set}
        doc = _Toml(type(self), path, explicit)()
        root["config_source"] = doc.pop("config_source")
        producer = _merge(
            doc.get("producer") or {}, explicit["producer"], sections.pop("producer", {})
        )
        providers = _merge(
            doc.get("providers") or {}, explicit["providers"], sections.pop("providers", {})
        )
        root["producer"] = ProducerSection.model_validate(producer)
        root["providers"] = ProvidersSection.model_validate(providers)
        overrides = _Aliases(type(self), os.environ)().get("market_overrides", {})
        markets = doc.get("markets")
        if not isinstance(markets, list) or not markets:
            raise ValueError("markets: at least one [[markets]] table is needed")
        return markets, overrides

    # --- the clock and the derived places

    @property
    def clock_section(self) -> ClockSection:
        return self.clock_

    def clock(self) -> Clock:
        """The product's clock (:mod:`drops.clock`)."""
        return self.clock_.clock()

    @property
    def chdb_path(self) -> Path:
        return (self.data_dir / "clickhouse").resolve()

    @property
    def clickhouse_url(self) -> str:
        return self.clickhouse.dsn or f"chdb://{self.chdb_path}"

    @property
    def uses_chdb(self) -> bool:
        return self.clickhouse_url.startswith("chdb:")

    @property
    def state_dir(self) -> Path:
        return (self.processor.state_path or self.data_dir / "state").resolve()

    def find_market(self, name: str) -> Market:
        for m in self.markets:
            if m.name == name:
                return m
        raise KeyError(name)


@lru_cache(maxsize=1)
def _known_keys() -> frozenset[str]:
    """The keys code may give: the fields, their aliases and the old flat names."""
    fields = Settings.model_fields
    return frozenset(FLAT) | frozenset(fields) | {f.alias for f in fields.values() if f.alias}


def _check_known(values: Mapping[str, Any], where: str) -> None:
    """A key given in code is a field, a field's alias or an old flat name: a typo is an error
    here too (the env is read with unknown names ignored: other tools share the prefix)."""
    unknown = sorted(set(values) - _known_keys())
    if unknown:
        raise ConfigError(f"{where}: unknown setting {', '.join(unknown)}")


def _check_unique(markets: tuple[Market, ...]) -> None:
    for i, m in enumerate(markets):
        if any(o.name == m.name for o in markets[:i]):
            raise ValueError(f"markets[{i}].name: market {m.name!r} is listed twice")


def _market_at(i: int, raw: Any) -> Market:
    try:
        return Market.model_validate(raw)
    except ValidationError as exc:  # its keys under markets[i]
        raise ConfigError(
            "; ".join(f"markets[{i}].{_loc(e['loc'])}: {e['msg']}" for e in exc.errors())
        ) from None


def _updated(section: BaseModel, values: dict[str, Any]) -> BaseModel:
    """``section`` with ``values`` set. Only what was given before and what is given now is
    passed on, so the copy's ``model_fields_set`` is theirs alone and a default stays a
    default (``shell.broker.local_settings`` fills only the topic settings not given)."""
    current = {k: getattr(section, k) for k in section.model_fields_set}
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(current.get(key), BaseModel):
            current[key] = _updated(current[key], value)
        else:
            current[key] = value
    return type(section).model_validate(current)


def _merge(*docs: dict[str, Any]) -> dict[str, Any]:
    """Deep merge, later docs win."""
    out: dict[str, Any] = {}
    for doc in docs:
        for key, value in doc.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = _merge(out[key], value)
            else:
                out[key] = value
    return out


def leaves(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted path, value)`` of every leaf setting of ``model`` (sections walked)."""
    for name, field in type(model).model_fields.items():
        if field.exclude:
            continue
        key = field.alias or name
        value = getattr(model, name)
        if isinstance(value, Section) and not isinstance(value, (Market, Area)):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
