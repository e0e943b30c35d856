"""The alert matcher as a real process on the real broker: matches, non-matches, deleted
watches, closes, and kill -9 mid-run (read_committed: every alert once, none missing)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench.pipeline import Pipeline, read_topic, wait_for
from domain.watches import alert_id, slot_day_end_ms
from drops import kafka
from drops.settings import Settings
from schemas.watches import Channel, Criteria, Watch, encode_record
from sinks.testdata import DropWriter, close_of, make_drop

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

NOW = 1_796_000_000_000  # pinned event times (2026-11-30)


class Watches:
    """Writes watch records to the compacted topic as the API does (acks=all)."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.p = kafka.producer(s, {"acks": "all"})

    def put(
        self,
        wid: str,
        closes: bool = False,
        channels: list[dict[str, str]] | None = None,
        **criteria: Any,
    ) -> Watch:
        w = Watch(
            watch_id=wid,
            owner="local",
            secret="k" * 32,
            created_at_ms=NOW,
            updated_at_ms=NOW,
            closes=closes,
            channels=[
                Channel.model_validate(c)
                for c in channels or [{"type": "webhook", "url": "http://127.0.0.1:9/hook"}]
            ],
            criteria=Criteria(**criteria),
        )
        self.p.produce(self.s.topics.watches, key=wid.encode(), value=encode_record(w))
        self.p.flush(10)
        return w

    def delete(self, wid: str) -> None:
        self.p.produce(self.s.topics.watches, key=wid.encode(), value=None)
        self.p.flush(10)


def alerts(s: Settings) -> list[dict[str, Any]]:
    return read_topic(s, s.topics.alerts)


def at_least(s: Settings, n: int) -> list[dict[str, Any]]:
    return wait_for(f"{n} alerts", lambda: (lambda got: got if len(got) >= n else None)(alerts(s)))


def test_match_delete_and_closes(kafka_settings: Settings, tmp_path: Path) -> None:
    s = kafka_settings
    watches, writer = Watches(s), DropWriter(s)
    watches.put("venue", venue_ids=["1001"])
    watches.put("closes", closes=True, venue_ids=["1001", "1002"])
    watches.put("big-party", party_size=6)
    watches.put("gone", venue_ids=["1001"])
    watches.delete("gone")  # deleted before the drop: gets nothing
    pipe = Pipeline(s, tmp_path / "logs")
    pipe.start("matcher", "match")
    try:
        d1 = make_drop(1, opened_at_ms=NOW)  # venue 1001
        d3 = make_drop(3, opened_at_ms=NOW)  # venue 1003: no watch wants it
        writer.write([d1, d3])
        got = at_least(s, 2)
        assert sorted(a["watch_id"] for a in got) == ["closes", "venue"]
        a = next(x for x in got if x["watch_id"] == "venue")
        assert a["alert_id"] == alert_id("venue", d1.dedupe_key)
        assert a["kind"] == "open" and a["drop"]["slot_id"] == d1.slot_id
        assert a["booking_url"] == d1.booking_url and a["local_time"].startswith("Tue 1 Dec, ")
        # a watch deleted after the first drop hears nothing of the next one
        watches.delete("venue")
        d1b = make_drop(1, opened_at_ms=NOW, date="2026-12-02")
        writer.write([d1b, close_of(d1, NOW + 60_000)])
        at_least(s, 4)
        time.sleep(3)  # nothing more comes
        got = alerts(s)
        assert [(x["watch_id"], x["kind"], x["drop"]["slot_id"]) for x in got[2:]] == [
            ("closes", "open", d1b.slot_id),
            ("closes", "close", d1.slot_id),
        ]
        assert "gone again" in got[3]["title"]
        pipe.check_alive()
    finally:
        pipe.stop_all()
        writer.close()


