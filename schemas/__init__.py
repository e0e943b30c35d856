"""Record schemas shared by every stage (Python types here, JSON Schema in ``json/``)."""

from schemas.ids import bucket_id, dedupe_key, slot_id, slot_id_int, stream_key
from schemas.records import (
    DROP_VERSION,
    SNAPSHOT_VERSION,
    STATS_VERSION,
    BucketStats,
    DropEvent,
    Failure,
    SchemaError,
    Slot,
    Snapshot,
    decode_drop,
    decode_snapshot,
    decode_stats,
    encode,
)

__all__ = [
    "DROP_VERSION",
    "SNAPSHOT_VERSION",
    "STATS_VERSION",
    "BucketStats",
    "DropEvent",
    "Failure",
    "SchemaError",
    "Slot",
    "Snapshot",
    "bucket_id",
    "decode_drop",
    "decode_snapshot",
    "decode_stats",
    "dedupe_key",
    "encode",
    "slot_id",
    "slot_id_int",
    "stream_key",
]
