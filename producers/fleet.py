"""Producer replicas: which streams this replica polls, decided by Kafka's group membership.

Every replica joins one consumer group (``DROPS_PRODUCER__GROUP``) on a small assignment
topic (``DROPS_TOPICS__PRODUCERS``, ``DROPS_TOPICS__PRODUCERS_PARTITIONS`` partitions, no
records). Each of its partitions stands for the streams :func:`producers.core.stream_part`
maps to it, and the group's assignor (cooperative-sticky) splits the partitions between the
live replicas: no shard numbers, no lock of our own. A replica polls the streams of the
partitions it holds.

- **Fail-over**: a replica that dies stops heartbeating; after ``session.timeout.ms`` the
  coordinator rebalances and the survivors are assigned its partitions. The service starts
  the moved streams at once (not at its next cycle), so they are polled again within the
  session timeout plus a rebalance, which :func:`session_timeout_ms` keeps under one poll
  interval: within two poll intervals of the last poll by the dead replica.
- **No double polling**: cooperative rebalancing revokes a partition from its old owner
  (which stops scheduling its streams in the callback) before it is assigned to the new one;
  at most a fetch already in flight overlaps. A replica whose session is lost (cut off from
  the broker) is told so (``on_lost``) and stops too.
- **Budgets**: each replica takes (its partitions / all partitions) of every provider's
  concurrency and rate limits, so the fleet together stays within them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import TopicPartition

from drops import kafka
from drops.log import get_log
from drops.stages import ProducerSettings

log = get_log("producer.fleet")

MIN_SESSION_MS = 6_000  # the broker's default group.min.session.timeout.ms
MAX_SESSION_MS = 45_000  # the client's default


def session_timeout_ms(poll_interval_s: float) -> int:
    """A session short enough for fail-over within two poll intervals: about half an
    interval, within the broker's bounds (6-45 s). With intervals under ~12 s the 6 s floor
    makes fail-over take about 7 s."""
    return int(min(MAX_SESSION_MS, max(MIN_SESSION_MS, poll_interval_s * 500)))


OnChange = Callable[[frozenset[int]], None]


class Fleet:
    """This replica's membership: a thread that polls the group consumer and reports the
    partitions it holds to ``on_change`` (called from that thread)."""

    def __init__(
        self, settings: ProducerSettings, poll_interval_s: float, on_change: OnChange
    ) -> None:
        self.parts = settings.topics.producers_partitions
        self.topic = settings.topics.producers
        self.on_change = on_change
        self.held: set[int] = set()
        session = session_timeout_ms(poll_interval_s)
        self._consumer = kafka.consumer(
            settings,
            {
                "group.id": settings.producer.group,
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": session,
                "heartbeat.interval.ms": max(500, session // 5),
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
                "reconnect.backoff.max.ms": 1_000,
            },
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="producer-fleet")
        log.info("fleet_join", group=settings.producer.group, topic=self.topic,
                 partitions=self.parts, session_timeout_ms=session)  # fmt: skip

    def start(self) -> None:
        self._consumer.subscribe(
            [self.topic], on_assign=self._assign, on_revoke=self._revoke, on_lost=self._lost
        )
        self._thread.start()

    def _changed(self, event: str, parts: list[TopicPartition]) -> None:
        log.info(event, partitions=sorted(p.partition for p in parts), held=sorted(self.held))
        self.on_change(frozenset(self.held))

    def _assign(self, consumer: Any, parts: list[TopicPartition]) -> None:
        self.held |= {p.partition for p in parts}
        self._changed("fleet_assigned", parts)

    def _revoke(self, consumer: Any, parts: list[TopicPartition]) -> None:
        self.held -= {p.partition for p in parts}
        self._changed("fleet_revoked", parts)

    def _lost(self, consumer: Any, parts: list[TopicPartition]) -> None:
        self.held -= {p.partition for p in parts}
        self._changed("fleet_lost", parts)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._consumer.poll(0.2)  # heartbeats and rebalance callbacks; no records
            except Exception as exc:  # a broker away: the session may be lost, said by on_lost
                log.warning("fleet_poll_failed", error=str(exc)[:300])
                self._stop.wait(1.0)

    def close(self) -> None:
        """Leave the group at once (the others take this replica's streams now)."""
        self._stop.set()
        self._thread.join(5)
        try:
            self._consumer.close()
        except Exception as exc:
            log.warning("fleet_close_failed", error=str(exc)[:300])