def changelog(s: Settings) -> dict[bytes, bytes | None]:
    """The matcher's told-watches entries in its state changelog, last value per key (None:
    a tombstone)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    c = kafka.consumer(s, {"group.id": uuid.uuid4().hex})
    try:
        pre = f"changelog__{s.matcher.group}--"
        [topic] = [t for t in c.list_topics(timeout=10).topics if t.startswith(pre)]
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        _, end = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        out: dict[bytes, bytes | None] = {}
        deadline = time.monotonic() + 10
        while end and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            if b'|"o/' in m.key():  # (Quix keeps markers of its own there too)
                out[m.key()] = m.value()
            if m.offset() + 1 >= end:
                break
        return out
    finally:
        c.close()


def test_the_watches_told_of_an_open_are_forgotten_once_the_slots_date_has_passed(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """The open of a slot 4 s before its date ends (by the drop's own time): 6 s of the drops'
    event time later, its told watches are gone from the state (a changelog tombstone), and
    its close finds nobody to tell; a slot with days left is still told of its close."""
    s = kafka_settings
    watches, writer = Watches(s), DropWriter(s)
    watches.put("closes", closes=True, venue_ids=["1001", "1002"])
    pipe = Pipeline(s, tmp_path / "logs")
    pipe.start("matcher", "match")
    try:
        end = slot_day_end_ms("2026-12-01", "EST5EDT")
        late = make_drop(1, opened_at_ms=end - 4_000)  # venue 1001, its date ends in 4 s
        early = make_drop(2, opened_at_ms=NOW)  # venue 1002, a day and more left
        writer.write([late, early])
        at_least(s, 2)
        told = {k for k, v in changelog(s).items() if v is not None}
        assert len(told) == 2
        time.sleep(6)  # the drops' event time (record timestamps) moves on by 6 s ...
        later = make_drop(51, opened_at_ms=NOW)  # ... with the next drop: venue 1001 again
        writer.write([later])
        at_least(s, 3)
        writer.write([close_of(late, end + 2_000), close_of(early, NOW + 60_000)])
        at_least(s, 4)
        time.sleep(3)  # nothing more comes
        got = alerts(s)
        assert [(a["kind"], a["drop"]["slot_id"]) for a in got[3:]] == [("close", early.slot_id)]
        live = {k for k, v in changelog(s).items() if v is not None}
        assert len(live) == 1 and told - live  # the late slot's entry was deleted, the
        # early slot's too (by its close), and the later slot's is the one left
        pipe.check_alive()
    finally:
        pipe.stop_all()
        writer.close()


def test_kill_9_mid_run_loses_and_repeats_nothing(kafka_settings: Settings, tmp_path: Path) -> None:
    """Drops keep coming while the matcher is killed twice in the middle of its work (a
    commit interval of 2 s leaves alerts produced but not yet committed at each kill)."""
    s = kafka_settings.model_copy(update={"matcher_commit_interval": 2.0})
    watches, writer = Watches(s), DropWriter(s)
    for v in range(10):
        watches.put(f"v{v}", venue_ids=[str(1000 + v)])
    watches.put("hood", neighborhoods=["soho"])
    pipe = Pipeline(s, tmp_path / "logs")
    pipe.start("matcher", "match")
    sent: list[Any] = []
    stop = threading.Event()

    def feed() -> None:
        b = 0
        while not stop.is_set():
            batch = [make_drop(b * 20 + i, opened_at_ms=NOW + b) for i in range(20)]
            writer.write(batch)
            sent.extend(batch)
            b += 1
            time.sleep(0.1)

    try:
        writer.write([make_drop(10_000, opened_at_ms=NOW)])  # venue 1000: one alert
        sent.append(make_drop(10_000, opened_at_ms=NOW))
        wait_for("the matcher at work", lambda: alerts(s) or None)
        feeder = threading.Thread(target=feed)
        feeder.start()
        for _ in range(2):
            seen = len(alerts(s))
            wait_for("more alerts", lambda n=seen: len(alerts(s)) > n + 20 or None)
            time.sleep(1.3)  # inside a checkpoint
            pipe.kill("matcher")
            pipe.start("matcher", "match")
        stop.set()
        feeder.join()
        expected: Counter[str] = Counter()
        for d in sent:
            if int(d.venue_id) < 1010:
                expected[alert_id(f"v{int(d.venue_id) - 1000}", d.dedupe_key)] += 1
            if d.neighborhood == "SoHo":
                expected[alert_id("hood", d.dedupe_key)] += 1
        n = sum(expected.values())
        wait_for("every alert", lambda: len(alerts(s)) >= n or None, timeout=120)
        time.sleep(3)
        got = Counter(a["alert_id"] for a in alerts(s))
        assert got == expected, (
            f"missing {sum((expected - got).values())}, repeated {sum((got - expected).values())}"
        )
        pipe.check_alive()
    finally:
        stop.set()
        pipe.stop_all()
        writer.close()


def test_unreadable_drop_goes_to_the_dead_letters(kafka_settings: Settings, tmp_path: Path) -> None:
    s = kafka_settings
    watches, writer = Watches(s), DropWriter(s)
    watches.put("any")
    pipe = Pipeline(s, tmp_path / "logs")
    pipe.start("matcher", "match")
    try:
        writer.write_raw([b"{not json"])
        writer.write([make_drop(7, opened_at_ms=NOW)])
        wait_for("the alert", lambda: alerts(s) or None)
        dead = wait_for("a dead letter", lambda: _raw(s, s.topics.deadletter) or None)
        assert dead == [b"{not json"]
    finally:
        pipe.stop_all()
        writer.close()


def _raw(s: Settings, topic: str) -> list[bytes]:
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    c = kafka.consumer(s, {"group.id": uuid.uuid4().hex})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append(m.value())
    c.close()
    return out
