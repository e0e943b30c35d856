"""One answer, whichever endpoint gave it: for any simulated market (any search reach, the
windows' ±150 or narrower, symmetric or not) and any set of failed search pages, the snapshot
the Resy client builds with its per-venue fallback is, over the bucket's coverage, the snapshot
the search alone builds at that moment; where the fallback cannot know that, the snapshot is
incomplete and holds no more than the search would show.

The reference is plain: the same client, the same frozen market, no page failing."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from producers.providers.base import BucketQuery, FetchResult
from producers.providers.resy import ResyClient
from producers.providers.transport import Policy, Transport
from producers.windows import bucket_window, minutes
from schemas import Slot, slot_id
from simulator.market import Market
from simulator.server import create_app

NY = ZoneInfo("America/New_York")
T0 = int(datetime(2026, 3, 2, 9, 0, tzinfo=NY).timestamp() * 1000)
DAY = "2026-03-04"
TIMES = ("15:00", "19:00")


class FailPages(httpx.AsyncBaseTransport):
    """The simulator, except that the area-search pages in ``pages`` always answer 503."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.pages: frozenset[int] = frozenset()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/3/venuesearch/search" and orjson.loads(request.content)["page"] in self.pages:
            return httpx.Response(503, json={"message": "unavailable"})
        return await self.inner.handle_async_request(request)


def fetch_both(
    market: Market, per_page: int, time_slot: str, failed: frozenset[int]
) -> tuple[FetchResult, FetchResult]:
    """(the search alone, the same moment with ``failed`` pages and the fallback)."""
    app = create_app(market, api_key="k", scripted=True)
    failing = FailPages(httpx.ASGITransport(app=app))
    http = httpx.AsyncClient(transport=failing, base_url="http://sim")
    transport = Transport(Policy(max_retries=0, retry_base=0.0), client=http)
    resy = ResyClient(transport, "http://sim", "k", "Mozilla/5.0 test", per_page=per_page)
    query = BucketQuery(DAY, time_slot, 2, bucket_window(time_slot, TIMES))

    async def scenario() -> tuple[FetchResult, FetchResult]:
        await http.post("/_control/freeze", json={"at_ms": T0})
        alone = await resy.fetch(query)  # also teaches the client the area's venues
        failing.pages = failed
        with_fallback = await resy.fetch(query)
        await http.aclose()
        return alone, with_fallback

    return asyncio.run(scenario())


def by_venue(slots: list[Slot]) -> dict[str, set[Slot]]:
    out: dict[str, set[Slot]] = {}
    for s in slots:
        out.setdefault(s.venue_id, set()).add(replace(s, read_via="search"))
    return out


def start(s: Slot) -> int:
    return minutes(s.actual_time[11:16])


reaches = st.one_of(
    st.sampled_from([(150, 150), (120, 120), (90, 150), (150, 60), (0, 0)]),
    st.tuples(st.integers(0, 180), st.integers(0, 180)),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    venues=st.one_of(st.integers(1, 30), st.integers(60, 200), st.integers(60, 200)),
    per_page=st.integers(3, 20),
    reach=reaches,
    time_slot=st.sampled_from(TIMES),
    data=st.data(),
)
def test_the_fallback_answers_what_the_search_would_have(
    seed: int,
    venues: int,
    per_page: int,
    reach: tuple[int, int],
    time_slot: str,
    data: st.DataObject,
) -> None:
    market = Market(seed=seed, venues=venues, churn=0.0, reach=reach)
    pages = -(-venues // per_page)
    later = st.sets(st.integers(2, pages), min_size=1) if pages > 1 else st.just(set())
    some = st.one_of(later, later, later, st.sets(st.integers(1, pages)))  # page 1 sometimes
    failed = frozenset(data.draw(some, label="failed pages"))
    alone, fb = fetch_both(market, per_page, time_slot, failed)

    # the bucket's coverage: what the search answers for this time filter, inside the window
    lo, hi = bucket_window(time_slot, TIMES)
    a, b = market.around(minutes(time_slot[:2] + ":00"))
    cover = range(max(lo, a), min(hi, b))
    assert alone.complete
    reference = market.open_slots("resy", datetime.fromisoformat(DAY).date(),
                                  cover.start, cover.stop, 2, T0)  # fmt: skip
    assert {s.slot_id for s in alone.as_slots()} == {
        slot_id("resy", str(r.venue.id), r.actual_time) for r in reference
    }

    got = fb.as_slots()
    assert all(start(s) in cover for s in got), "a slot the search never shows"
    want, have = by_venue(alone.as_slots()), by_venue(got)
    unknown = {f.ref for f in fb.failures if f.scope == "venue"}
    wide = any(f.scope != "venue" for f in fb.failures)
    assert not unknown & set(have), "a venue both unknown and read"
    for vid, slots in have.items():  # every venue read is read exactly as the search reads it
        assert slots == want.get(vid, set()), vid
    if not wide:  # every venue is either read or named unknown: the rest read as empty
        for vid in set(want) - unknown:
            assert have.get(vid, set()) == want[vid], vid
    assert fb.complete == (not fb.failures)
    if fb.complete:
        assert {replace(s, read_via="search") for s in got} == set(alone.as_slots())
    reads = sorted({s.read_via for s in got})
    event(f"failed pages: {bool(failed)}, fallback read: {fb.fallback_venues > 0}, ")
    event(f"complete: {fb.complete}, contradictions: {fb.contradictions > 0}, via {reads}")
