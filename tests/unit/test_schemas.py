from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import orjson
import pytest

from schemas import (
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


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        resources.files("schemas").joinpath(f"json/{name}").read_text()
    )
    return loaded


SLOT = Slot(
    provider="resy",
    venue_id="1505",
    venue_name="Lilia",
    actual_time="2026-12-01 19:30:00",
    time_zone="EST5EDT",
    neighborhood="Williamsburg",
    seating_types=("Dining Room", "Bar"),
    party_min=2,
    party_max=4,
    booking="rgs://resy/1505/abc",
)
SNAP = Snapshot(
    snapshot_id="s1",
    kind="poll",
    market="nyc",
    provider="resy",
    bucket_id="nyc:2026-12-01:1900",
    date="2026-12-01",
    time_slot="19:00",
    polled_at_ms=1_764_000_000_000,
    complete=False,
    failures=(Failure("page", "3", "HTTP 429"),),
    slots=(SLOT,),
)
DROP = DropEvent(
    event="open",
    dedupe_key="nyc:2026-12-01:1900|x|1",
    bucket_id="nyc:2026-12-01:1900",
    market="nyc",
    provider="resy",
    date="2026-12-01",
    time_slot="19:00",
    slot_id=SLOT.slot_id,
    venue_id="1505",
    venue_name="Lilia",
    neighborhood="Williamsburg",
    actual_time="2026-12-01 19:30:00",
    time_zone="EST5EDT",
    seating_types=("Dining Room",),
    party_min=2,
    party_max=4,
    booking="",
    opened_at_ms=1_764_000_000_000,
    snapshot_id="s1",
)


def test_snapshot_round_trip_and_json_schema() -> None:
    data = encode(SNAP)
    assert decode_snapshot(data) == SNAP
    jsonschema.validate(orjson.loads(data), schema("snapshot.v1.json"))


def test_drop_round_trip_and_json_schema() -> None:
    data = encode(DROP)
    assert decode_drop(data) == DROP
    jsonschema.validate(orjson.loads(data), schema("drop.v1.json"))


def test_stats_round_trip() -> None:
    stats = BucketStats(
        market="nyc",
        provider="resy",
        bucket_id=SNAP.bucket_id,
        date=SNAP.date,
        time_slot=SNAP.time_slot,
        kind="baseline",
        snapshot_id="s1",
        polled_at_ms=1,
        duration_ms=2,
        venues=3,
        slots=4,
        complete=True,
    )
    assert decode_stats(encode(stats)) == stats


def test_unknown_fields_are_tolerated() -> None:
    doc = orjson.loads(encode(DROP))
    doc["new_field"] = 1
    assert decode_drop(orjson.dumps(doc)).extra == {"new_field": 1}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("bucket_id"), "missing field 'bucket_id'"),
        (lambda d: d.update(v=2), "field 'v' is 2"),
        (lambda d: d.update(complete="yes"), "field 'complete'"),
        (lambda d: d.update(kind="other"), "field 'kind'"),
        (lambda d: d.update(part=3, parts=2), "field 'part'"),
        (lambda d: d["slots"][0].update(slot_id="0" * 16), "slot_id"),
        (lambda d: d["slots"][0].pop("venue_id"), "slots[0]: missing field 'venue_id'"),
    ],
)
def test_bad_snapshots_name_the_field(mutate: Any, message: str) -> None:
    doc = orjson.loads(encode(SNAP))
    mutate(doc)
    with pytest.raises(SchemaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_snapshot(orjson.dumps(doc))


@pytest.mark.parametrize("data", [None, b"", b"{not json", b"[]", b"42"])
def test_garbage_is_a_schema_error(data: bytes | None) -> None:
    with pytest.raises(SchemaError):
        decode_snapshot(data)
    with pytest.raises(SchemaError):
        decode_drop(data)
