from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import ids
from schemas.ids import SlotIds, slot_id, slot_id_int, slot_prefix, venue_hash


def test_slot_id_is_stable_across_releases() -> None:
    # Pinned value: changing it would re-key every stored slot; never change it.
    assert ids.slot_id("resy", "1505", "2026-02-18 20:30:00") == "a76e77167105c6b1"
    a = ids.slot_id("resy", "1505", "2026-02-18 20:30:00")
    assert len(a) == 16 and int(a, 16) == ids.slot_id_int("resy", "1505", "2026-02-18 20:30:00")


def test_slot_id_normalizes_time_forms() -> None:
    a = ids.slot_id("resy", "1505", "2026-02-18 20:30:00")
    assert ids.slot_id("resy", "1505", "2026-02-18T20:30") == a
    assert ids.slot_id("resy", "1505", "2026-02-18 20:30") == a


def test_slot_id_separates_fields() -> None:
    assert ids.slot_id("resy", "15", "2026-02-18 20:30:00") != ids.slot_id(
        "resy1", "5", "2026-02-18 20:30:00"
    )
    assert ids.slot_id("resy", "1", "2026-02-18 20:30:00") != ids.slot_id(
        "opentable", "1", "2026-02-18 20:30:00"
    )


def test_bad_time_is_rejected() -> None:
    with pytest.raises(ValueError, match="start time"):
        ids.slot_id("resy", "1", "tomorrow")


def test_bucket_id_round_trip() -> None:
    b = ids.bucket_id("nyc", "2026-11-29", "19:00")
    assert b == "nyc:2026-11-29:1900"
    assert ids.parse_bucket_id(b) == ("nyc", "2026-11-29", "19:00")
    assert ids.stream_key(b, "resy") == "nyc:2026-11-29:1900/resy"


def test_dedupe_key_is_per_minute() -> None:
    b = "nyc:2026-11-29:1900"
    assert ids.dedupe_key(b, "ab", 60_000) == ids.dedupe_key(b, "ab", 119_999)
    assert ids.dedupe_key(b, "ab", 60_000) != ids.dedupe_key(b, "ab", 120_000)
    assert ids.dedupe_key(b, "ab", 60_000, "close").endswith("|close")


_texts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x1f"), min_size=1
)
_times = st.datetimes(min_value=datetime(2000, 1, 1)).map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S"))


@given(provider=_texts, venue=_texts, actual=_times)
def test_the_producers_fast_path_is_the_slot_hash(provider: str, venue: str, actual: str) -> None:
    """SlotIds (the producers' per-venue prefix) and venue_hash (one hash per venue, copied per
    start time) give exactly slot_id / slot_id_int."""
    assert SlotIds(provider)(venue, actual) == slot_id(provider, venue, actual)
    h = venue_hash(slot_prefix(provider, venue)).copy()
    h.update(actual.encode())
    assert int.from_bytes(h.digest(), "big") == slot_id_int(provider, venue, actual)


def test_the_slot_hash_has_one_implementation() -> None:
    """Only schemas/ids.py hashes slots (BLAKE2b, 8 bytes); everything else calls it."""
    root = Path(__file__).resolve().parents[2]
    product = ("drops", "schemas", "domain", "store", "producers", "processors", "delivery")
    product += ("sinks", "api")
    hashing = sorted(
        str(p.relative_to(root))
        for pkg in (*product, "shell", "simulator", "bench")
        for p in (root / pkg).rglob("*.py")
        if "digest_size=8" in p.read_text()
    )
    assert hashing == ["schemas/ids.py"]
