"""The ClickHouse sink on the real broker and the embedded ClickHouse engine (chDB)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from confluent_kafka import TopicPartition

from drops import kafka
from drops.settings import Settings
from sinks.service import Sink, SinkThread
from sinks.testdata import DropWriter, close_of, make_drop, make_stats
from store import tables
from store.clickhouse import ClickHouse, prepare

pytestmark = pytest.mark.kafka


@pytest.fixture
def ch(kafka_settings: Settings) -> Iterator[ClickHouse]:
    c = prepare(kafka_settings)
    yield c
    c.close()


def run_until(sink: Sink, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sink.step()
        if cond():
            return
    raise AssertionError("condition not reached")


def count(ch: ClickHouse, sql: str) -> int:
    return int(ch.query(sql)[0][0])


def test_migrations_are_idempotent_and_retention_follows_settings(
    kafka_settings: Settings, ch: ClickHouse
) -> None:
    assert ch.migrate(400, {"nyc": "America/New_York"}) == []
    assert ch.migrate(30, {"nyc": "America/New_York"}) == []
    versions = ch.query(
        "SELECT version, count() FROM schema_migrations GROUP BY version ORDER BY version"
    )
    assert versions == [(m.version, 1) for m in tables.MIGRATIONS]  # each applied once
    ddl = ch.query("SELECT engine_full FROM system.tables WHERE name = 'drop_events'")[0][0]
    assert "toIntervalDay(30)" in ddl
    # the delivery log too: a row older than the retention goes at the next merge
    ddl = ch.query("SELECT engine_full FROM system.tables WHERE name = 'alert_deliveries'")[0][0]
    assert "toIntervalDay(30)" in ddl
    ch.command(
        "INSERT INTO alert_deliveries (alert_id, channel, watch_id, at) VALUES "
        "('old', 0, 'w', now64(3) - INTERVAL 31 DAY), ('new', 0, 'w', now64(3))"
    )
    ch.command("OPTIMIZE TABLE alert_deliveries FINAL")
    assert ch.query("SELECT alert_id FROM alert_deliveries") == [("new",)]
    views = {r[0] for r in ch.query("SELECT name FROM system.tables WHERE engine = 'View'")}
    assert {"drops_per_venue_day", "drop_open_time", "venue_rarity", "drops_by_hour"} <= views


def test_sink_stores_drops_closes_stats_and_venues(
    kafka_settings: Settings, ch: ClickHouse
) -> None:
    w = DropWriter(kafka_settings)
    opens = [make_drop(i) for i in range(20)]
    opens[3] = replace(opens[3], read_via="fallback")
    w.write(opens[:10])
    w.write([*opens[10:], close_of(opens[0], opens[0].opened_at_ms + 90000)])
    w.write_stats([make_stats(), make_stats(kind="baseline", slots=300)])
    sink = Sink(kafka_settings, ch)
    try:
        run_until(
            sink,
            lambda: (
                count(ch, "SELECT count() FROM drop_events") == 21
                and count(ch, "SELECT count() FROM discovery_buckets") == 2
            ),
        )
    finally:
        sink.close()
    rows = ch.query(
        "SELECT event, kafka_partition, kafka_offset, open_seconds FROM drop_events "
        "ORDER BY kafka_offset"
    )
    offsets = [r[2] for r in rows]
    assert offsets == sorted(set(offsets))  # one row per record, each at its own offset
    assert rows[-1][0] == "close" and rows[-1][3] == pytest.approx(90.0)
    got = {r[0] for r in ch.query("SELECT dedupe_key FROM drop_events WHERE event = 'open'")}
    assert got == {e.dedupe_key for e in opens}
    assert count(ch, "SELECT count() FROM venues FINAL") == len({e.venue_id for e in opens})
    prog = ch.progress(kafka_settings.topics.drops)
    assert prog[0] >= max(offsets)
    assert count(ch, "SELECT sum(drops) FROM drops_per_venue_day") == 20
    med = ch.query("SELECT median_open_seconds FROM drop_open_time")
    assert med == [(90.0,)]
    via = ch.query("SELECT read_via, count() FROM drop_events GROUP BY read_via ORDER BY 1")
    assert via == [("fallback", 1), ("search", 20)]
    # the booking page in its column (migration 9), for the open and for its close
    links = ch.query(
        "SELECT event, venue_slug, venue_city, booking_url FROM drop_events "
        "WHERE slot_id = %(s)s ORDER BY kafka_offset",
        {"s": opens[0].slot_id},
    )
    assert opens[0].booking_url.startswith("https://resy.com/cities/new-york-ny/venues/")
    assert links == [
        (e, opens[0].venue_slug, "new-york-ny", opens[0].booking_url) for e in ("open", "close")
    ]
    w.close()


def test_replay_and_crash_leave_no_duplicate(kafka_settings: Settings, ch: ClickHouse) -> None:
    w = DropWriter(kafka_settings)
    opens = [make_drop(i) for i in range(30)]
    w.write(opens)
    first = Sink(kafka_settings, ch)
    # a crash after the insert, before the offset commit: store without committing
    run_until(first, lambda: count(ch, "SELECT count() FROM drop_events") == 30)
    first.consumer.commit(
        offsets=[TopicPartition(kafka_settings.topics.drops, 0, 0)], asynchronous=False
    )
    first.close()
    # the same drops written again by a restarted processor (new offsets, same dedupe keys)
    w.write([*opens[:5], make_drop(100)])
    again = Sink(kafka_settings, ch)  # same group: resumes from offset 0, replays everything
    try:
        run_until(again, lambda: again.totals.skipped >= 35)
    finally:
        again.close()
    # a full replay of the topic by a new consumer group
    replay = Sink(kafka_settings.model_copy(update={"sink_group": "replay-" + w.s.sink.group}), ch)
    try:
        run_until(replay, lambda: replay.totals.skipped >= 36)
    finally:
        replay.close()
    assert count(ch, "SELECT count() FROM drop_events") == 31
    assert count(ch, "SELECT count() - uniqExact(dedupe_key) FROM drop_events") == 0
    w.close()


def test_bad_records_go_to_the_deadletter_topic(kafka_settings: Settings, ch: ClickHouse) -> None:
    w = DropWriter(kafka_settings)
    w.write_raw([b"not json", b'{"v": 1, "event": "open"}'])
    w.write([make_drop(1)])
    sink = Sink(kafka_settings, ch)
    try:
        run_until(sink, lambda: count(ch, "SELECT count() FROM drop_events") == 1)
    finally:
        sink.close()
    c = kafka.consumer(
        kafka_settings,
        {
            "group.id": "dlq-check",
            "auto.offset.reset": "earliest",
        },
    )
    c.subscribe([kafka_settings.topics.deadletter])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 2 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.value(), dict(m.headers() or [])))
    c.close()
    assert [v for v, _ in got] == [b"not json", b'{"v": 1, "event": "open"}']
    assert b"not JSON" in got[0][1]["error"]
    assert b"missing field 'dedupe_key'" in got[1][1]["error"]
    w.close()


def test_backpressure_while_clickhouse_fails_loses_nothing(
    kafka_settings: Settings, ch: ClickHouse
) -> None:
    w = DropWriter(kafka_settings)
    w.write([make_drop(i) for i in range(5)])
    st = SinkThread(kafka_settings, ch).start()
    try:
        deadline = time.monotonic() + 30
        while count(ch, "SELECT count() FROM drop_events") < 5:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ch.command("DETACH TABLE drop_events")  # ClickHouse "unavailable" for our inserts
        w.write([make_drop(i) for i in range(5, 40)])
        deadline = time.monotonic() + 30
        while not st.sink.paused:
            assert time.monotonic() < deadline, "sink did not pause"
            time.sleep(0.05)
        ch.command("ATTACH TABLE drop_events")
        deadline = time.monotonic() + 60
        while count(ch, "SELECT count() FROM drop_events") < 40:
            assert time.monotonic() < deadline, "sink did not resume"
            time.sleep(0.1)
        time.sleep(0.5)
        assert count(ch, "SELECT count() FROM drop_events") == 40
        assert count(ch, "SELECT uniqExact(kafka_offset) FROM drop_events") == 40
        assert not st.sink.paused
    finally:
        st.close()
    assert st.error is None
    w.close()
