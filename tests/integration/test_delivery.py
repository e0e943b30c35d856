"""Matcher and delivery worker as real processes, with a real HTTP receiver for the signed
webhooks and for Apprise's json:// channel: delivered once with a valid signature, retried,
dead-lettered, closes, deleted watches, and kill -9 of the delivery worker mid-run."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bench.pipeline import Pipeline, read_topic, wait_for
from delivery.worker import IDEMPOTENCY_HEADER, verify
from domain.watches import alert_id
from drops import kafka
from drops.settings import Settings
from sinks.service import Sink, prepare
from sinks.testdata import DropWriter, close_of, make_drop
from tests.integration.test_matcher import NOW, Watches

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
SECRET = "k" * 32


class Receiver:
    """A real HTTP server: ``/fail<N>/...`` answers 500 to the first N posts of each
    idempotency key, ``/down`` always 500, anything else 200; every request is recorded."""

    def __init__(self, delay: float = 0.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.delay = delay
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items()}
                key = headers.get(IDEMPOTENCY_HEADER, "")
                with recv.lock:
                    tries = sum(
                        1 for r in recv.requests if r["path"] == self.path and r["key"] == key
                    )
                    code = 200
                    if self.path == "/down":
                        code = 500
                    elif self.path.startswith("/fail"):
                        code = 500 if tries < int(self.path.split("/")[1][4:]) else 200
                if recv.delay:
                    time.sleep(recv.delay)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with recv.lock:
                    recv.requests.append(
                        {
                            "path": self.path,
                            "key": key,
                            "headers": headers,
                            "body": body,
                            "code": code,
                            "at": time.monotonic(),
                        }
                    )

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def got(self, path: str, code: int = 200) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path and r["code"] == code]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def fast(s: Settings, **kw: Any) -> Settings:
    return s.model_copy(
        update={
            "delivery_backoff": 0.05,
            "delivery_backoff_max": 0.3,
            "delivery_attempts": 4,
            "delivery_rate": 1000.0,
            "commit_interval": 0.5,
            **kw,
        }
    )


def hook(url: str) -> dict[str, str]:
    return {"type": "webhook", "url": url}


def test_delivered_once_signed_retried_dead_and_closes(
    kafka_settings: Settings, tmp_path: Path, receiver: Receiver
) -> None:
    s = fast(kafka_settings)
    watches, writer = Watches(s), DropWriter(s)
    r = receiver.url
    watches.put("ok", venue_ids=["1001"], channels=[hook(r + "/ok")])
    watches.put("flaky", venue_ids=["1001"], channels=[hook(r + "/fail2/x")])
    watches.put("down", venue_ids=["1001"], channels=[hook(r + "/down")])
    watches.put(
        "apprise",
        closes=True,
        venue_ids=["1001"],
        channels=[{"type": "apprise", "url": "json" + r[4:] + "/apprise"}],
    )
    watches.put("other", venue_ids=["1002"], channels=[hook(r + "/other")])
    watches.put("gone", venue_ids=["1001"], channels=[hook(r + "/gone")])
    watches.delete("gone")
    pipe = Pipeline(s, tmp_path / "logs")
    pipe.start("matcher", "match")
    pipe.start("delivery", "deliver")
    try:
        d1 = make_drop(1, opened_at_ms=NOW)  # venue 1001
        writer.write([d1, make_drop(3, opened_at_ms=NOW)])
        wait_for("deliveries", lambda: len(read_topic(s, s.topics.deliveries)) >= 4 or None)
        # the matching drop, once, with a valid signature
        [ok] = receiver.got("/ok")
        assert verify(SECRET, ok["headers"], ok["body"], time.time())
        assert not verify("x" * 32, ok["headers"], ok["body"], time.time())
        assert not verify(SECRET, ok["headers"], ok["body"] + b" ", time.time())
        body = json.loads(ok["body"])
        assert body["alert_id"] == ok["key"] == alert_id("ok", d1.dedupe_key)
        assert body["drop"]["slot_id"] == d1.slot_id and "secret" not in body
        assert body["local_time"] == "Tue 1 Dec, 6:00 pm" and body["booking_url"] == d1.booking_url
        # failed twice, then once accepted (same idempotency key each time)
        assert len(receiver.got("/fail2/x", 500)) == 2
        assert [x["key"] for x in receiver.got("/fail2/x")] == [alert_id("flaky", d1.dedupe_key)]
        # Apprise's json:// channel
        [ap] = receiver.got("/apprise")
        assert json.loads(ap["body"])["title"].startswith("Venue 1001: ")
        assert ap["key"] == alert_id("apprise", d1.dedupe_key)  # the idempotency key header
        # non-matching and deleted watches: nothing
        assert receiver.got("/other") == [] and receiver.got("/gone") == []
        wait_for("dead letter", lambda: len(read_topic(s, s.topics.deliveries)) >= 4 or None)
        log = {d["watch_id"]: d for d in read_topic(s, s.topics.deliveries)}
        assert log["ok"]["status"] == "delivered" and log["ok"]["attempts"] == 1
        assert log["flaky"]["status"] == "delivered" and log["flaky"]["attempts"] == 3
        assert log["down"]["status"] == "dead" and log["down"]["attempts"] == 4
        assert log["down"]["error"] == "HTTP 500" and log["ok"]["latency_ms"] >= 0
        assert len(receiver.got("/down", 500)) == 4
        assert log["ok"]["target"] == r + "/ok"
        # a close reaches the watch that asked for closes, and only it
        writer.write([close_of(d1, NOW + 120_000)])
        wait_for("the close", lambda: len(receiver.got("/apprise")) == 2 or None)
        close = receiver.got("/apprise")[1]
        assert "gone again" in json.loads(close["body"])["title"]
        assert close["key"] == alert_id("apprise", close_of(d1, NOW + 120_000).dedupe_key)
        time.sleep(2)
        assert len(receiver.got("/ok")) == 1
        pipe.check_alive()
    finally:
        pipe.stop_all()
        writer.close()
    # the delivery log's ClickHouse copy (the sink loads the deliveries topic)
    ch = prepare(s)
    sink = Sink(s, ch)
    try:
        sql = "SELECT watch_id, status, attempts FROM alert_deliveries FINAL ORDER BY watch_id"
        deadline = time.monotonic() + 60
        while len(ch.query(sql)) < 5 and time.monotonic() < deadline:
            sink.step()
        assert ch.query(sql) == [
            ("apprise", "delivered", 1),
            ("apprise", "delivered", 1),
            ("down", "dead", 4),
            ("flaky", "delivered", 3),
            ("ok", "delivered", 1),
        ]
    finally:
        sink.close()
        ch.close()


def test_kill_9_of_the_delivery_worker_loses_nothing_and_resends_nothing_logged(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    receiver = Receiver(delay=0.05)
    s = fast(kafka_settings, delivery_concurrency=4)
    watches, writer = Watches(s), DropWriter(s)
    for v in range(5):
        watches.put(f"v{v}", venue_ids=[str(1000 + v)], channels=[hook(receiver.url + "/hook")])
    pipe = Pipeline(s, tmp_path / "logs")
    pipe.start("matcher", "match")
    pipe.start("delivery", "deliver")
    try:
        sent = [make_drop(n, opened_at_ms=NOW) for n in range(1000)]  # 100 alerts
        writer.write(sent)
        expected = {
            alert_id(f"v{int(d.venue_id) - 1000}", d.dedupe_key)
            for d in sent
            if int(d.venue_id) < 1005
        }
        assert len(expected) == 100
        logged_before: set[str] = set()
        for _ in range(2):
            floor = len(receiver.got("/hook")) + 10
            wait_for("some deliveries", lambda f=floor: len(receiver.got("/hook")) > f or None)
            pipe.kill("delivery")
            killed_at = time.monotonic()
            logged_before = {d["alert_id"] for d in read_topic(s, s.topics.deliveries)}
            pipe.start("delivery", "deliver")
        wait_for(
            "every alert",
            lambda: {r["key"] for r in receiver.got("/hook")} >= expected or None,
            timeout=120,
        )
        time.sleep(2)
        got = receiver.got("/hook")
        assert {r["key"] for r in got} == expected  # none lost, none invented
        # an alert logged as delivered before the last kill is never sent again after it
        assert not [r for r in got if r["key"] in logged_before and r["at"] > killed_at]
        # a repeat happens only to a send under way at a kill (at most the sends in flight),
        # with the same idempotency key
        repeats = sum(n - 1 for n in Counter(r["key"] for r in got).values())
        print(f"repeats after two kills: {repeats}")
        assert repeats <= 2 * s.delivery.concurrency
        log = read_topic(s, s.topics.deliveries)
        assert {d["alert_id"] for d in log} == expected
        pipe.check_alive()
    finally:
        pipe.stop_all()
        writer.close()
        receiver.close()


def test_two_workers_share_the_alerts_and_a_kill_9_and_rebalances_repeat_nothing(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """Two delivery replicas in one group on the alerts topic's partitions; one is killed -9
    mid-run (the other takes its partitions), then started again (a rebalance while both
    are busy: the partitions are handed over with their sends finished and committed). Every
    alert arrives; a repeat is only a send under way at the kill (same idempotency key)."""
    receiver = Receiver(delay=0.1)
    s = fast(kafka_settings, delivery_concurrency=4, delivery_metrics_port=0)
    assert s.topics.alerts_partitions > 1
    watches, writer = Watches(s), DropWriter(s)
    for v in range(20):
        watches.put(f"v{v}", venue_ids=[str(1000 + v)], channels=[hook(receiver.url + "/hook")])
    pipe = Pipeline(s, tmp_path / "logs")
    pipe.start("matcher", "match")
    pipe.start("delivery-a", "deliver")
    pipe.start("delivery-b", "deliver")
    try:
        sent = [make_drop(n, opened_at_ms=NOW) for n in range(600)]  # 240 alerts
        writer.write(sent)
        expected = {
            alert_id(f"v{int(d.venue_id) - 1000}", d.dedupe_key)
            for d in sent
            if int(d.venue_id) < 1020
        }
        assert len(expected) == 240
        wait_for("some deliveries", lambda: len(receiver.got("/hook")) > 40 or None)
        pipe.kill("delivery-a")
        killed_at = time.monotonic()
        floor = len(receiver.got("/hook")) + 40
        wait_for("b at work alone", lambda: len(receiver.got("/hook")) > floor or None, 90)
        pipe.start("delivery-a", "deliver")  # a rebalance while b is busy
        wait_for(
            "every alert",
            lambda: {r["key"] for r in receiver.got("/hook")} >= expected or None,
            timeout=180,
        )
        time.sleep(3)
        got = receiver.got("/hook")
        assert {r["key"] for r in got} == expected  # none lost, none invented
        counts = Counter(r["key"] for r in got)
        repeated = {k for k, n in counts.items() if n > 1}
        first = {k: min(r["at"] for r in got if r["key"] == k) for k in repeated}
        print(f"repeats: {sum(counts[k] - 1 for k in repeated)}")
        # only sends under way at the kill (answered by then, at most the killed one's
        # sends in flight), never one of the hand-over at the rebalance
        assert len(repeated) <= s.delivery.concurrency
        assert all(at <= killed_at + 1.0 for at in first.values()), first
        assert all(counts[k] == 2 for k in repeated)
        assert "delivery_partitions_revoked" in pipe.log_tail("delivery-b", 200_000)
        assert "delivery_partitions_assigned" in pipe.log_tail("delivery-a", 200_000)
        pipe.check_alive()
    finally:
        pipe.stop_all()
        writer.close()
        receiver.close()


def test_the_delivery_log_held_is_its_last_hours_only(kafka_settings: Settings) -> None:
    """What a worker keeps of the delivery log: records of the last
    DROPS_DELIVERY__LOG_KEEP_HOURS by their own time, then trimmed as time goes on; the topic
    is created with its retention."""
    from confluent_kafka.admin import ConfigResource

    from delivery.worker import SentLog
    from schemas.watches import Delivery, encode_record

    s = kafka_settings
    now = int(time.time() * 1000)  # the worker's clock, that writes the records' at_ms
    p = kafka.producer(s, {"acks": "all"})
    for aid, at in (("old", now - 3 * 3_600_000), ("recent", now - 60_000), ("new", now)):
        d = Delivery(
            alert_id=aid,
            watch_id="w",
            channel=0,
            channel_type="webhook",
            target="http://127.0.0.1:9/x",
            status="delivered",
            attempts=1,
            latency_ms=1,
            error="",
            at_ms=at,
        )
        p.produce(s.topics.deliveries, key=aid.encode(), value=encode_record(d))
    p.flush(10)
    log = SentLog(s, keep_ms=3_600_000)
    try:
        log.sync()
        assert set(log.sent) == {("recent", 0), ("new", 0)}
        log.trim(now + 3_600_000 - 30_000)  # half an hour on: "recent" is past the hour
        assert set(log.sent) == {("new", 0)} and log.trimmed == 2
    finally:
        log.close()
    admin = kafka.admin(s)
    res = ConfigResource("topic", s.topics.deliveries)
    cfg = admin.describe_configs([res])[res].result()
    assert int(cfg["retention.ms"].value) == int(s.delivery.log_retention_hours * 3_600_000)
