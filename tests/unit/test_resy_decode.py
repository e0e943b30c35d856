"""The Resy search page's typed reading (msgspec Structs naming only the fields used) against
plain reference models: on every valid page it gives exactly the record columns of the lenient
reading (the parser before it) and of a plain model of the merge rules; a truncated page is a
failure (malformed), never an empty answer; a page with a field of the wrong type is not
guessed at by the typed reading, and the lenient reading names the venue as a failure."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.providers.base import BucketQuery, Collector, SlotIds, SlotTable
from producers.providers.resy import Page, ResyClient, decode_page, parse_venue, take_hits
from producers.providers.transport import Policy, Transport
from producers.windows import bucket_window

DAY = "2026-03-04"
TIMES = ("15:00", "19:00")
QUERIES = [BucketQuery(DAY, t, 2, bucket_window(t, TIMES)) for t in TIMES]
PROP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEATING = st.sampled_from(["Dining Room", "Bar", "Patio", "Chef's Counter", ""])
HEAVY = {  # the rest of a real slot: the typed reading skips it, the lenient one ignores it
    "quantity": 1,
    "template": {"id": 7, "is_paid": False, "display_name": "Dining Room", "image": None},
    "shift": {"id": 3, "day": DAY, "service": {"type": "Dinner", "id": 2}},
    "payment": {"cancellation_fee": None, "deposit_fee": None, "service_charge_options": []},
    "availability": {"id": 3},
    "status": {"id": 1},
    "exclusive": {"id": 0, "is_eligible": False},
    "time": {"turn_time": 90},
    "reservation_config": {"badge": None},
}


@st.composite
def starts(draw: st.DrawFn) -> str:
    day = draw(st.sampled_from([DAY, DAY, DAY, "2026-03-05"]))
    hour, minute = draw(st.integers(10, 23)), draw(st.sampled_from([0, 15, 30, 45]))
    text = f"{day} {hour:02d}:{minute:02d}"
    return text + ":00" if draw(st.booleans()) else text  # both forms are on the wire


@st.composite
def slots(draw: st.DrawFn) -> dict[str, Any]:
    config: dict[str, Any] = {"id": draw(st.integers(0, 10**6))}
    typ = draw(st.one_of(SEATING, st.none(), st.just(...)))
    if typ is not ...:
        config["type"] = typ
    if draw(st.integers(0, 9)):
        config["token"] = draw(st.one_of(st.text(max_size=12), st.none()))
    slot: dict[str, Any] = {"config": config, "date": {"start": draw(starts()), "end": "x"}}
    size = draw(st.sampled_from(["both", "both", "min", "max", "empty", "none", "missing"]))
    lo, hi = draw(st.integers(0, 4)), draw(st.integers(1, 10))
    if size != "missing":
        slot["size"] = {
            "both": {"min": lo, "max": hi},
            "min": {"min": lo},
            "max": {"max": hi},
            "empty": {},
            "none": None,
        }[size]
    if draw(st.booleans()):
        slot.update(HEAVY)
    return slot


@st.composite
def pages(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 6))
    hits = []
    for i in range(n):
        vid: int | str = 1000 + i if draw(st.booleans()) else str(1000 + i)
        hit: dict[str, Any] = {"id": {"resy": vid}, "name": draw(st.one_of(st.text(), st.none()))}
        if draw(st.integers(0, 4)):
            hit["location"] = {"time_zone": "EST5EDT", "neighborhood": draw(st.text(max_size=8))}
        avail = draw(st.sampled_from(["slots", "slots", "slots", "none", "missing", "null"]))
        if avail == "slots":
            hit["availability"] = {"slots": draw(st.lists(slots(), max_size=8))}
        elif avail == "none":
            hit["availability"] = None
        elif avail == "null":
            hit["availability"] = {"slots": None}
        hits.append(hit)
    return {"search": {"hits": hits, "nbHits": n}, "meta": {"total": n}}


def lenient(doc: dict[str, Any], query: BucketQuery) -> tuple[SlotTable, list[str]]:
    """The lenient reading (the parser before the typed one) of a plain JSON page."""
    acc, errors = Collector("resy", SlotIds("resy")), []
    for hit in doc["search"]["hits"]:
        avail = hit.get("availability") if isinstance(hit, dict) else None
        got = avail.get("slots") if isinstance(avail, dict) else None
        vid, error = parse_venue(hit, got if got is not None else [], query, acc)
        if error is not None:
            errors.append(vid or "?")
    return acc.table(), errors


def typed(body: bytes, query: BucketQuery) -> SlotTable:
    page = decode_page(body)
    assert isinstance(page, Page)
    acc = Collector("resy", SlotIds("resy"))
    seen: set[str] = set()
    take_hits(page.search.hits, query, acc, seen)
    assert seen == {str(h.id.resy) for h in page.search.hits}
    return acc.table()


def plain_model(doc: dict[str, Any], query: BucketQuery) -> dict[tuple[str, str], tuple[Any, ...]]:
    """The merge rules, written plainly: per venue and start in the bucket window, the seating
    types joined (sorted), the widest party range, the first booking token."""
    lo, hi = query.window
    out: dict[tuple[str, str], list[Any]] = {}
    for hit in doc["search"]["hits"]:
        for s in (hit.get("availability") or {}).get("slots") or []:
            start = s["date"]["start"]
            minute = int(start[11:13]) * 60 + int(start[14:16])
            if start[:10] != query.date or not lo <= minute < hi:
                continue
            size = s.get("size") or {}
            seat, token = s["config"].get("type") or "", s["config"].get("token") or ""
            pmin, pmax = size.get("min", 0), size.get("max", 0)
            key = (str(hit["id"]["resy"]), f"{start[:16]}:00")
            got = out.setdefault(key, [set(), pmin, pmax, token])
            got[0] |= {seat} - {""}
            got[1], got[2] = min(got[1], pmin), max(got[2], pmax)
    return {k: (tuple(sorted(v[0])), v[1], v[2], v[3]) for k, v in out.items()}


@PROP
@given(pages())
def test_valid_pages_give_the_lenient_readings_columns_and_the_plain_model(
    doc: dict[str, Any],
) -> None:
    body = orjson.dumps(doc)
    for query in QUERIES:
        fast = typed(body, query)
        table, errors = lenient(orjson.loads(body), query)
        assert errors == []
        assert fast == table  # the same record columns, byte for byte
        got = {
            (s.venue_id, s.actual_time): (s.seating_types, s.party_min, s.party_max, s.booking)
            for s in fast.slots()
        }
        assert got == plain_model(doc, query)


def client_for(body: bytes) -> ResyClient:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    async def no_sleep(seconds: float) -> None:
        return None

    http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    transport = Transport(Policy(max_retries=1), client=http, sleep=no_sleep)
    return ResyClient(transport, "http://resy.test", "k", "Mozilla/5.0 test", per_page=100)


@PROP
@given(pages(), st.floats(0.0, 1.0, exclude_max=True))
def test_a_truncated_page_is_a_failure_never_empty(doc: dict[str, Any], where: float) -> None:
    body = orjson.dumps(doc)
    cut = body[: int(len(body) * where)]
    assert decode_page(cut) is None
    result = asyncio.run(client_for(cut).fetch(QUERIES[1]))
    assert not result.complete and len(result.slots) == 0
    assert [f.scope for f in result.failures] == ["provider"]
    assert "malformed" in result.failures[0].error


CORRUPTIONS = [  # a required field of a slot missing or of another type
    lambda s: s["date"].update(start=5),
    lambda s: s.pop("date"),
    lambda s: s.update(date=[]),
    lambda s: s.pop("config"),
    lambda s: s.update(config=None),
    lambda s: s.update(size={"min": "two", "max": 4}),
    lambda s: s.update(size={"min": None, "max": 4}),
    lambda s: s.update(size=[1, 2]),
    lambda s: s.update(config={"type": 7, "token": "t"}),  # taken as "7": lenient, not lost
    lambda s: s.update(size={"min": "2", "max": 4}),  # taken as 2: lenient, not lost
]


@PROP
@given(pages(), st.integers(0, 10**6), st.sampled_from(range(len(CORRUPTIONS))))
def test_a_wrong_type_is_never_read_as_no_slots(doc: dict[str, Any], pick: int, k: int) -> None:
    query = QUERIES[1]
    lo, hi = query.window
    targets = [
        (hit, s)
        for hit in doc["search"]["hits"]
        for s in (hit.get("availability") or {}).get("slots") or []
        if s["date"]["start"][:10] == DAY
        and lo <= int(s["date"]["start"][11:13]) * 60 + int(s["date"]["start"][14:16]) < hi
    ]
    if not targets:
        return
    hit, slot = targets[pick % len(targets)]
    vid = str(hit["id"]["resy"])
    CORRUPTIONS[k](slot)
    body = orjson.dumps(doc)
    assert decode_page(body) is None  # the typed reading does not guess
    result = asyncio.run(client_for(body).fetch(query))
    table, errors = lenient(orjson.loads(body), query)
    assert [s.slot_id for s in result.as_slots()] == [s.slot_id for s in table.slots()]
    if k < 8:  # unreadable: the venue is unknown, its slots none of the snapshot's
        assert not result.complete and ("venue", vid) in [(f.scope, f.ref) for f in result.failures]
        assert all(s.venue_id != vid for s in result.as_slots())
    else:  # read leniently, as before: the slot is kept
        assert result.complete and errors == []
        assert any(s.venue_id == vid for s in result.as_slots())


def test_the_simulators_pages_take_the_typed_reading() -> None:
    """A page in the real wire format's full shape decodes typed (no lenient fallback)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from simulator.market import Market
    from simulator.server import SimState, search_page

    state = SimState(market=Market(seed=3, venues=150), api_key="k", time_slots=TIMES)
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo("America/New_York"))
    state.freeze(int(t0.timestamp() * 1000))
    body = search_page(
        state, {"slot_filter": {"day": DAY, "party_size": 2, "time_filter": "19:00"}, "page": 1}
    )
    page = decode_page(body)
    assert isinstance(page, Page) and len(page.search.hits) == 20
    doc = orjson.loads(body)
    slots = [s for h in doc["search"]["hits"] for s in h["availability"]["slots"]]
    assert slots and all(set(HEAVY) <= set(s) for s in slots)  # the full shape
    for query in QUERIES:
        assert typed(body, query) == lenient(doc, query)[0]
