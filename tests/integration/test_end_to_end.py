"""The whole pipeline on the real broker and the embedded ClickHouse engine, every stage a
real ``drops`` subprocess: simulator → producer → Kafka → processor → Kafka → sink →
ClickHouse → API. The test scripts slot changes in the simulator and checks that exactly the
expected drops come out of ``/feed`` and ``/feed/stream``: none missing, none extra."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from bench.pipeline import (
    BEGINNING,
    Pipeline,
    feed_items,
    free_port,
    read_topic,
    sse_events,
    wait_for,
)
from bench.processor_harness import read_all
from domain.calendar import window
from drops.settings import Settings
from schemas import SnapshotView, decode_snapshot, slot_id
from simulator.control import SimControl

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.clock]


def free_time(sim: SimControl, date: str, time_slot: str, venue: int, candidates: list[str]) -> str:
    taken = {(s["venue_id"], s["actual_time"]) for s in sim.slots(date, time_slot)}
    for hhmm in candidates:
        actual = f"{date} {hhmm}:00"
        if (str(venue), actual) not in {(str(v), t) for v, t in taken}:
            return actual
    raise AssertionError("no free start time in the candidates")


def wait_first_fetches(pipeline: Pipeline, settings: Settings) -> None:
    """Until every bucket's first fetch is written: the processor has never seen these
    streams, so each one's first snapshot is its baseline (and the later ones come after it
    in the stream's partition)."""

    def fetched() -> bool:
        pipeline.check_alive()
        stats = read_topic(settings, settings.topics.stats, timeout=2)
        return len({s["bucket_id"] for s in stats}) >= 28

    wait_for("a first fetch of the 28 buckets", fetched, timeout=120, every=1)


def e2e_settings(kafka_settings: Settings) -> Settings:
    sim_port, api_port = free_port(), free_port()
    return kafka_settings.model_copy(
        update={
            "sim_port": sim_port,
            "sim_scripted": True,
            "sim_venues": 40,
            "resy_url": f"http://127.0.0.1:{sim_port}",
            "api_port": api_port,
            "poll_interval": 1.0,
            "commit_interval": 0.5,
            "log_format": "json",
            "max_retries": 1,
        }
    )


