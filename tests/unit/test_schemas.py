from __future__ import annotations

import dataclasses
import json
import struct
from importlib import resources
from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import (
    BucketStats,
    DropEvent,
    Failure,
    SchemaError,
    Slot,
    Snapshot,
    SnapshotView,
    decode_drop,
    decode_snapshot,
    decode_stats,
    encode,
    pack_snapshot,
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
    assert data[:4] == b"DDS\x02"  # v2: binary envelope
    assert decode_snapshot(data) == SNAP
    jsonschema.validate(v2_header(data), schema("snapshot.v2.header.json"))
    # v1 (JSON) records, as older producers wrote them, still decode to the same snapshot
    v1 = orjson.dumps(SNAP.to_dict())
    jsonschema.validate(orjson.loads(v1), schema("snapshot.v1.json"))
    assert decode_snapshot(v1) == SNAP == decode_snapshot(data).to_snapshot()


def test_drop_round_trip_and_json_schema() -> None:
    data = encode(DROP)
    assert orjson.loads(data)["v"] == 2
    assert decode_drop(data) == DROP
    jsonschema.validate(orjson.loads(data), schema("drop.v2.json"))
    after = dataclasses.replace(DROP, opened_after_ms=1_763_999_970_000)
    assert decode_drop(encode(after)) == after
    jsonschema.validate(orjson.loads(encode(after)), schema("drop.v2.json"))


def test_v1_drops_still_read() -> None:
    # written before opened_after_ms existed: read as unknown, valid against drop.v1.json
    doc = orjson.loads(encode(DROP))
    doc["v"] = 1
    del doc["opened_after_ms"]
    jsonschema.validate(doc, schema("drop.v1.json"))
    old = decode_drop(orjson.dumps(doc))
    assert (old.v, old.opened_after_ms, old.extra) == (1, None, {})
    assert dataclasses.replace(old, v=2) == DROP
    doc["v"] = 3
    with pytest.raises(SchemaError, match="field 'v' is 3, this build reads 1 or 2"):
        decode_drop(orjson.dumps(doc))


def test_the_read_source_travels_per_slot_and_old_records_read_as_search() -> None:
    found = dataclasses.replace(SLOT, read_via="fallback", actual_time="2026-12-01 20:00:00")
    found = dataclasses.replace(found, slot_id="")  # the id of the new start time
    snap = dataclasses.replace(SNAP, slots=(SLOT, found))
    data = encode(snap)
    view = decode_snapshot(data)
    assert [s.read_via for s in view.slots] == ["search", "fallback"]
    assert decode_snapshot(orjson.dumps(snap.to_dict())) == snap  # the v1 form too
    # a row of the ordinary read keeps its five values: the bytes of records written before
    # the field are exactly what this build writes for search slots, and read as search
    assert b'"rgs://resy/1505/abc"]' in data and b'"fallback"]' in data
    old_v1 = snap.to_dict()
    for s in old_v1["slots"]:
        del s["read_via"]
    assert [s.read_via for s in decode_snapshot(orjson.dumps(old_v1)).slots] == ["search"] * 2
    bad = data.replace(b'"fallback"]', b'"sideways"]')  # same length: a valid layout
    with pytest.raises(SchemaError, match="read_via"):
        _ = decode_snapshot(bad).slots


def test_a_drop_says_how_its_slot_was_read_and_older_drops_read_as_search() -> None:
    doc = orjson.loads(encode(dataclasses.replace(DROP, read_via="fallback")))
    jsonschema.validate(doc, schema("drop.v2.json"))
    assert decode_drop(orjson.dumps(doc)).read_via == "fallback"
    del doc["read_via"]
    jsonschema.validate(doc, schema("drop.v2.json"))
    assert decode_drop(orjson.dumps(doc)).read_via == "search"
    with pytest.raises(SchemaError, match="read_via"):
        decode_drop(orjson.dumps({**doc, "read_via": "x"}))


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
    doc = orjson.loads(orjson.dumps(SNAP.to_dict()))  # the v1 JSON form
    mutate(doc)
    with pytest.raises(SchemaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_snapshot(orjson.dumps(doc))


@pytest.mark.parametrize("data", [None, b"", b"{not json", b"[]", b"42"])
def test_garbage_is_a_schema_error(data: bytes | None) -> None:
    with pytest.raises(SchemaError):
        decode_snapshot(data)
    with pytest.raises(SchemaError):
        decode_drop(data)


# ---------------------------------------------------------------------------- snapshot v2

_PRE = struct.Struct("<4sIIIIII")


def v2_header(data: bytes) -> Any:
    _, n_head, *_ = _PRE.unpack_from(data)
    return orjson.loads(data[_PRE.size : _PRE.size + n_head])


def with_header(data: bytes, mutate: Any) -> bytes:
    """The same v2 record with its JSON header changed (and re-aligned)."""
    magic, n_head, *sizes = _PRE.unpack_from(data)
    head = v2_header(data)
    mutate(head)
    body = data[(_PRE.size + n_head + 7) & ~7 :]
    new = orjson.dumps(head)
    pad = bytes(((_PRE.size + len(new) + 7) & ~7) - _PRE.size - len(new))
    return _PRE.pack(magic, len(new), *sizes) + new + pad + body


def two_venue_snapshot() -> Snapshot:
    other = Slot("resy", "77", "Via Carota", "2026-12-01 19:00:00", "EST5EDT", "", (), 1, 2, "")
    return Snapshot(**{**{f: getattr(SNAP, f) for f in SNAP.__slots__}, "slots": (SLOT, other)})


def test_v2_layout_ids_are_packed_and_slots_are_lazy() -> None:
    snap = two_venue_snapshot()
    view = decode_snapshot(encode(snap))
    assert isinstance(view, SnapshotView) and view.v == 2
    assert view.ids.dtype == np.uint64
    assert view.ids.tolist() == [int(s.slot_id, 16) for s in snap.slots]
    assert view.venue_ids() == {"1505", "77"} and view.venue_id(1) == "77"
    assert view._slots is None  # nothing decoded yet
    assert view.slot(1) == snap.slots[1]
    assert view.slots == snap.slots
    assert view.key == snap.key and view.is_last_part


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("bucket_id"), "missing field 'bucket_id'"),
        (lambda d: d.update(v=1), "field 'v' is 1"),
        (lambda d: d.update(complete="yes"), "field 'complete'"),
        (lambda d: d.update(kind="other"), "field 'kind'"),
        (lambda d: d.update(part=3, parts=2), "field 'part'"),
        (lambda d: d.update(polled_at_ms=1.5), "field 'polled_at_ms'"),
        (lambda d: d.update(failures=[{"ref": "3"}]), r"failures\[0\]: missing field 'scope'"),
    ],
)
def test_bad_v2_headers_name_the_field(mutate: Any, message: str) -> None:
    data = with_header(encode(SNAP), mutate)
    with pytest.raises(SchemaError, match=message):
        decode_snapshot(data)


