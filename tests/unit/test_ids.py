from __future__ import annotations

import pytest

from schemas import ids


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
