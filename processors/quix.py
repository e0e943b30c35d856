"""The one set-up of an exactly-once Quix Streams application (the processor and the matcher).

Both stages are a replica of a consumer group that reads with ``read_committed`` and writes
in transactions: its ``member`` id (stable across restarts) is both the static
``group.instance.id`` (a restarted replica takes its partitions back at once instead of
waiting for the crashed member's session to time out) and the ``transactional.id`` (a
restarted replica fences the crashed one, and its open transaction is aborted at once; a
random id leaves it open, holding back read_committed readers of the output and changelog
topics until it times out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quixstreams import Application
from quixstreams.state.rocksdb import RocksDBOptions

from drops import kafka
from drops.stages import KafkaSettings

SESSION_TIMEOUT_MS = 15_000
TRANSACTION_TIMEOUT_MS = 30_000


def exactly_once_app(
    settings: KafkaSettings,
    *,
    group: str,
    member: str,
    state_dir: Path,
    commit_interval: float,
    consumer_extra: dict[str, Any] | None = None,
    producer_extra: dict[str, Any] | None = None,
    rocksdb_options: RocksDBOptions | None = None,
) -> Application:
    """An application of consumer group ``group`` as replica ``member``, exactly-once,
    starting at the earliest offset of a partition the group never committed on.

    Always ``loglevel=None``: Quix then installs no log handler of its own, so its lines go
    through ours (JSON like every other line; its level is the root logger's,
    ``DROPS_LOG__LEVEL``). A level here would add Quix's text handler to the ``quixstreams``
    logger and mix text lines into the stage's JSON stderr."""
    return Application(
        broker_address=kafka.quix_connection(settings),  # TLS and SASL as every client
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=commit_interval,
        processing_guarantee="exactly-once",
        state_dir=state_dir,
        consumer_extra_config={
            "isolation.level": "read_committed",
            "group.instance.id": member,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            **(consumer_extra or {}),
        },
        producer_extra_config={
            "message.max.bytes": settings.kafka.max_message_bytes,
            "transactional.id": member,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            **(producer_extra or {}),
        },
        rocksdb_options=rocksdb_options,
        loglevel=None,
    )