def test_unknown_v2_header_fields_are_tolerated() -> None:
    data = with_header(encode(SNAP), lambda d: d.update(new_field=[1]))
    assert decode_snapshot(data) == SNAP


def test_v2_id_that_is_not_the_hash_fails_when_the_slot_is_read() -> None:
    snap = two_venue_snapshot()
    data = bytearray(encode(snap))
    _, n_head, *_ = _PRE.unpack_from(data)
    at = (_PRE.size + n_head + 7) & ~7
    data[at + 8] ^= 0xFF  # the first byte of the second slot's id
    view = decode_snapshot(bytes(data))
    assert view.slot(0) == snap.slots[0]
    with pytest.raises(SchemaError, match=r"slots\[1\]: field 'slot_id'"):
        view.slot(1)


def test_v2_lengths_must_match_the_record() -> None:
    data = encode(two_venue_snapshot())
    with pytest.raises(SchemaError, match="need"):
        decode_snapshot(data[:-1])
    with pytest.raises(SchemaError, match="need"):
        decode_snapshot(data + b" ")
    with pytest.raises(SchemaError, match="preamble"):
        decode_snapshot(data[:10])


def test_pack_snapshot_checks_alignment() -> None:
    ids, vidx = np.zeros(2, dtype=np.uint64), np.zeros(2, dtype=np.uint32)
    with pytest.raises(ValueError):
        pack_snapshot(SNAP, ids, ids[:1].astype(np.uint32), b"[]", b"[]", 0, vidx, b"")


