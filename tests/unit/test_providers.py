"""Provider clients on payloads of the providers' real shapes (httpx.MockTransport), with the
failures a provider can produce: each is a Failure and complete=False, never an empty result."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest

from producers.providers.base import BucketQuery, SlotEntry, SlotIds, merge
from producers.providers.opentable import OpenTableClient, OtVenue
from producers.providers.resy import ResyClient
from producers.providers.transport import Policy, Transport, backoff, parse_retry_after
from producers.windows import bucket_window
from schemas import slot_id

DAY = "2026-03-04"
Q19 = BucketQuery(DAY, "19:00", 2, bucket_window("19:00", ("15:00", "19:00")))
KEY = 'ResyAPI api_key="secret"'


def resy_slot(start: str, seating: str = "Dining Room", token: str = "tok", lo: int = 1,
              hi: int = 4) -> dict[str, Any]:  # fmt: skip
    return {
        "config": {"id": 1, "type": seating, "token": f"rgs://resy/{token}"},
        "date": {"start": start, "end": start},
        "size": {"min": lo, "max": hi},
    }


def resy_hit(vid: int, *slots: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": {"resy": vid},
        "name": f"Venue {vid}",
        "location": {"time_zone": "EST5EDT", "neighborhood": "SoHo"},
        "availability": {"slots": list(slots)},
    }


AREA = [
    resy_hit(
        1,
        resy_slot(f"{DAY} 19:30:00", "Dining Room", "a"),
        resy_slot(f"{DAY} 19:30:00", "Bar", "b", 2, 6),
        resy_slot(f"{DAY} 16:30:00"),  # the 15:00 bucket's window
        resy_slot(f"{DAY} 21:30:00"),  # past the 19:00 window (21:29)
    ),
    resy_hit(2),
    resy_hit(3, resy_slot(f"{DAY} 17:00:00")),
    resy_hit(4, resy_slot(f"{DAY} 21:15:00")),
    resy_hit(5, resy_slot("2026-03-05 19:00:00")),  # another day
]


def area_handler(hits: list[dict[str, Any]], per_page: int = 2) -> Callable[..., httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == KEY
        assert request.headers["user-agent"].startswith("Mozilla")
        body = orjson.loads(request.content)
        assert body["slot_filter"] == {"day": DAY, "party_size": 2, "time_filter": "19:00"}
        page, size = body["page"], min(body["per_page"], per_page)
        chunk = hits[(page - 1) * size : page * size]
        doc = {"search": {"hits": chunk, "nbHits": len(hits)}, "meta": {"total": len(hits)}}
        return httpx.Response(200, json=doc)

    return handle


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def make(
    handler: Callable[[httpx.Request], httpx.Response], **policy: Any
) -> tuple[Transport, Recorder]:
    rec = Recorder()
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    pol = Policy(**{"max_retries": 2, "timeout": 1.0, **policy})
    return Transport(pol, client=client, sleep=rec, rng=random.Random(1)), rec


def resy(transport: Transport, **kw: Any) -> ResyClient:
    return ResyClient(transport, "http://resy.test", "secret", "Mozilla/5.0 test", **kw)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_resy_area_search_paginates_normalizes_and_keeps_the_window() -> None:
    transport, _ = make(area_handler(AREA))
    result = run(resy(transport).fetch(Q19))
    assert result.complete and result.failures == []
    assert result.venues == 5 and result.requests == 3 and result.retries == 0
    got = {(s.venue_id, s.actual_time): s for s in result.as_slots()}
    assert set(got) == {
        ("1", f"{DAY} 19:30:00"),
        ("3", f"{DAY} 17:00:00"),
        ("4", f"{DAY} 21:15:00"),
    }
    merged = got[("1", f"{DAY} 19:30:00")]
    assert merged.seating_types == ("Bar", "Dining Room")  # one slot per venue and time
    assert (merged.party_min, merged.party_max) == (1, 6)
    assert merged.booking == "rgs://resy/a" and merged.time_zone == "EST5EDT"
    assert merged.neighborhood == "SoHo" and merged.venue_name == "Venue 1"
    assert merged.provider == "resy" and len(merged.slot_id) == 16
    assert "secret" not in repr(resy(transport))


def test_resy_empty_area_is_a_complete_empty_answer() -> None:
    transport, _ = make(area_handler([]))
    result = run(resy(transport).fetch(Q19))
    assert result.complete and len(result.slots) == 0 and result.requests == 1


def test_resy_failed_page_is_a_failure_not_an_empty_page() -> None:
    inner = area_handler(AREA)

    def handle(request: httpx.Request) -> httpx.Response:
        if orjson.loads(request.content)["page"] == 2:
            return httpx.Response(503, json={"message": "unavailable"})
        return inner(request)

    transport, rec = make(handle)
    result = run(resy(transport).fetch(Q19))
    assert not result.complete
    assert [(f.scope, f.ref) for f in result.failures] == [("page", "2")]
    assert "server_error" in result.failures[0].error
    assert {s.venue_id for s in result.as_slots()} == {"1"}  # pages 1 and 3 still count
    assert result.retries == 2 and len(rec.sleeps) == 2


def test_resy_first_page_failure_is_a_provider_failure() -> None:
    transport, _ = make(lambda r: httpx.Response(500, text="oops"))
    result = run(resy(transport).fetch(Q19))
    assert not result.complete and len(result.slots) == 0
    assert result.failures[0].scope == "provider" and result.requests == 3


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (lambda: httpx.Response(200, content=b'{"search": {"hits": [{"id": '), "malformed"),
        (lambda: httpx.Response(200, json={"error": "captcha"}), "invalid"),
        (lambda: httpx.Response(403, text="<html>Access Denied</html>"), "blocked"),
        (lambda: httpx.Response(429), "throttled"),
    ],
)
def test_resy_bad_answers_become_failures(
    response: Callable[[], httpx.Response], kind: str
) -> None:
    transport, _ = make(lambda r: response())
    result = run(resy(transport).fetch(Q19))
    assert not result.complete and len(result.slots) == 0
    assert kind in result.failures[0].error


def test_truncated_page_is_retried_then_accepted() -> None:
    inner = area_handler(AREA)
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        resp = inner(request)
        if orjson.loads(request.content)["page"] == 2 and calls["n"] == 0:
            calls["n"] += 1
            doc = orjson.loads(resp.content)
            doc["search"]["hits"] = doc["search"]["hits"][:1]  # short page, same nbHits
            return httpx.Response(200, json=doc)
        return resp

    transport, _ = make(handle)
    result = run(resy(transport).fetch(Q19))
    assert result.complete and result.retries == 1 and result.venues == 5


def test_timeouts_are_failures() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    transport, _ = make(handle)
    result = run(resy(transport).fetch(Q19))
    assert not result.complete and "timeout" in result.failures[0].error
    assert result.requests == 3


def test_a_bad_key_is_not_retried() -> None:
    transport, rec = make(lambda r: httpx.Response(419, json={"message": "Unauthorized"}))
    result = run(resy(transport).fetch(Q19))
    assert not result.complete and "rejected" in result.failures[0].error
    assert result.requests == 1 and rec.sleeps == []


def test_retry_after_is_honoured_and_too_long_ones_give_up() -> None:
    inner = area_handler(AREA[:2])
    state = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        state["n"] += 1
        if state["n"] == 1:
            return httpx.Response(429, headers={"Retry-After": "3"})
        return inner(request)

    transport, rec = make(handle)
    result = run(resy(transport).fetch(Q19))
    assert result.complete and result.retries == 1
    assert max(rec.sleeps) >= 3.0 - 0.05  # waited at least Retry-After
    transport, rec = make(lambda r: httpx.Response(429, headers={"Retry-After": "600"}))
    result = run(resy(transport).fetch(Q19))
    assert not result.complete and result.requests == 1 and "too long" in result.failures[0].error


def test_backoff_is_full_jitter_within_the_cap() -> None:
    pol = Policy(retry_base=0.5, retry_max_delay=3.0)
    rng = random.Random(5)
    for attempt in range(6):
        delays = [backoff(attempt, pol, rng) for _ in range(200)]
        cap = min(3.0, 0.5 * 2**attempt)
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8 and min(delays) < cap * 0.2  # spread over [0, cap]
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_circuit_breaker_opens_and_fails_fast() -> None:
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(502)

    transport, _ = make(handle, breaker_failures=3, breaker_reset=60.0)
    first = run(resy(transport).fetch(Q19))
    assert not first.complete and calls["n"] == 3 and transport.breaker_open("resy")
    second = run(resy(transport).fetch(Q19))
    assert not second.complete and "circuit_open" in second.failures[0].error
    assert calls["n"] == 3  # no request while open


def test_rate_limit_paces_requests() -> None:
    transport, rec = make(area_handler(AREA), rate_limit=2.0)
    result = run(resy(transport).fetch(Q19))
    assert result.complete
    assert len(rec.sleeps) >= 1 and sum(rec.sleeps) >= 0.9  # 3 requests at 2/s: ≥ 1 s


def test_resy_per_venue_find() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/4/find" and request.headers["authorization"] == KEY
        vid = int(request.url.params["venue_id"])
        if vid == 9:
            return httpx.Response(404, json={"message": "Not Found"})
        hit = resy_hit(vid, resy_slot(f"{DAY} 19:00:00"), resy_slot(f"{DAY} 12:00:00"))
        slots = hit.pop("availability")["slots"]
        return httpx.Response(200, json={"results": {"venues": [{"venue": hit, "slots": slots}]}})

    transport, _ = make(handle)
    result = run(resy(transport, venue_ids=("7", "8", "9")).fetch(Q19))
    assert not result.complete
    assert [(f.scope, f.ref) for f in result.failures] == [("venue", "9")]
    assert {(s.venue_id, s.actual_time) for s in result.as_slots()} == {
        ("7", f"{DAY} 19:00:00"),
        ("8", f"{DAY} 19:00:00"),
    }


def test_a_broken_venue_entry_is_a_venue_failure() -> None:
    bad = resy_hit(3)
    bad["availability"]["slots"] = [{"config": {"type": "x"}}]  # no date
    transport, _ = make(area_handler([AREA[0], bad], per_page=5))
    result = run(resy(transport).fetch(Q19))
    assert not result.complete and [(f.scope, f.ref) for f in result.failures] == [("venue", "3")]
    assert {s.venue_id for s in result.as_slots()} == {"1"}


# ------------------------------------------------------------------ OpenTable


def ot_row(rid: int, *slots: dict[str, Any]) -> dict[str, Any]:
    return {
        "restaurantId": rid,
        "restaurantAvailabilityToken": "rat",
        "availabilityDays": [{"dayOffset": 0, "slots": list(slots)}],
    }


def ot_slot(offset: int, available: bool = True, typ: str = "Standard") -> dict[str, Any]:
    if not available:
        return {"__typename": "UnavailableSlot", "isAvailable": False, "timeOffsetMinutes": offset}
    return {
        "__typename": "AvailableSlot",
        "isAvailable": True,
        "timeOffsetMinutes": offset,
        "slotHash": "123",
        "slotAvailabilityToken": f"tok{offset}",
        "type": typ,
        "attributes": ["default"],
    }


VENUES = (OtVenue("11", "Eleven", "Chelsea"), OtVenue("12", "Twelve"), OtVenue("13", "Thirteen"))


def ot(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[OpenTableClient, Recorder]:
    transport, rec = make(handler)
    return OpenTableClient(transport, "http://ot.test", "Mozilla/5.0", VENUES, batch=2), rec


def test_opentable_availability_filters_nearby_unavailable_and_window() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.params["opname"] == "RestaurantsAvailability"
        var = orjson.loads(request.content)["variables"]
        assert var["time"] == "19:00" and var["partySize"] == 2 and var["date"] == DAY
        rows = [
            ot_row(r, ot_slot(-30), ot_slot(0, False), ot_slot(30, typ="Patio"), ot_slot(-150))
            for r in var["restaurantIds"]
        ]
        rows.append(ot_row(99, ot_slot(0)))  # a restaurant nearby
        return httpx.Response(200, json={"data": {"availability": rows}})

    client, _ = ot(handle)
    result = run(client.fetch(Q19))
    assert result.complete and result.venues == 3 and result.requests == 2
    got = {(s.venue_id, s.actual_time, s.seating_types) for s in result.as_slots()}
    assert got == {
        (v, t, st)
        for v in ("11", "12", "13")
        for t, st in ((f"{DAY} 18:30:00", ("Standard",)), (f"{DAY} 19:30:00", ("Patio",)))
    }  # 16:30 (-150) belongs to the 15:00 bucket; 19:00 is not available
    s = next(s for s in result.as_slots() if s.venue_id == "11")
    assert s.venue_name == "Eleven" and s.neighborhood == "Chelsea" and s.booking == "tok-30"
    assert (s.party_min, s.party_max) == (2, 2)


def test_opentable_keeps_only_what_the_query_asked_and_counts_the_rest() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        var = orjson.loads(request.content)["variables"]
        assert (var["backwardMinutes"], var["forwardMinutes"]) == (150, 150)
        # 21:35 (+155) is more than was asked; so is 16:20 (-160): neither is covered
        slots = (ot_slot(-160), ot_slot(60), ot_slot(155))
        rows = [ot_row(r, *slots) for r in var["restaurantIds"]]
        return httpx.Response(200, json={"data": {"availability": rows}})

    client, _ = ot(handle)
    last = BucketQuery(DAY, "19:00", 2, (17 * 60, 22 * 60))  # a window wider than was asked
    result = run(client.fetch(last))
    assert result.complete and result.contradictions == 6  # two a restaurant, three of them
    assert {s.actual_time for s in result.as_slots()} == {f"{DAY} 20:00:00"}
    assert {s.read_via for s in result.as_slots()} == {"search"}


def test_opentable_missing_restaurant_errors_and_failed_batches() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        var = orjson.loads(request.content)["variables"]
        if 13 in var["restaurantIds"]:
            return httpx.Response(200, json={"errors": [{"message": "boom"}], "data": None})
        return httpx.Response(200, json={"data": {"availability": [ot_row(11, ot_slot(0))]}})

    client, _ = ot(handle)
    result = run(client.fetch(Q19))
    assert not result.complete
    assert sorted((f.scope, f.ref) for f in result.failures) == [("venue", "12"), ("venue", "13")]
    assert [(s.venue_id, s.actual_time) for s in result.as_slots()] == [("11", f"{DAY} 19:00:00")]


def test_opentable_empty_answer_is_complete_and_empty() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        var = orjson.loads(request.content)["variables"]
        return httpx.Response(
            200, json={"data": {"availability": [ot_row(r) for r in var["restaurantIds"]]}}
        )

    client, _ = ot(handle)
    result = run(client.fetch(Q19))
    assert result.complete and len(result.slots) == 0 and result.venues == 3


def test_merge_one_slot_per_venue_and_time() -> None:
    e = [
        SlotEntry("1", "A", "EST5EDT", "", f"{DAY} 19:00:00", "Patio", 2, 2, "t1"),
        SlotEntry("1", "A", "EST5EDT", "", f"{DAY} 19:00:00", "Bar", 1, 4, "t2"),
        SlotEntry("1", "A", "EST5EDT", "", f"{DAY} 19:00:00", "Bar", 1, 4, "t3"),
        SlotEntry("0", "B", "EST5EDT", "", f"{DAY} 20:00:00", "", 2, 2, "t4"),
    ]
    slots = merge("resy", e)
    assert [(s.venue_id, s.seating_types, s.party_min, s.party_max, s.booking) for s in slots] == [
        ("0", (), 2, 2, "t4"),
        ("1", ("Bar", "Patio"), 1, 4, "t1"),
    ]


def test_slot_columns_carry_the_contract_slot_ids() -> None:
    transport, _ = make(area_handler(AREA))
    result = run(resy(transport).fetch(Q19))
    table = result.slots
    assert len(table) == 3
    for s in result.as_slots():  # Slot() would fill in the id: check the one the client made
        assert s.slot_id == slot_id("resy", s.venue_id, s.actual_time)
    assert [f"{i:016x}" for i in table.ids] == [s.slot_id for s in result.as_slots()]
    assert table.venue_of == sorted(table.venue_of)  # venues contiguous, as parts assume
    ids = SlotIds("opentable")
    assert ids("200001", f"{DAY} 19:00:00") == slot_id("opentable", "200001", f"{DAY} 19:00:00")


FB_AREA = [  # the search's starts in the 19:00 window span 17:00-21:15 without page 2
    resy_hit(
        1,
        resy_slot(f"{DAY} 17:00:00"),
        resy_slot(f"{DAY} 19:30:00", "Dining Room", "a"),
        resy_slot(f"{DAY} 21:15:00"),
        resy_slot(f"{DAY} 21:30:00"),  # past the 19:00 window (21:29)
    ),
    resy_hit(2),
    resy_hit(3, resy_slot(f"{DAY} 17:00:00")),
    resy_hit(4, resy_slot(f"{DAY} 21:15:00")),
    resy_hit(5, resy_slot(f"{DAY} 18:00:00"), resy_slot("2026-03-05 19:00:00")),
]


def within(hit: dict[str, Any], last: str) -> dict[str, Any]:
    """The hit as a search with a shorter reach answers it: no start after ``last``."""
    slots = [x for x in hit["availability"]["slots"] if x["date"]["start"][11:16] <= last]
    return {**hit, "availability": {"slots": slots}}


def area_and_find(
    fail_pages: set[int], fail_finds: set[int], hits: list[dict[str, Any]] | None = None,
    reach_to: str = "23:59",
) -> Callable[..., httpx.Response]:  # fmt: skip
    """The area search of ``hits`` (2 venues a page; starts up to ``reach_to``) and the
    per-venue find of the same venues (the whole day)."""
    hits = FB_AREA if hits is None else hits
    area = area_handler([within(h, reach_to) for h in hits])
    by_id = {h["id"]["resy"]: h for h in hits}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/4/find":
            vid = int(request.url.params["venue_id"])
            assert request.url.params["day"] == DAY
            if vid in fail_finds:
                return httpx.Response(503, json={"message": "unavailable"})
            hit = dict(by_id[vid])
            slots = hit.pop("availability")["slots"]
            doc = {"results": {"venues": [{"venue": hit, "slots": slots}]}}
            return httpx.Response(200, json=doc)
        if orjson.loads(request.content)["page"] in fail_pages:
            return httpx.Response(503, json={"message": "unavailable"})
        return area(request)

    return handle


def test_a_failed_page_is_read_venue_by_venue_when_its_venues_are_known() -> None:
    fail_pages: set[int] = set()
    transport, _ = make(area_and_find(fail_pages, set()))
    client = resy(transport)
    first = run(client.fetch(Q19))  # a whole fetch: the client now knows the area's venues
    assert first.complete and client.directory == {"1", "2", "3", "4", "5"}
    fail_pages.add(2)  # venues 3 and 4
    second = run(client.fetch(Q19))
    assert second.complete and second.failures == []  # every venue was read: complete
    assert [s.read_via for s in second.as_slots()] == ["search"] * 3 + ["fallback"] * 2 + ["search"]
    assert [replace(s, read_via="search") for s in second.as_slots()] == first.as_slots()
    assert second.requests == 1 + 3 + 1 + 2  # page 1, page 2 three times, page 3, two finds
    assert second.fallback_venues == 2 and second.contradictions == 0


def test_the_fallback_keeps_only_what_the_search_covers() -> None:
    """The search answers up to 21:00 (a reach of +120), the window runs to 21:29 and the
    find answers the whole day: venue 4's 21:15 is one the search never shows."""
    fail_pages: set[int] = set()
    transport, _ = make(area_and_find(fail_pages, set(), reach_to="21:00"))
    client = resy(transport)
    alone = run(client.fetch(Q19))  # what the search alone shows: nothing at 21:15
    assert alone.complete and all(s.actual_time[11:16] <= "21:00" for s in alone.as_slots())
    fail_pages.add(2)  # venues 3 (17:00, within what the search covers) and 4 (21:15)
    second = run(client.fetch(Q19))
    assert not second.complete  # venue 4 is unknown, never read as open at 21:15
    assert [(f.scope, f.ref) for f in second.failures] == [("venue", "4")]
    assert "outside what the search covers (17:00-19:30)" in second.failures[0].error
    assert second.contradictions == 1 and second.fallback_venues == 1
    got = {(s.venue_id, s.actual_time, s.read_via) for s in second.as_slots()}
    assert ("3", f"{DAY} 17:00:00", "fallback") in got and not any(v == "4" for v, *_ in got)
    assert {(v, t) for v, t, _ in got} == {(s.venue_id, s.actual_time) for s in alone.as_slots()}


