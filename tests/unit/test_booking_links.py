"""Booking links from what the provider's answer gives, through the producer's records and the
drop rule: the simulator answers like Resy (the venue's url_slug, the location's url_slug and
code), the client keeps them in the snapshot's venue table, and every drop (open and close)
carries the venue's booking page for its date, time and party size."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import date, datetime
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx

from domain import rule
from domain.calendar import Bucket
from producers.core import Job, to_records
from producers.providers.base import BucketQuery, Collector
from producers.providers.resy import ResyClient, parse_venue
from producers.providers.transport import Policy, Transport
from producers.windows import bucket_window
from schemas import Slot, Snapshot, decode_snapshot, encode
from simulator.market import Market
from simulator.server import create_app, url_slug

NY = ZoneInfo("America/New_York")
T0 = int(datetime(2026, 3, 2, 9, 0, tzinfo=NY).timestamp() * 1000)
DAY = "2026-03-04"
QUERY = BucketQuery(DAY, "19:00", 2, bucket_window("19:00", ("15:00", "19:00")))


def fetch_from_simulator(venue_ids: tuple[str, ...] = ()) -> tuple[list[Slot], dict[str, str]]:
    """The Resy client's slots from the simulator (area search, or find for ``venue_ids``),
    through the snapshot records the producer writes; and each venue's name by id."""
    app = create_app(Market(seed=5, venues=40), api_key="k", scripted=True)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")
    transport = Transport(Policy(max_retries=0, retry_base=0.0), client=client)
    resy = ResyClient(transport, "http://sim", "k", "Mozilla/5.0 test", venue_ids=venue_ids)

    async def scenario() -> tuple[list[Slot], dict[str, str]]:
        await client.post("/_control/freeze", json={"at_ms": T0})
        result = await resy.fetch(QUERY)
        assert result.complete and len(result.slots) > 0
        job = Job(Bucket("nyc", date.fromisoformat(DAY), "19:00"), "resy", "poll")
        slots = [
            s
            for _, value in to_records(result, job, "nyc", "s1", T0, 50, 4_000_000)
            for s in decode_snapshot(value).slots
        ]
        venues = (await client.get("/_control/venues", params={"provider": "resy"})).json()
        await client.aclose()
        return slots, {str(v["id"]): v["name"] for v in venues["venues"]}

    return asyncio.run(scenario())


def test_resy_answers_give_each_venue_its_slug_and_city_through_the_records() -> None:
    slots, names = fetch_from_simulator()
    assert {(s.venue_slug, s.venue_city) for s in slots} == {
        (url_slug(names[s.venue_id]), "new-york-ny") for s in slots
    }
    some = sorted({s.venue_id for s in slots})[:3]
    found, _ = fetch_from_simulator(tuple(some))  # the per-venue find gives them too
    assert found and {(s.venue_id, s.venue_slug) for s in found} <= {
        (s.venue_id, s.venue_slug) for s in slots
    }
    assert all(s.venue_city == "new-york-ny" for s in found)


def test_the_location_code_stands_in_for_a_missing_city_and_odd_values_give_none() -> None:
    acc = Collector("resy")
    start = {"date": {"start": f"{DAY} 19:30:00"}, "config": {"type": "Bar", "token": "t"},
             "size": {"min": 2, "max": 4}}  # fmt: skip
    venues = [
        {"id": {"resy": 1}, "url_slug": "lilia", "location": {"code": "ny"}},
        {"id": {"resy": 2}, "url_slug": 17, "location": {"url_slug": ["x"], "code": None}},
        {"id": {"resy": 3}, "location": "somewhere"},
    ]
    for v in venues:
        assert parse_venue(v, [start], QUERY, acc)[1] is None  # never a failure
    assert [(v[0], v[4], v[5]) for v in acc.table().venues] == [
        ("1", "lilia", "ny"),
        ("2", "", ""),
        ("3", "", ""),
    ]


def snap(sid: str, polled: int, slots: list[Slot], kind: str = "poll") -> Snapshot:
    return Snapshot(sid, kind, "nyc", "resy", "nyc:2026-03-04:1900", DAY, "19:00", polled,  # type: ignore[arg-type]
                    True, slots=tuple(slots))  # fmt: skip


def test_drops_and_their_closes_carry_the_booking_page() -> None:
    slots, _ = fetch_from_simulator()
    s = slots[0]
    state = rule.BucketState()
    for i, (kind, present) in enumerate([("baseline", []), ("poll", [s]), ("poll", [])]):
        view = decode_snapshot(  # through the wire format, as the processor reads it
            encode(snap(f"s{i}", T0 + i * 30_000, present, kind))
        )
        out = rule.apply(state, view, 7_200_000)
        events = rule.events(view, out, party_size=3)
        if i == 0:
            assert events == []
            continue
        (ev,) = events
        assert ev.event == ("open" if i == 1 else "close")
        assert (ev.venue_slug, ev.venue_city) == (s.venue_slug, "new-york-ny")
        u = urlsplit(ev.booking_url)
        assert u.path == f"/cities/new-york-ny/venues/{s.venue_slug}"
        seats = str(min(max(3, s.party_min), s.party_max))
        assert parse_qs(u.query) == {
            "date": [DAY],
            "seats": [seats],
            "time": [s.actual_time[11:13] + s.actual_time[14:16]],
        }


def test_a_venue_without_a_slug_gets_no_link_and_opentable_links_by_restaurant_id() -> None:
    s = Slot("resy", "9", "Nine", f"{DAY} 19:30:00", "EST5EDT", party_min=2, party_max=4)
    ot = replace(s, provider="opentable", venue_id="1234", slot_id="")
    for one, expect in ((s, ""), (ot, "https://www.opentable.com/restref/client/?rid=1234")):
        state = rule.BucketState()
        base = snap("a", T0, [], "baseline")
        rule.apply(state, replace(base, provider=one.provider), 1)
        poll = replace(snap("b", T0 + 30_000, [one]), provider=one.provider)
        (ev,) = rule.events(poll, rule.apply(state, poll, 1))
        assert ev.booking_url.startswith(expect) and (expect or ev.booking_url == "")
    assert "datetime=2026-03-04T19%3A30&covers=2" in ev.booking_url
