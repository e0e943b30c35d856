"""Synthetic drop records and a transactional writer, for tests and benchmarks.

The processor writes the drops topic in Kafka transactions; :class:`DropWriter` does the same
(same key, same encoding) so the sink and the API can be exercised without the whole pipeline.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from domain.booking import booking_url, link_party_size
from drops import kafka
from drops.stages import TopicSettings
from schemas import BucketStats, DropEvent, bucket_id, dedupe_key, encode, slot_id

NEIGHBORHOODS = ("West Village", "SoHo", "Tribeca", "Harlem", "Williamsburg", "Chelsea")


def make_drop(
    n: int,
    *,
    market: str = "nyc",
    provider: str = "resy",
    date: str = "2026-12-01",
    time_slot: str = "19:00",
    opened_at_ms: int | None = None,
    venue: int | None = None,
    party: tuple[int, int] = (2, 4),
    neighborhood: str | None = None,
) -> DropEvent:
    """The ``n``-th synthetic open event (distinct slot per ``n``)."""
    v = n % 50 if venue is None else venue
    day = date
    # distinct start time per n (per venue): hours 17-22, minutes and seconds from n
    actual = f"{day} {17 + n % 6:02d}:{(n // 6) % 60:02d}:{(n // 360) % 60:02d}"
    vid = str(1000 + v)
    sid = slot_id(provider, vid, actual)
    b = bucket_id(market, day, time_slot)
    opened = opened_at_ms if opened_at_ms is not None else int(time.time() * 1000)
    # as the providers give them: a rotating token, and the venue's web slug and city
    slug, city = (f"venue-{vid}", "new-york-ny") if provider == "resy" else ("", "")
    link = booking_url(provider, vid, slug, city, actual, link_party_size(*party, 2))
    return DropEvent(
        event="open",
        dedupe_key=dedupe_key(b, sid, opened),
        bucket_id=b,
        market=market,
        provider=provider,
        date=day,
        time_slot=time_slot,
        slot_id=sid,
        venue_id=vid,
        venue_name=f"Venue {vid}",
        neighborhood=neighborhood or NEIGHBORHOODS[v % len(NEIGHBORHOODS)],
        actual_time=actual,
        time_zone="EST5EDT",
        seating_types=("Dining Room",),
        party_min=party[0],
        party_max=party[1],
        booking=f"rgs://{provider}/{vid}/{n}/{party[0]}/{actual[:10]}/{actual[11:]}/2",
        opened_at_ms=opened,
        snapshot_id=uuid.uuid4().hex,
        opened_after_ms=opened - 30_000,  # the poll before
        venue_slug=slug,
        venue_city=city,
        booking_url=link,
    )


def close_of(ev: DropEvent, closed_at_ms: int) -> DropEvent:
    """The close event of an open event."""
    return DropEvent(
        event="close",
        dedupe_key=dedupe_key(ev.bucket_id, ev.slot_id, ev.opened_at_ms, "close"),
        bucket_id=ev.bucket_id,
        market=ev.market,
        provider=ev.provider,
        date=ev.date,
        time_slot=ev.time_slot,
        slot_id=ev.slot_id,
        venue_id=ev.venue_id,
        venue_name=ev.venue_name,
        neighborhood=ev.neighborhood,
        actual_time=ev.actual_time,
        time_zone=ev.time_zone,
        seating_types=ev.seating_types,
        party_min=ev.party_min,
        party_max=ev.party_max,
        booking=ev.booking,
        opened_at_ms=ev.opened_at_ms,
        snapshot_id=uuid.uuid4().hex,
        closed_at_ms=closed_at_ms,
        open_seconds=(closed_at_ms - ev.opened_at_ms) / 1000,
        opened_after_ms=ev.opened_after_ms,
        read_via=ev.read_via,
        venue_slug=ev.venue_slug,
        venue_city=ev.venue_city,
        booking_url=ev.booking_url,
    )


def make_stats(
    date: str = "2026-12-01",
    time_slot: str = "19:00",
    polled_at_ms: int | None = None,
    kind: str = "poll",
    slots: int = 120,
    market: str = "nyc",
    provider: str = "resy",
) -> BucketStats:
    return BucketStats(
        market=market,
        provider=provider,
        bucket_id=bucket_id(market, date, time_slot),
        date=date,
        time_slot=time_slot,
        kind=kind,  # type: ignore[arg-type]
        snapshot_id=uuid.uuid4().hex,
        polled_at_ms=polled_at_ms if polled_at_ms is not None else int(time.time() * 1000),
        duration_ms=350,
        venues=40,
        slots=slots,
        complete=True,
        requests=3,
    )


class DropWriter:
    """Writes records to the drops topic in Kafka transactions, keyed by bucket id."""

    def __init__(self, settings: TopicSettings, transactional_id: str | None = None) -> None:
        self.s = settings
        self.p = kafka.producer(
            settings,
            {
                "transactional.id": transactional_id or f"drops-testdata-{uuid.uuid4().hex}",
                "linger.ms": 2,
                "partitioner": "murmur2_random",
            },
        )
        self.p.init_transactions(30)

    def write(self, events: Iterable[DropEvent], topic: str | None = None) -> None:
        self.p.begin_transaction()
        for ev in events:
            self.p.produce(topic or self.s.topics.drops, value=encode(ev), key=ev.key.encode())
        self.p.commit_transaction(30)

    def write_raw(self, values: Iterable[bytes], topic: str | None = None) -> None:
        self.p.begin_transaction()
        for v in values:
            self.p.produce(topic or self.s.topics.drops, value=v, key=b"raw")
        self.p.commit_transaction(30)

    def write_stats(self, stats: Iterable[BucketStats]) -> None:
        self.p.begin_transaction()
        for st in stats:
            self.p.produce(self.s.topics.stats, value=encode(st), key=st.key.encode())
        self.p.commit_transaction(30)

    def close(self) -> None:
        self.p.flush(10)
