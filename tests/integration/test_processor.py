"""The processor on the real broker: snapshots in, exactly the reference's drops out."""

from __future__ import annotations

import random
import shutil
import struct
import threading
import time
from pathlib import Path

import orjson
import pytest

from bench.processor_harness import (
    ProcessorProc,
    as_events,
    committed,
    drops,
    headers_dict,
    producer,
    read_all,
    wait_processed,
    write,
)
from drops.settings import Settings
from schemas import Failure, Snapshot, encode
from tests.integration.reference import random_history, reference_events
from tests.unit.test_rule import UNIVERSE, snapshot


def write_paced(settings: Settings, hist: list[Snapshot], seconds: float) -> None:
    step = max(1, len(hist) // 40)
    p = producer(settings)
    for i in range(0, len(hist), step):
        write(settings, hist[i : i + step], p)
        time.sleep(seconds / 40)


def wait_some_progress(settings: Settings, proc: ProcessorProc, deadline_s: float) -> None:
    """Until this run (not a late commit of the one before) has committed something."""
    deadline = time.monotonic() + deadline_s
    while proc.log().count("processor_started") < proc.started:
        assert proc.alive() and time.monotonic() < deadline, proc.log()[-3000:]
        time.sleep(0.1)
    time.sleep(1.0)
    before = sum(max(0, o) for o in committed(settings).values())
    while time.monotonic() < deadline:
        if sum(max(0, o) for o in committed(settings).values()) > before:
            print(f"progress at {time.monotonic():.1f}: {committed(settings)}")
            return
        assert proc.alive(), proc.log()[-3000:]
        time.sleep(0.1)
    raise AssertionError("the processor made no progress")


pytestmark = pytest.mark.kafka

TTL_S = 7200.0


def S(*keys: tuple[int, int]) -> list:  # type: ignore[type-arg]
    return [UNIVERSE[k] for k in keys]


def other_bucket(snap: Snapshot) -> Snapshot:
    d = snap.to_dict()
    d.update(bucket_id="nyc:2026-12-02:1500", date="2026-12-02", time_slot="15:00")
    from schemas.records import snapshot_from_dict

    return snapshot_from_dict(orjson.loads(orjson.dumps(d)))


def history() -> list[Snapshot]:
    page = (Failure("page", "2", "429"),)
    a = [
        snapshot("a0", 1_000, S((0, 0), (0, 1), (1, 0)), kind="baseline"),
        snapshot("a1", 31_000, S((0, 0), (0, 1), (1, 0), (2, 2))),  # (2,2) opens
        snapshot("a2", 61_000, S((0, 0)), complete=False, failures=page),  # unknown, not closed
        snapshot("a3", 91_000, S((0, 0), (0, 1), (1, 0))),  # (2,2) closes
        snapshot("a4", 121_000, S((0, 0), (0, 1), (3, 3)), part=0, parts=2),  # (3,3) opens
        snapshot("a4", 121_000, S((1, 0), (4, 4)), part=1, parts=2),  # (4,4) opens
        # a baseline build for a stream that has one (a producer restarted after the slide):
        # diffed as a poll, (4,5) opens
        snapshot("a5", 131_000, S((0, 0), (0, 1), (1, 0), (4, 4), (4, 5)), kind="baseline"),
        snapshot("r", 135_000, [], kind="rebaseline"),  # an operator's: a6 is the baseline
        snapshot("a6", 141_000, S((0, 0), (0, 1), (1, 0), (4, 4), (4, 5), (2, 5))),
    ]
    b = [
        snapshot("b0", 2_000, S((1, 1))),  # a poll without a baseline: becomes the baseline
        snapshot("b1", 32_000, S((1, 1), (1, 2))),
        snapshot("b2", 33_000, [], kind="close"),  # the bucket leaves the window
        snapshot("b3", 62_000, S((1, 1), (1, 2), (1, 3))),  # a fresh stream: baseline again
        snapshot("b4", 92_000, S((1, 1), (1, 2), (1, 3), (2, 3))),
    ]
    b = [other_bucket(s) for s in b]
    return [x for pair in zip(a, b[: len(a)], strict=False) for x in pair] + a[len(b) :]


def with_bad_id(snap: Snapshot, row: int) -> bytes:
    """``snap`` as v2 bytes, the id of slot ``row`` not the hash of its payload."""
    data = bytearray(encode(snap))
    (n_head,) = struct.unpack_from("<I", data, 4)
    data[((28 + n_head + 7) & ~7) + 8 * row] ^= 0x5A
    return bytes(data)


def bad_records(settings: Settings) -> list[tuple[bytes | None, bytes]]:
    good = snapshot("x", 5, S())
    # a newer poll of bucket a with a new slot (3,0) whose id is not its hash: it would drop,
    # so its row is checked, and the whole record goes to the dead letters, changing nothing
    forged = snapshot("forged", 45_000, S((0, 0), (0, 1), (1, 0), (2, 2), (3, 0)))
    doc = good.to_dict()
    wrong_version = dict(doc, v=99)
    missing = {k: v for k, v in doc.items() if k != "polled_at_ms"}
    return [
        (good.key.encode(), b"{not json"),
        (good.key.encode(), orjson.dumps(wrong_version)),
        (good.key.encode(), orjson.dumps(missing)),
        (b"some-other-key", encode(good)),
        (None, b"\x00\x01"),
        (forged.key.encode(), with_bad_id(forged, 4)),
        (good.key.encode(), encode(good)[:-3]),  # v2, truncated
    ]


def test_snapshots_become_exactly_the_reference_drops(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = kafka_settings.model_copy(
        update={"commit_interval": 0.2, "seen_ttl": TTL_S, "heartbeat_interval": 1.0}
    )
    hist = history()
    bad = bad_records(settings)
    extra = snapshot("a7", 151_000, S((0, 0), (0, 1), (1, 0), (4, 4), (0, 5)), kind="poll")
    extra_dict = dict(extra.to_dict(), some_new_field={"x": 1})  # unknown fields: tolerated
    write(settings, [*hist[:4], *bad, *hist[4:], (extra.key.encode(), orjson.dumps(extra_dict))])
    proc = ProcessorProc(settings, tmp_path / "processor.log")
    try:
        wait_processed(settings, proc, 90)
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]
    got = drops(settings)
    expected = reference_events([*hist, extra], int(TTL_S * 1000))
    assert as_events(got) == expected
    assert len(expected) == 10  # the scenario is not vacuous
    opened = {(e[2], e[3]): e[5] for e in expected if e[0] == "open"}
    assert opened[UNIVERSE[4, 5].slot_id, 131_000] == 121_000  # opened after the last poll
    assert (UNIVERSE[2, 5].slot_id, 141_000) not in opened  # in the operator's new baseline
    for d in got:
        assert d.bucket_id in (hist[0].bucket_id, hist[1].bucket_id)
        assert d.venue_name.startswith("Venue ") and d.booking and d.time_zone == "EST5EDT"
    keys = {k for k, _, _ in read_all(settings, settings.topics.drops)}
    assert keys == {hist[0].bucket_id.encode(), hist[1].bucket_id.encode()}

    dead = read_all(settings, settings.topics.deadletter)
    assert sorted(v for _, v, _ in dead) == sorted(v for _, v in bad)  # the original bytes
    errors = {v: headers_dict(h)["error"].decode() for _, v, h in dead}
    assert "not JSON" in errors[bad[0][1]]
    assert "field 'v' is 99" in errors[bad[1][1]]
    assert "missing field 'polled_at_ms'" in errors[bad[2][1]]
    assert "stream key" in errors[bad[3][1]]
    assert "slots[4]: field 'slot_id'" in errors[bad[5][1]]
    assert "need" in errors[bad[6][1]]
    h = headers_dict(dead[0][2])
    assert h["source_topic"].decode() == settings.topics.snapshots
    assert int(h["source_offset"]) >= 0 and int(h["source_partition"]) >= 0
    log = proc.log()
    assert "processor_heartbeat" in log and "processor_stopped" in log


def test_kill_9_and_restart_lose_and_repeat_nothing(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """kill -9 mid-run twice (once keeping, once wiping the local state) and compare."""
    settings = kafka_settings.model_copy(update={"commit_interval": 0.3, "seen_ttl": 600.0})
    hist = random_history(seed=11, streams=6, polls=60)
    expected = reference_events(hist, 600_000)
    assert len(expected) > 100

    writer = threading.Thread(target=lambda: write_paced(settings, hist, seconds=10.0))
    writer.start()
    log = tmp_path / "processor.log"
    kills = 0
    for n, wipe in enumerate((False, True)):
        proc = ProcessorProc(settings, log)
        proc.started = n + 1
        wait_some_progress(settings, proc, 60)
        time.sleep(random.uniform(0.5, 1.5))
        proc.kill9()
        print(f"killed at {time.monotonic():.1f}, writer alive: {writer.is_alive()}")
        kills += 1
        if wipe:
            shutil.rmtree(settings.state_dir)  # recovery must rebuild it from the changelog
    writer.join()
    proc = ProcessorProc(settings, log)
    try:
        wait_processed(settings, proc, 120)
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]
    assert kills == 2
    assert as_events(drops(settings)) == expected


def test_drops_rebaseline_is_honoured_by_the_processor(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """`drops rebaseline --bucket` writes its marker into the stream's partition, in order with
    its snapshots: the next snapshot is the stream's new baseline, nothing of it drops."""
    import subprocess
    import sys

    from bench.pipeline import settings_env
    from producers import rebaseline

    settings = kafka_settings.model_copy(update={"commit_interval": 0.2})
    job = rebaseline.plan(settings, [], market=settings.market.name)[4][0]  # (not today's buckets)
    b = job.bucket

    def at(snap: Snapshot) -> Snapshot:
        d = snap.to_dict()
        d.update(bucket_id=b.bucket_id, date=b.date.isoformat(), time_slot=b.time_slot)
        from schemas.records import snapshot_from_dict

        return snapshot_from_dict(orjson.loads(orjson.dumps(d)))

    first = [snapshot("p1", 1_000, S((0, 0))), snapshot("p2", 2_000, S((0, 0), (1, 1)))]
    write(settings, [at(s) for s in first])
    cli = subprocess.run(
        [sys.executable, "-m", "shell.cli", "rebaseline", "--bucket", b.bucket_id],
        env=settings_env(settings),
        capture_output=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr.decode()[-2000:]
    assert orjson.loads(cli.stdout.splitlines()[-1]) == {"rebaseline": [job.key]}
    write(
        settings,
        [
            at(snapshot("p3", 3_000, S((0, 0), (1, 1), (2, 2)))),  # the new baseline
            at(snapshot("p4", 4_000, S((0, 0), (1, 1), (2, 2), (3, 3)))),
        ],
    )
    proc = ProcessorProc(settings, tmp_path / "processor.log")
    try:
        wait_processed(settings, proc, 90)
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]
    got = [(d.event, d.slot_id, d.opened_at_ms, d.opened_after_ms) for d in drops(settings)]
    assert got == [
        ("open", UNIVERSE[1, 1].slot_id, 2_000, 1_000),
        ("open", UNIVERSE[3, 3].slot_id, 4_000, 3_000),
    ]
