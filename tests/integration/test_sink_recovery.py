"""The sink rides out Kafka trouble: a failed offset commit loses nothing and repeats
nothing, and the in-process sink thread replaces a sink that failed instead of dying (a long
chaos run found a sink thread dead after a broker restart: "Commit failed: Unknown member")."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from drops.settings import Settings
from sinks.service import Sink, SinkThread
from sinks.testdata import DropWriter, make_drop
from store.clickhouse import ClickHouse, prepare

pytestmark = pytest.mark.kafka


@pytest.fixture
def ch(kafka_settings: Settings) -> Iterator[ClickHouse]:
    c = prepare(kafka_settings)
    yield c
    c.close()


def rows(ch: ClickHouse) -> int:
    return int(ch.query("SELECT count() FROM drop_events")[0][0])


def wait(cond: Callable[[], bool], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


class CommitFailsOnce:
    """The sink's consumer, except that its first commit fails as after a rebalance."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self.failures = 0

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failures:
            self.failures += 1
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID))
        return self._consumer.commit(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def test_a_failed_commit_loses_and_repeats_nothing(
    kafka_settings: Settings, ch: ClickHouse
) -> None:
    writer = DropWriter(kafka_settings)
    writer.write([make_drop(i) for i in range(10)])
    sink = Sink(kafka_settings, ch)
    flaky = CommitFailsOnce(sink.consumer)
    sink.consumer = flaky
    try:
        deadline = time.monotonic() + 30
        while rows(ch) < 10 and time.monotonic() < deadline:
            sink.step()
        assert flaky.failures == 1
    finally:
        sink.close()
    writer.write([make_drop(i) for i in range(10, 13)])
    again = Sink(kafka_settings, ch)  # the uncommitted records come again: skipped
    try:
        deadline = time.monotonic() + 30
        while rows(ch) < 13 and time.monotonic() < deadline:
            again.step()
    finally:
        again.close()
        writer.close()
    assert rows(ch) == 13
    keys = ch.query("SELECT dedupe_key, count() FROM drop_events GROUP BY dedupe_key")
    assert all(n == 1 for _, n in keys)


def test_the_sink_thread_replaces_a_failed_sink(kafka_settings: Settings, ch: ClickHouse) -> None:
    writer = DropWriter(kafka_settings)
    writer.write([make_drop(i) for i in range(5)])
    thread = SinkThread(kafka_settings, ch)
    first = thread.sink

    def broken() -> None:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    first.step = broken  # type: ignore[method-assign,assignment]
    thread.start()
    try:
        wait(lambda: rows(ch) == 5)
        assert thread.restarts == 1 and thread.sink is not first
        assert thread.alive
        writer.write([make_drop(i) for i in range(5, 8)])
        wait(lambda: rows(ch) == 8)
    finally:
        thread.close()
        writer.close()
    assert not thread.thread.is_alive()