def test_with_no_span_known_the_fallback_reads_only_venues_without_slots() -> None:
    hits = [resy_hit(1), resy_hit(2), resy_hit(3, resy_slot(f"{DAY} 19:00:00")), resy_hit(4)]
    fail_pages: set[int] = set()
    transport, _ = make(area_and_find(fail_pages, set(), hits))
    client = resy(transport)
    run(client.fetch(Q19))
    fail_pages.add(2)  # page 1 has no start at all: nothing is known of the search's reach
    second = run(client.fetch(Q19))
    assert [(f.scope, f.ref) for f in second.failures] == [("venue", "3")]
    assert "(none yet)" in second.failures[0].error
    assert len(second.slots) == 0 and second.fallback_venues == 1  # venue 4: no slot, read


def test_fallback_that_cannot_cover_the_page_keeps_the_failure() -> None:
    fail_pages: set[int] = set()
    transport, _ = make(area_and_find(fail_pages, {4}))
    client = resy(transport)
    first = run(client.fetch(Q19))
    fail_pages.add(2)
    second = run(client.fetch(Q19))
    assert not second.complete
    assert [(f.scope, f.ref) for f in second.failures] == [("page", "2"), ("venue", "4")]
    # what was found is still reported (an incomplete snapshot only adds), venue 4's is not
    found = {(s.venue_id, s.actual_time) for s in second.as_slots()}
    assert ("3", f"{DAY} 17:00:00") in found and not any(v == "4" for v, _ in found)
    assert found < {(s.venue_id, s.actual_time) for s in first.as_slots()}
    # with no venue known (a fresh client), the page failure is reported as before
    fresh = run(resy(transport).fetch(Q19))
    assert [(f.scope, f.ref) for f in fresh.failures] == [("page", "2")]
