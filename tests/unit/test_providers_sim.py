"""The Resy client against the simulator's real wire format (in process, no sockets): a page
that fails after retries is read venue by venue, and the snapshot is then exactly the
simulator's reference set."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import orjson

from producers.providers.base import BucketQuery
from producers.providers.resy import ResyClient
from producers.providers.transport import Policy, Transport
from producers.windows import bucket_window
from simulator.market import Market
from simulator.server import create_app

NY = ZoneInfo("America/New_York")
T0 = int(datetime(2026, 3, 2, 9, 0, tzinfo=NY).timestamp() * 1000)
DAY = "2026-03-04"


class FailPage(httpx.AsyncBaseTransport):
    """The simulator, except that one area-search page always answers 503."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.page = inner, 0
        self.finds = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/3/venuesearch/search":
            if orjson.loads(request.content)["page"] == self.page:
                return httpx.Response(503, json={"message": "unavailable"})
        elif request.url.path == "/4/find":
            self.finds += 1
        return await self.inner.handle_async_request(request)


def test_a_failed_page_is_read_by_find_and_matches_the_reference() -> None:
    app = create_app(Market(seed=5, venues=120), api_key="k", scripted=True)
    failing = FailPage(httpx.ASGITransport(app=app))
    client = httpx.AsyncClient(transport=failing, base_url="http://sim")
    transport = Transport(Policy(max_retries=1, retry_base=0.0), client=client)
    resy = ResyClient(transport, "http://sim", "k", "Mozilla/5.0 test", per_page=25)
    query = BucketQuery(DAY, "19:00", 2, bucket_window("19:00", ("15:00", "19:00")))

    async def scenario() -> None:
        await client.post("/_control/freeze", json={"at_ms": T0})
        ref = (await client.get("/_control/slots", params={"date": DAY, "time_slot": "19:00",
                                                          "provider": "resy"})).json()  # fmt: skip
        expected = {s["slot_id"] for s in ref["slots"]}
        first = await resy.fetch(query)
        assert first.complete and {s.slot_id for s in first.as_slots()} == expected
        failing.page = 3  # venues 51..75 of 120
        second = await resy.fetch(query)
        assert second.complete and second.failures == []
        assert {s.slot_id for s in second.as_slots()} == expected
        assert failing.finds == 25
        # a directory that does not know one venue of the failed page (1060): 24 candidates
        # for 25 missing venues, so the page failure stays, and what was found is added
        known = tuple(str(1001 + i) for i in range(120) if 1001 + i != 1060)
        fresh = ResyClient(transport, "http://sim", "k", "Mozilla/5.0 test", per_page=25,
                           directory=known)  # fmt: skip
        third = await fresh.fetch(query)
        assert not third.complete and [f.scope for f in third.failures] == ["page"]
        got = {s.slot_id for s in third.as_slots()}
        assert got < expected and all(s.venue_id != "1060" for s in third.as_slots())
        await client.aclose()

    asyncio.run(scenario())
