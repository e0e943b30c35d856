"""One tap to book, through the whole pipeline: a slot that opens in the simulator (which
answers like Resy: the venue's url_slug, the location's url_slug) reaches ``/feed``, the SSE
stream, a signed webhook and an Apprise ``json://`` channel with the venue's booking page for
its date, time and party size, and its time as people read it in the venue's zone. Every
stage is a real ``drops`` subprocess on the real broker and the embedded ClickHouse engine."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from bench.pipeline import BEGINNING, Pipeline, feed_items, sse_events, wait_for
from delivery.worker import verify
from domain.calendar import window
from drops.settings import Settings
from schemas import slot_id
from simulator.control import SimControl
from tests.integration.test_delivery import Receiver
from tests.integration.test_end_to_end import e2e_settings, free_time, wait_first_fetches
from tests.integration.test_matcher import Watches

# Not marked ``clock``: its use of the clock (a bucket of the window, a free time in it) is
# test_end_to_end's, which ``make test-clock`` runs at every chosen instant; this test checks
# the booking links, so it runs once, at the test's instant.
pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def expected_link(slug: str, actual: str, seats: int) -> str:
    """Resy's venue page in its best-known public form (docs/architecture.md)."""
    return (
        f"https://resy.com/cities/new-york-ny/venues/{slug}"
        f"?date={actual[:10]}&seats={seats}&time={actual[11:13]}{actual[14:16]}"
    )


def readable(actual: str) -> str:
    """``2026-12-08 19:30:00`` -> ``Tue 8 Dec, 7:30 pm`` (the reference, written out)."""
    y, mo, d = (int(x) for x in actual[:10].split("-"))
    h, mi = int(actual[11:13]), actual[14:16]
    wd = DAYS[dt.date(y, mo, d).weekday()]
    return f"{wd} {d} {MONTHS[mo - 1]}, {h % 12 or 12}:{mi} {'am' if h < 12 else 'pm'}"


def test_a_drop_reaches_feed_stream_and_webhook_with_its_booking_link(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = e2e_settings(kafka_settings).model_copy(
        update={"delivery_backoff": 0.05, "delivery_rate": 1000.0, "party_size": 2}
    )
    api = f"http://127.0.0.1:{settings.api.port}"
    receiver = Receiver()
    watches = Watches(settings)
    pipeline = Pipeline(settings, tmp_path / "logs")
    try:
        pipeline.start("simulator", "simulate")
        sim = SimControl(f"http://127.0.0.1:{settings.simulator.port}")
        sim.wait_ready()
        venue = sim.venues("resy")[0]
        vid, name = str(venue["id"]), str(venue["name"])
        slug = "-".join(name.lower().split())  # the simulator's names: words and digits
        r = receiver.url
        watches.put("any", venue_ids=[vid], channels=[{"type": "webhook", "url": r + "/any"}])
        watches.put(
            "four",
            venue_ids=[vid],
            party_size=4,
            channels=[
                {"type": "webhook", "url": r + "/four"},
                {"type": "apprise", "url": "json" + r[4:] + "/apprise"},
            ],
        )
        pipeline.start("api", "api", "--with-sink")
        wait_for("the API", lambda: httpx.get(f"{api}/healthz").status_code == 200)
        pipeline.start("processor", "process")
        pipeline.start("matcher", "match")
        pipeline.start("delivery", "deliver")
        pipeline.start("producer", "produce")
        wait_first_fetches(pipeline, settings)

        buckets = window(
            settings.clock().now(), settings.market.name, ZoneInfo(settings.market.time_zone)
        )
        b = buckets[3]  # tomorrow 19:00
        actual = free_time(sim, str(b.date), b.time_slot, int(vid), ["19:45", "20:15", "18:45"])
        sim.open("resy", vid, actual, party_min=1, party_max=6)
        sid = slot_id("resy", vid, actual)
        link = expected_link(slug, actual, 2)  # the party size the providers were asked for

        def dropped() -> dict[str, Any] | None:
            pipeline.check_alive()
            return next((i for i in feed_items(api) if i["slot_id"] == sid), None)

        item = wait_for("the drop in /feed", dropped, timeout=90, every=1)
        assert item["booking_url"] == link
        assert (item["venue_slug"], item["venue_city"]) == (slug, "new-york-ny")
        assert item["booking"].startswith("rgs://")  # the token stays what it was

        events = list(
            sse_events(
                f"{api}/feed/stream?since={BEGINNING}",
                until=lambda evs: any(sid in e.get("data", "") for e in evs),
            )
        )
        [ev] = [orjson.loads(e["data"]) for e in events if sid in e.get("data", "")]
        assert ev["booking_url"] == link

        got = wait_for(
            "the webhooks and the Apprise message",
            lambda: (
                (receiver.got("/any"), receiver.got("/four"), receiver.got("/apprise"))
                if receiver.got("/any") and receiver.got("/four") and receiver.got("/apprise")
                else None
            ),
            timeout=60,
        )
        any_hook, four_hook, apprise_msg = got[0][0], got[1][0], got[2][0]
        for h in (any_hook, four_hook):
            assert verify("k" * 32, h["headers"], h["body"], time.time())
        body = json.loads(any_hook["body"])
        assert body["drop"]["slot_id"] == sid and body["booking_url"] == link
        assert body["local_time"] == readable(actual)
        # a watch that names its party size gets the page for that size
        four = expected_link(slug, actual, 4)
        assert json.loads(four_hook["body"])["booking_url"] == four
        message = json.loads(apprise_msg["body"])
        assert four in message["message"] and readable(actual) in message["message"]
        pipeline.check_alive()
    finally:
        pipeline.stop_all()
        receiver.close()
