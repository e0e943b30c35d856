"""Connected SSE clients across a restart of the API's live-tail consumer: the events written
while it was away reach them (from ClickHouse), then the live tail goes on, with no gap and
no repeat. Before: the new consumer started at the end of the topic and the clients jumped
from their position to the new ring base, skipping what lay between."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException

import api.hub
from drops import kafka
from drops.log import kafka_logger
from drops.settings import Settings
from sinks.testdata import DropWriter, make_drop
from tests.integration.test_api_feed import Server
from tests.integration.test_api_stream import SSE

pytestmark = pytest.mark.kafka


class Outage:
    """While ``hold`` is set, the live tail's consumer reads nothing; ``crash`` then makes it
    fail as in a broker outage, so the hub builds a new consumer."""

    hold = threading.Event()
    crash = threading.Event()
    crashes = 0


class FlakyConsumer(Consumer):  # type: ignore[misc]
    def consume(self, *args: Any, **kwargs: Any) -> Any:
        while Outage.hold.is_set():
            if Outage.crash.is_set():
                Outage.hold.clear()
                Outage.crash.clear()
                Outage.crashes += 1
                raise KafkaException(KafkaError(KafkaError._TRANSPORT))
            time.sleep(0.02)
        return super().consume(*args, **kwargs)


class FlakyKafka:
    """:mod:`drops.kafka` as the hub sees it: its live-tail consumer is a FlakyConsumer (the
    sink's and the watch store's consumers stay real)."""

    @staticmethod
    def consumer(settings: Settings, extra: dict[str, Any]) -> Consumer:
        return FlakyConsumer(kafka.client_config(settings, extra), logger=kafka_logger())


def stored(url: str) -> int:
    return len(httpx.get(url + "/feed", params={"limit": 1000}).json()["items"])


@pytest.mark.parametrize("filtered", [False, True])
def test_clients_connected_across_a_live_tail_restart_miss_nothing(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch, filtered: bool
) -> None:
    monkeypatch.setattr(api.hub, "kafka", FlakyKafka)
    w = DropWriter(kafka_settings)
    params = {"event": "open"} if filtered else None
    with Server(kafka_settings, with_sink=True) as srv:
        client = SSE(srv.url, params=params)
        client.ready()
        first = [make_drop(i) for i in range(2)]
        w.write(first)
        got = client.take(2)
        Outage.hold.set()
        away = [make_drop(i) for i in range(10, 15)]
        w.write(away)
        deadline = time.monotonic() + 30
        while stored(srv.url) < 7:
            assert time.monotonic() < deadline, "the sink did not store the drops"
            time.sleep(0.1)
        Outage.crash.set()
        deadline = time.monotonic() + 30
        while Outage.crashes < 1 or not srv.app.state.drops.hub.ready.is_set():
            assert time.monotonic() < deadline, "the live tail did not restart"
            time.sleep(0.05)
        time.sleep(0.3)
        after = [make_drop(20)]
        w.write(after)
        got += client.take(6)
        client.close()
    keys = [e["doc"]["dedupe_key"] for e in got]
    assert keys == [d.dedupe_key for d in [*first, *away, *after]]
    w.close()