text = st.text(max_size=12)
times = st.builds(
    "{:04d}-{:02d}-{:02d} {:02d}:{:02d}:00".format,
    st.integers(2020, 2030),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.integers(0, 59),
)
slots_st = st.builds(
    Slot,
    provider=st.sampled_from(["resy", "opentable"]),
    venue_id=st.sampled_from(["1", "2", "33", "ü-9"]) | text,
    venue_name=text,
    actual_time=times,
    time_zone=st.sampled_from(["EST5EDT", "America/Chicago", ""]),
    neighborhood=text,
    seating_types=st.lists(text, max_size=3).map(tuple),
    party_min=st.integers(0, 20),
    party_max=st.integers(-(2**40), 2**40),
    booking=text,
    read_via=st.sampled_from(["search", "fallback"]),
    venue_slug=st.just("") | text,
    venue_city=st.sampled_from(["", "new-york-ny", "ny"]) | text,
)
snapshots_st = st.builds(
    Snapshot,
    snapshot_id=text,
    kind=st.sampled_from(["baseline", "poll", "close"]),
    market=text,
    provider=st.sampled_from(["resy", "opentable"]),
    bucket_id=text,
    date=text,
    time_slot=text,
    polled_at_ms=st.integers(-(2**53), 2**53),
    complete=st.booleans(),
    part=st.just(0),
    parts=st.integers(1, 5),
    failures=st.lists(
        st.builds(Failure, st.sampled_from(["venue", "page", "provider"]), text, text), max_size=3
    ).map(tuple),
    slots=st.lists(slots_st, max_size=12).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(snapshots_st)
def test_v2_and_v1_round_trip_random_snapshots(snap: Snapshot) -> None:
    view = decode_snapshot(encode(snap))
    assert view == snap and view.to_snapshot() == snap
    assert view.ids.tolist() == [int(s.slot_id, 16) for s in snap.slots]
    assert view.venue_ids() == {s.venue_id for s in snap.slots}
    assert decode_snapshot(orjson.dumps(snap.to_dict())) == snap
    assert encode(view) == encode(snap)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots_st, st.data())
def test_corrupted_v2_bytes_are_schema_errors_never_crashes(snap: Snapshot, data: Any) -> None:
    raw = bytearray(encode(snap))
    how = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(4, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
    elif how == "truncate":
        del raw[data.draw(st.integers(4, len(raw) - 1)) :]
    elif how == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=16))
    else:
        i = data.draw(st.integers(4, len(raw)))
        raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        view = decode_snapshot(bytes(raw))
        view.venue_ids()
        view.slots  # noqa: B018 - decodes and checks every slot
    except SchemaError:
        pass


# ------------------------------------------------------------------ the venue's booking slug


def test_the_venue_slug_and_city_travel_in_the_venue_table_and_old_rows_read_empty() -> None:
    slot = dataclasses.replace(SLOT, venue_slug="lilia", venue_city="new-york-ny")
    other = dataclasses.replace(SLOT, venue_id="7", slot_id="")
    snap = dataclasses.replace(SNAP, slots=(slot, other))
    data = encode(snap)
    got = decode_snapshot(data).slots
    assert [(s.venue_slug, s.venue_city) for s in got] == [("lilia", "new-york-ny"), ("", "")]
    # the venue without them keeps the four-string row (what older readers read)
    assert b'["resy","Lilia","EST5EDT","Williamsburg"]' in data
    assert b'["resy","Lilia","EST5EDT","Williamsburg","lilia","new-york-ny"]' in data
    assert encode(SNAP) == encode(dataclasses.replace(SNAP))  # no slug: bytes as before
    # the v1 (JSON) form carries them per slot, valid against its schema; older ones lack them
    doc = orjson.loads(orjson.dumps(snap.to_dict()))
    jsonschema.validate(doc, schema("snapshot.v1.json"))
    assert decode_snapshot(orjson.dumps(doc)) == snap
    for s in doc["slots"]:
        del s["venue_slug"], s["venue_city"]
    assert {(s.venue_slug, s.venue_city) for s in decode_snapshot(orjson.dumps(doc)).slots} == {
        ("", "")
    }


def test_a_venue_row_with_a_non_text_slug_is_a_schema_error() -> None:
    slot = dataclasses.replace(SLOT, venue_slug="lilia", venue_city="new-york-ny")
    data = encode(dataclasses.replace(SNAP, slots=(slot,)))
    bad = data.replace(b'"new-york-ny"]', b"1234567890123]")
    # same length: the layout stays valid, only the value's type is wrong
    assert len(bad) == len(data)
    with pytest.raises(SchemaError, match="venues"):
        decode_snapshot(bad).slot(0)


def test_a_drop_carries_its_booking_link_and_older_drops_read_without_one() -> None:
    link = "https://resy.com/cities/new-york-ny/venues/lilia?date=2026-12-01&seats=2&time=1930"
    ev = dataclasses.replace(DROP, venue_slug="lilia", venue_city="new-york-ny", booking_url=link)
    doc = orjson.loads(encode(ev))
    jsonschema.validate(doc, schema("drop.v2.json"))
    assert decode_drop(orjson.dumps(doc)) == ev
    for key in ("venue_slug", "venue_city", "booking_url"):
        del doc[key]
    jsonschema.validate(doc, schema("drop.v2.json"))
    old = decode_drop(orjson.dumps(doc))
    assert (old.venue_slug, old.venue_city, old.booking_url) == ("", "", "")
    with pytest.raises(SchemaError, match="booking_url"):
        decode_drop(orjson.dumps({**doc, "booking_url": 7}))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "booking_url": "javascript:alert(1)"}, schema("drop.v2.json"))
