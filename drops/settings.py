"""The one settings object. Every value comes from an env var ``DROPS_<NAME>``.

The README's settings table is generated from this class (``drops settings``), so the
descriptions here are the documentation.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from drops.clock import Clock, parse_instant


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DROPS_", extra="ignore")

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(Path(".drops"), description="Folder for broker data, jars, state, chDB")

    # --- Kafka ---------------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers")
    kafka_version: str = Field("4.1.1", description="Apache Kafka version of the local broker")
    kafka_dist: Path = Field(Path(".drops/dist"), description="Folder of the local broker's jars")
    kafka_controller_port: int = Field(19093, description="Local broker's KRaft controller port")
    snapshot_topic: str = Field("drops.snapshots", description="Topic of snapshot records")
    drops_topic: str = Field("drops.events", description="Topic of drop and close records")
    stats_topic: str = Field("drops.buckets", description="Topic of per-bucket fetch stats")
    deadletter_topic: str = Field("drops.deadletter", description="Topic of rejected records")
    snapshot_partitions: int = Field(4, description="Partitions of the snapshot topic")
    drops_partitions: int = Field(1, description="Partitions of the drops topic (1 = total order)")
    max_message_bytes: int = Field(4_000_000, description="Max record size for our topics")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How every Kafka client connects: PLAINTEXT, SSL, SASL_PLAINTEXT or "
        "SASL_SSL (a managed cluster: SASL_SSL); the local broker listens with it too",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (with SASL_*): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    kafka_sasl_username: str = Field("", description="SASL user name (with SASL_*)")
    kafka_sasl_password: SecretStr = Field(
        SecretStr(""), description="SASL password (with SASL_*; never logged)"
    )
    kafka_ssl_ca_location: str = Field(
        "",
        description="PEM file of the CA that signed the brokers' certificates (with SSL, "
        "SASL_SSL; empty: the system's CAs)",
    )
    kafka_ssl_certificate_location: str = Field(
        "", description="PEM file of this client's certificate (TLS client auth; optional)"
    )
    kafka_ssl_key_location: str = Field(
        "", description="PEM file of this client's private key (TLS client auth; optional)"
    )
    kafka_ssl_key_password: SecretStr = Field(
        SecretStr(""), description="Password of the client key file, if any (never logged)"
    )
    create_topics: bool = Field(
        False,
        description="Stages create missing topics at start (on for the local broker: "
        "`drops up`, `drops broker start`, the tests); off: a stage checks that its topics "
        "exist and fit and refuses to start otherwise (create them with `drops broker topics`)",
    )
    topic_replication_factor: int = Field(
        3, description="Replication factor of the topics `drops broker topics` creates"
    )
    topic_min_insync_replicas: int = Field(
        2, description="min.insync.replicas of our topics (acks=all writes need that many)"
    )
    snapshot_retention_hours: int = Field(
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

    # --- the market and its buckets ----------------------------------------------------
    market: str = Field("nyc", description="Market name, part of every bucket id")
    time_zone: str = Field("America/New_York", description="The market's time zone")
    time_slots: str = Field("15:00,19:00", description="Bucket times, comma separated")
    days: int = Field(14, description="Days in the sliding window")
    party_size: int = Field(2, description="Party size asked of the providers")
    providers: str = Field("resy", description="Providers polled, comma separated")

    # --- producers -----------------------------------------------------------------------
    config: Path | None = Field(
        None,
        description="TOML file of markets and providers (producers/markets.example.toml); "
        "DROPS_* settings given explicitly and DROPS_CFG__<path> override it",
    )
    poll_interval: float = Field(30.0, description="Seconds between polls of one bucket")
    resy_url: str = Field("http://127.0.0.1:8081", description="Base URL of the Resy API")
    resy_api_key: SecretStr = Field(
        SecretStr("simulator"), description="Resy API key (never logged)"
    )
    request_timeout: float = Field(12.0, description="Timeout of one provider request, seconds")
    max_retries: int = Field(3, description="Retries of one provider request")
    concurrency: int = Field(8, description="Provider requests in flight per producer")
    slots_per_record: int = Field(2000, description="Slots per snapshot record part")
    slide_at: str = Field("02:05", description="Local time at which the bucket window slides")
    opentable_url: str = Field("http://127.0.0.1:8081", description="Base URL of the OpenTable API")
    opentable_venue_ids: str = Field(
        "", description="OpenTable restaurant ids, comma separated (empty: the simulator's list)"
    )
    opentable_batch: int = Field(50, description="OpenTable restaurants per availability query")
    resy_per_page: int = Field(100, description="Venues per Resy search page (server caps 100)")
    user_agent: str = Field(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0",
        description="User-Agent sent to the providers",
    )
    rate_limit: float = Field(0.0, description="Requests per second per provider (0: no limit)")
    retry_base: float = Field(0.25, description="First retry backoff cap, seconds (full jitter)")
    retry_max_delay: float = Field(8.0, description="Largest retry backoff, seconds")
    retry_after_max: float = Field(30.0, description="Longest Retry-After honoured, seconds")
    breaker_failures: int = Field(
        20, description="Failed requests in a row that open a provider's circuit breaker"
    )
    breaker_reset: float = Field(30.0, description="Seconds a provider's open breaker waits")
    producer_group: str = Field(
        "drops-producer", description="Consumer group of the producer replicas (fail-over)"
    )
    producer_topic: str = Field(
        "drops.producers",
        description="Assignment topic of the producer replicas: each partition stands for a "
        "group of streams, polled by the replica the group assigns it to (no records)",
    )
    producer_partitions: int = Field(
        24, description="Partitions of the producers' assignment topic (most useful replicas)"
    )

    # --- processor -----------------------------------------------------------------------
    processor_group: str = Field("drops-processor", description="Consumer group of the processor")
    state_path: Path | None = Field(
        None, description="RocksDB state folder (default: <data_dir>/state)"
    )
    commit_interval: float = Field(1.0, description="Processor checkpoint interval, seconds")
    seen_ttl: float = Field(7200.0, description="Seconds a reported slot is not reported again")
    heartbeat_interval: float = Field(10.0, description="Seconds between heartbeat log lines")
    processor_instance: str = Field(
        "",
        description="Id of this processor replica (its Kafka transactional.id), unique per "
        "replica and stable across restarts; empty: the replica claims a free slot folder "
        "under the state folder and keeps a generated id there",
    )

    # --- ClickHouse and the API ----------------------------------------------------------
    clickhouse_dsn: str = Field("", description="chdb:///path or http(s)://... (default: chDB)")
    sink_group: str = Field("drops-sink", description="Consumer group of the ClickHouse sink")
    api_host: str = Field("127.0.0.1", description="API bind address")
    api_port: int = Field(8000, description="API port")
    retention_days: int = Field(
        400, description="Days ClickHouse keeps drop and bucket rows (TTL; applied at start)"
    )
    sink_batch_size: int = Field(2000, description="Sink: most records per ClickHouse insert")
    sink_batch_seconds: float = Field(0.2, description="Sink: longest wait to fill a batch, s")
    sink_backoff_max: float = Field(30.0, description="Sink: longest retry pause while CH is down")
    api_cors_origins: str = Field("", description="CORS origins, comma separated ('*' = any)")
    api_keys: str = Field(
        "", description="API keys, comma separated; when set, X-API-Key or ?api_key= is required"
    )
    feed_max_limit: int = Field(1000, description="Largest page /feed serves")
    feed_scan_max: int = Field(
        200_000,
        description="Feed: most offsets one request reads a partition; a page that ends early "
        "returns its cursor and more=true",
    )
    just_opened_minutes: int = Field(10, description="Window of GET /just-opened, minutes")
    sse_ping: float = Field(15.0, description="SSE: seconds between ping comments")
    sse_retry_ms: int = Field(2000, description="SSE: reconnection delay hint sent to clients")
    sse_queue: int = Field(256, description="SSE: pending batches per client before it is dropped")
    sse_send_timeout: float = Field(10.0, description="SSE: seconds one send may take")
    sse_ring: int = Field(20000, description="SSE: recent live events kept for reconnects")
    sse_flush_ms: int = Field(
        100, description="SSE: live events are handed to clients at most this often, ms"
    )
    sse_max_clients: int = Field(
        10_000, description="SSE: most connected clients; more are answered 503 + Retry-After"
    )
    api_max_connections: int = Field(
        12_000, description="API: most open connections; more are answered 503"
    )
    api_head_timeout: float = Field(
        10.0, description="API: seconds a client has to send a request's head, then closed"
    )
    api_head_cache_ms: int = Field(
        100,
        description="Feed: ms an API without the in-process sink reuses the stored head "
        "(sink_progress); with --with-sink the sink hands it over exactly",
    )

    # --- watches and alerts --------------------------------------------------------------
    watches_topic: str = Field(
        "drops.watches", description="Compacted topic of watches (key = watch id; empty = deleted)"
    )
    alerts_topic: str = Field("drops.alerts", description="Topic of alerts (one per watch, drop)")
    deliveries_topic: str = Field(
        "drops.deliveries", description="Topic of the delivery log (one record per alert, channel)"
    )
    local_owner: str = Field("local", description="Owner of every watch when no API keys are set")
    watches_per_owner: int = Field(1000, description="Most watches one owner may have")
    matcher_group: str = Field("drops-matcher", description="Consumer group of the alert matcher")
    matcher_commit_interval: float = Field(
        0.25,
        description="Matcher checkpoint interval, seconds (alerts become readable at commit)",
    )
    matcher_instance: str = Field(
        "0", description="Id of this matcher replica, stable across restarts (transactional.id)"
    )
    matcher_told_max_days: float = Field(
        16.0,
        description="Matcher: longest a slot's told watches are kept for its close, days (each "
        "is kept until the slot's date has passed, by the drops' event time; this bounds it)",
    )
    delivery_group: str = Field(
        "drops-delivery", description="Consumer group of the delivery worker"
    )
    delivery_attempts: int = Field(6, description="Delivery: attempts per alert and channel")
    delivery_backoff: float = Field(0.5, description="Delivery: first retry pause cap, s (jitter)")
    delivery_backoff_max: float = Field(60.0, description="Delivery: longest retry pause, s")
    delivery_timeout: float = Field(10.0, description="Delivery: timeout of one send, s")
    delivery_rate: float = Field(
        5.0, description="Delivery: sends per second per channel (token bucket, burst of 10)"
    )
    delivery_concurrency: int = Field(16, description="Delivery: sends in flight")
    delivery_log_keep_hours: float = Field(
        24.0,
        description="Delivery: hours of the delivery log a worker reads and keeps in memory to "
        "skip what was sent (far above the longest retries of an uncommitted alert)",
    )
    delivery_log_retention_hours: float = Field(
        168.0,
        description="Delivery: retention of the deliveries topic, hours (set when the topic "
        "is created; the sink copies it to ClickHouse alert_deliveries)",
    )
    alerts_partitions: int = Field(
        4,
        description="Partitions of the alerts topic (set at creation): delivery worker "
        "replicas in one group share them, so at most this many are busy",
    )

    # --- simulator -----------------------------------------------------------------------
    sim_host: str = Field("127.0.0.1", description="Simulator bind address")
    sim_port: int = Field(8081, description="Simulator port")
    sim_venues: int = Field(200, description="Venues in the simulated market")
    sim_seed: int = Field(7, description="Seed of the simulated market")
    sim_churn: float = Field(0.02, description="Share of slots that change per minute")
    sim_scripted: bool = Field(
        False, description="Simulator scripted mode: no churn, only changes made by /_control"
    )
    sim_fault_rate: float = Field(0.0, description="Share of simulator requests that fail")
    sim_reach: str = Field(
        "150",
        description="Simulator: minutes a time query answers around the asked time, "
        "'150' (±150) or 'before,after' such as '90,150'",
    )
    sim_cache_mb: int = Field(
        512, description="Simulator: MiB of search pages kept while the market is unchanged"
    )
    sim_fault_kinds: str = Field(
        "5xx,429,timeout,malformed,truncated",
        description="Fault kinds drawn at sim_fault_rate (5xx,timeout,429,403,malformed,...)",
    )

    # --- drops up (the local demo) --------------------------------------------------------
    up_simulator: bool = Field(
        True,
        description="`drops up` starts the provider simulator; false (or `drops up "
        "--no-simulator`): poll the real providers at DROPS_POLL_INTERVAL",
    )
    up_poll_interval: float = Field(
        5.0, description="Poll interval used by `drops up` with the simulator"
    )
    up_restarts: int = Field(5, description="Times `drops up` restarts a crashed stage")

    # --- the clock -----------------------------------------------------------------------
    clock_start: str = Field(
        "",
        description="ISO instant this process's clock starts at (e.g. 2026-12-01T19:50:00Z), "
        "running at normal speed from there; empty: the machine's clock. For tests and demos",
    )
    clock_anchor: float | None = Field(
        None,
        description="Unix time (real) at which the clock read DROPS_CLOCK_START (default: when "
        "the settings were read); processes given the same pair share one clock",
    )

    # --- metrics (the API serves GET /metrics on its own port) ----------------------------
    metrics_host: str = Field(
        "127.0.0.1", description="Bind address of the producer's, processor's and sink's /metrics"
    )
    producer_metrics_port: int = Field(9101, description="Producer's /metrics port (0: off)")
    processor_metrics_port: int = Field(
        9102, description="Processor's /metrics port (0: off; one per replica on a host)"
    )
    sink_metrics_port: int = Field(9103, description="Standalone sink's /metrics port (0: off)")
    matcher_metrics_port: int = Field(
        9104, description="Alert matcher's /metrics port (0: off; one per replica on a host)"
    )
    delivery_metrics_port: int = Field(9105, description="Delivery worker's /metrics port (0: off)")

    # --- logs ----------------------------------------------------------------------------
    log_level: str = Field("INFO", description="Log level")
    log_format: str = Field("json", description="json or text")

    @field_validator("clock_start")
    @classmethod
    def _instant(cls, value: str) -> str:
        if value.strip():
            parse_instant(value)  # a clear error naming the value
        return value.strip()

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()
        ):
            raise ValueError(
                f"DROPS_KAFKA_SECURITY_PROTOCOL={protocol} needs DROPS_KAFKA_SASL_USERNAME and "
                "DROPS_KAFKA_SASL_PASSWORD"
            )
        for name in ("kafka_ssl_ca_location", "kafka_ssl_certificate_location",
                     "kafka_ssl_key_location"):  # fmt: skip
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"DROPS_{name.upper()}: no such file: {path}")
        if bool(self.kafka_ssl_certificate_location) != bool(self.kafka_ssl_key_location):
            raise ValueError(
                "DROPS_KAFKA_SSL_CERTIFICATE_LOCATION and DROPS_KAFKA_SSL_KEY_LOCATION go together"
            )
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError(
                f"DROPS_TOPIC_MIN_INSYNC_REPLICAS={self.topic_min_insync_replicas} is more than "
                f"DROPS_TOPIC_REPLICATION_FACTOR={self.topic_replication_factor}: no write could "
                "succeed"
            )
        return self

    @model_validator(mode="after")
    def _anchor_the_clock(self) -> Settings:
        if self.clock_start and self.clock_anchor is None:
            self.clock_anchor = time.time()  # one clock for this process and its children
        return self

    def clock(self) -> Clock:
        """The product's clock (:mod:`drops.clock`)."""
        if not self.clock_start:
            return Clock()
        return Clock.starting_at(parse_instant(self.clock_start), self.clock_anchor)

    @property
    def slot_times(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.time_slots.split(",") if t.strip())

    @property
    def sim_reach_minutes(self) -> tuple[int, int]:
        """``sim_reach`` as (minutes before, minutes after) the asked time."""
        parts = [p.strip() for p in self.sim_reach.split(",")]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) not in (1, 2) or min(values) < 0:
            raise ValueError(f"sim_reach is 'minutes' or 'before,after', not {self.sim_reach!r}")
        return (values[0], values[-1])

    @property
    def provider_names(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.providers.split(",") if p.strip())

    @property
    def chdb_path(self) -> Path:
        return (self.data_dir / "clickhouse").resolve()

    @property
    def clickhouse_url(self) -> str:
        return self.clickhouse_dsn or f"chdb://{self.chdb_path}"

    @property
    def uses_chdb(self) -> bool:
        return self.clickhouse_url.startswith("chdb:")

    @property
    def state_dir(self) -> Path:
        return (self.state_path or self.data_dir / "state").resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
