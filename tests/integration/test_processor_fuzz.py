"""Hostile snapshot records into the real processor: every record that cannot be decoded goes
to the dead-letter topic with its original bytes, the processor keeps running, and the
well-formed streams beside them still produce exactly the reference drops."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from bench.processor_harness import (
    ProcessorProc,
    as_events,
    drops,
    read_all,
    wait_processed,
    write,
)
from drops.settings import Settings
from schemas import SchemaError, decode_snapshot, encode
from tests.integration.reference import random_history, reference_events

pytestmark = pytest.mark.kafka

HOSTILE_KEY = b"nyc:2027-01-31:1900/resy"


def hostile_records(valid: list[bytes], seed: int, n: int) -> list[tuple[bytes | None, bytes]]:
    """Random bytes, truncations, bit flips, JSON of the wrong shape, absurd numbers."""
    rng = random.Random(seed)
    out: list[tuple[bytes | None, bytes]] = []
    shapes = [
        b"",
        b"null",
        b"[]",
        b'{"v": 1}',
        b'{"v": 99, "kind": "poll"}',
        orjson.dumps({"v": 1, "kind": "poll", "part": 10**18, "parts": 1}),
        b"\x00" * 64,
        b"\xff" * 3,
    ]
    for i in range(n):
        base = rng.choice(valid)
        choice = i % 5
        if choice == 0:
            data = rng.randbytes(rng.randint(1, 400))
        elif choice == 1:
            data = base[: rng.randrange(len(base))]
        elif choice == 2:
            flipped = bytearray(base)
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(len(flipped))
                flipped[pos] ^= 1 << rng.randrange(8)
            data = bytes(flipped)
        elif choice == 3:
            data = rng.choice(shapes)
        else:
            doc = {"v": 1, "kind": rng.choice(["poll", "baseline", 7]), "slots": "x" * 50}
            data = orjson.dumps(doc)
        out.append((rng.choice([HOSTILE_KEY, None, b"\xfe\xff"]), data))
    return out


def undecodable(data: bytes) -> bool:
    try:
        decode_snapshot(data)
    except SchemaError:
        return True
    return False


def test_hostile_records_are_dead_lettered_and_the_rest_is_exact(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = kafka_settings.model_copy(update={"commit_interval": 0.3, "seen_ttl": 600.0})
    history = random_history(seed=11, streams=3, polls=12)
    valid = [encode(s) for s in history]
    hostile = hostile_records(valid, seed=5, n=150)
    rng = random.Random(9)
    mixed: list[tuple[bytes | None, bytes]] = [
        (s.key.encode(), v) for s, v in zip(history, valid, strict=True)
    ]
    for rec in hostile:  # interleave, keeping the valid records in order
        mixed.insert(rng.randrange(len(mixed) + 1), rec)

    proc = ProcessorProc(settings, tmp_path / "processor.log")
    try:
        write(settings, mixed)
        wait_processed(settings, proc, 120)
        assert proc.alive(), proc.log()[-3000:]
    finally:
        proc.stop()

    # the valid streams: exactly the reference, undisturbed by the noise
    valid_keys = {s.key for s in history}
    got = [d for d in drops(settings) if f"{d.bucket_id}/{d.provider}" in valid_keys]
    assert as_events(got) == reference_events(history, int(settings.processor.seen_ttl * 1000))

    # every hostile record that does not decode is in the dead-letter topic, bytes intact
    dead = [value for _, value, _ in read_all(settings, settings.topics.deadletter)]
    expected_dead = [data for _, data in hostile if undecodable(data)]
    assert len(expected_dead) > 100
    missing = [d for d in expected_dead if d not in dead]
    assert not missing, f"{len(missing)} undecodable records were not dead-lettered"