def test_scripted_changes_come_out_of_feed_and_stream_exactly(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = e2e_settings(kafka_settings)
    sim_port, api_port = settings.simulator.port, settings.api.port
    api = f"http://127.0.0.1:{api_port}"
    pipeline = Pipeline(settings, tmp_path / "logs")
    try:
        pipeline.start("simulator", "simulate")
        sim = SimControl(f"http://127.0.0.1:{sim_port}")
        sim.wait_ready()
        pipeline.start("api", "api", "--with-sink")
        wait_for("the API", lambda: httpx.get(f"{api}/healthz").status_code == 200)
        pipeline.start("processor", "process")
        pipeline.start("producer", "produce")

        wait_first_fetches(pipeline, settings)

        tz = ZoneInfo(settings.market.time_zone)
        buckets = window(settings.clock().now(), settings.market.name, tz)  # the stages' clock
        b0, b1 = buckets[2], buckets[5]  # tomorrow 15:00, the day after 19:00
        venues = [int(v["id"]) for v in sim.venues("resy")]
        opened = [
            (
                venues[0],
                b0,
                free_time(sim, str(b0.date), b0.time_slot, venues[0], ["14:10", "14:25", "14:40"]),
            ),
            (
                venues[1],
                b0,
                free_time(sim, str(b0.date), b0.time_slot, venues[1], ["16:40", "16:25", "16:10"]),
            ),
            (
                venues[2],
                b1,
                free_time(sim, str(b1.date), b1.time_slot, venues[2], ["18:20", "18:35", "18:50"]),
            ),
        ]
        # faults on the way: a failed or truncated fetch must never produce a false drop
        sim.fault("5xx", count=6)
        sim.fault("truncated", count=4)
        baseline_slot = sim.slots(str(b1.date), b1.time_slot)[0]
        sim.close("resy", baseline_slot["venue_id"], baseline_slot["actual_time"])
        for venue, _, actual in opened:
            sim.open("resy", venue, actual)
        expected = {slot_id("resy", str(v), actual) for v, _, actual in opened}

        def all_dropped() -> list[dict[str, Any]] | None:
            pipeline.check_alive()
            items = feed_items(api)
            return items if {i["slot_id"] for i in items} >= expected else None

        wait_for("the three drops in /feed", all_dropped, timeout=90, every=1)
        time.sleep(6)  # several more polls, with faults: nothing else may appear
        items = feed_items(api)
        assert sorted(i["slot_id"] for i in items) == sorted(expected)
        assert {i["event"] for i in items} == {"open"}
        by_slot = {i["slot_id"]: i for i in items}
        for venue, bucket, actual in opened:
            item = by_slot[slot_id("resy", str(venue), actual)]
            assert item["bucket_id"] == bucket.bucket_id
            assert item["actual_time"] == actual
            assert item["venue_id"] == str(venue)
            assert item["venue_name"]

        # the same drops from the SSE stream, from the beginning of the log
        events = list(
            sse_events(
                f"{api}/feed/stream?since={BEGINNING}",
                until=lambda evs: sum(e.get("event") != "ready" for e in evs) >= 3,
            )
        )
        drops = [e for e in events if e.get("event") != "ready"]
        assert sorted(orjson.loads(e["data"])["slot_id"] for e in drops) == sorted(expected)

        # a reconnect with Last-Event-ID resumes right after it: no gap, no repeat
        resumed = list(
            sse_events(
                f"{api}/feed/stream",
                headers={"Last-Event-ID": drops[0]["id"]},
                until=lambda evs: sum(e.get("event") != "ready" for e in evs) >= 2,
            )
        )
        rest = [orjson.loads(e["data"])["slot_id"] for e in resumed if e.get("event") != "ready"]
        assert rest == [orjson.loads(e["data"])["slot_id"] for e in drops[1:]]

        # a reported slot that closes again comes out as a close with its time open
        venue, _, actual = opened[0]
        sim.close("resy", venue, actual)

        def closed() -> list[dict[str, Any]] | None:
            found = [i for i in feed_items(api) if i["event"] == "close"]
            return found or None

        closes = wait_for("the close event", closed, timeout=60, every=1)
        assert [c["slot_id"] for c in closes] == [slot_id("resy", str(venue), actual)]
        assert closes[0]["open_seconds"] >= 0

        # the drops topic holds exactly the same records for other services
        on_topic = read_topic(settings, settings.topics.drops)
        assert sorted((r["event"], r["slot_id"]) for r in on_topic) == sorted(
            [("open", s) for s in expected] + [("close", closes[0]["slot_id"])]
        )
        pipeline.check_alive()
    finally:
        pipeline.stop_all()


def complete_polls(settings: Settings, key: str) -> list[int]:
    """The event times of the stream's snapshots on the topic whose every part arrived and
    said complete (the processor's "last complete poll")."""
    parts: dict[str, list[SnapshotView]] = {}
    for k, value, _ in read_all(settings, settings.topics.snapshots):
        if k == key.encode():
            snap = decode_snapshot(value)
            parts.setdefault(snap.snapshot_id, []).append(snap)
    return sorted(
        ps[0].polled_at_ms
        for ps in parts.values()
        if ps[0].kind in ("poll", "baseline")
        and sorted(p.part for p in ps) == list(range(ps[0].parts))
        and all(p.complete for p in ps)
    )


def test_a_producer_restart_reports_the_gap_and_keeps_the_baseline(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """kill -9 of the producer, down for a while: a slot opened meanwhile is reported after the
    restart, opened after the last poll before the gap; a slot of the baseline closed across
    the restart and open again later is not reported (the baseline is the processor's)."""
    settings = e2e_settings(kafka_settings)
    api = f"http://127.0.0.1:{settings.api.port}"
    pipeline = Pipeline(settings, tmp_path / "logs")
    try:
        pipeline.start("simulator", "simulate")
        sim = SimControl(f"http://127.0.0.1:{settings.simulator.port}")
        sim.wait_ready()
        pipeline.start("api", "api", "--with-sink")
        wait_for("the API", lambda: httpx.get(f"{api}/healthz").status_code == 200)
        pipeline.start("processor", "process")
        pipeline.start("producer", "produce")
        wait_first_fetches(pipeline, settings)
        time.sleep(3)  # a few polls of every bucket

        tz = ZoneInfo(settings.market.time_zone)
        buckets = window(settings.clock().now(), settings.market.name, tz)
        b0, b1 = buckets[2], buckets[5]
        venue = int(sim.venues("resy")[0]["id"])
        base = sim.slots(str(b1.date), b1.time_slot)[0]  # open since the start: baseline
        sim.close("resy", base["venue_id"], base["actual_time"])
        time.sleep(4)  # polls see it closed
        pipeline.kill("producer")  # kill -9
        down_at = settings.clock().now_ms()  # the stages' clock, as the polls' times
        actual = free_time(sim, str(b0.date), b0.time_slot, venue, ["14:10", "14:25", "14:40"])
        new = slot_id("resy", str(venue), actual)
        sim.open("resy", venue, actual)  # opens while the producer is down
        time.sleep(12)  # down for a while (12 poll intervals)
        pipeline.start("producer", "produce")

        def reported() -> list[dict[str, Any]] | None:
            pipeline.check_alive()
            items = [i for i in feed_items(api) if i["slot_id"] == new]
            return items or None

        (item,) = wait_for("the slot opened during the gap", reported, timeout=90, every=1)
        assert item["event"] == "open" and item["bucket_id"] == b0.bucket_id
        before = [t for t in complete_polls(settings, f"{b0.bucket_id}/resy") if t < down_at]
        assert item["opened_after_ms"] == before[-1]  # the last poll before the gap
        assert item["opened_at_ms"] - item["opened_after_ms"] >= 12_000

        # the baseline slot comes back after the restart: it was there when the bucket entered
        # the window, so it is no drop
        sim.open("resy", base["venue_id"], base["actual_time"])
        time.sleep(6)  # several polls
        pipeline.check_alive()
        items = feed_items(api)
        assert [(i["event"], i["slot_id"]) for i in items] == [("open", new)]
        # the producer's start and restart sent polls, no baseline build (those are for
        # buckets entering the window at the slide)
        stats = read_topic(settings, settings.topics.stats)
        ours = {b0.bucket_id, b1.bucket_id}
        assert {s["kind"] for s in stats if s["bucket_id"] in ours} == {"poll"}
    finally:
        pipeline.stop_all()
