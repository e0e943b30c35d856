"""Resy: area search with pagination (``POST /3/venuesearch/search``) or, for a configured venue
list, the per-venue find (``GET /4/find``). Wire format: field notes §5.

Coverage: the first page says how many venues the area has (``nbHits``) and how many the
server puts on a page; every later page must hold exactly its share. A page that failed after
retries (or came back short) is a ``Failure(scope="page")``; a venue whose find failed is a
``Failure(scope="venue")``; when not even the first page could be read, ``scope="provider"``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from producers.providers.base import BucketQuery, Counters, FetchResult, SlotEntry, merge
from producers.providers.base import start_minute as _start
from producers.providers.transport import Invalid, ProviderError, Transport
from schemas import Failure

NAME = "resy"


def _hits(doc: Any) -> list[Any]:
    if not isinstance(doc, dict) or not isinstance(doc.get("search"), dict):
        raise Invalid("no search object")
    hits = doc["search"].get("hits")
    if not isinstance(hits, list):
        raise Invalid("search.hits is not a list")
    return hits


def _total(doc: Any) -> int | None:
    search = doc.get("search", {})
    for value in (search.get("nbHits"), (doc.get("meta") or {}).get("total")):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def parse_venue(
    venue: Any, slots: Any, query: BucketQuery, out: list[SlotEntry]
) -> tuple[str | None, str | None]:
    """Append the venue's slots in the bucket window to ``out``.

    Returns ``(venue_id, error)``: a venue whose entries cannot be read is an error (its slots
    are unknown), never silently empty.
    """
    if not isinstance(venue, dict):
        return None, "venue is not an object"
    vid_doc = venue.get("id")
    vid = vid_doc.get("resy") if isinstance(vid_doc, dict) else None
    if not isinstance(vid, (int, str)) or isinstance(vid, bool):
        return None, "venue without id.resy"
    venue_id = str(vid)
    loc = venue.get("location")
    location: dict[str, Any] = loc if isinstance(loc, dict) else {}
    name = str(venue.get("name") or "")
    tz = str(location.get("time_zone") or "")
    hood = str(location.get("neighborhood") or "")
    if not isinstance(slots, list):
        return venue_id, "slots is not a list"
    lo, hi = query.window
    entries: list[SlotEntry] = []
    for s in slots:
        try:
            start = s["date"]["start"]
            config = s["config"]
            size = s.get("size") or {}
            seating = str(config.get("type") or "")
            token = str(config.get("token") or "")
            pmin, pmax = int(size.get("min", 0)), int(size.get("max", 0))
        except (KeyError, TypeError, AttributeError, ValueError):
            return venue_id, "slot entry without date.start or config"
        if not isinstance(start, str):
            return venue_id, "slot date.start is not text"
        minute = _start(start, query.date)
        if minute is None or not lo <= minute < hi:
            continue  # another day or another bucket's window
        actual = start if len(start) == 19 else start[:16] + ":00"
        entries.append(SlotEntry(venue_id, name, tz, hood, actual, seating, pmin, pmax, token))
    out.extend(entries)
    return venue_id, None


class ResyClient:
    name = NAME

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        api_key: str,
        user_agent: str,
        per_page: int = 100,
        venue_ids: tuple[str, ...] = (),
        geo: dict[str, Any] | None = None,
    ) -> None:
        self.transport, self.base_url = transport, base_url.rstrip("/")
        self.per_page = max(1, min(per_page, 100))
        self.venue_ids = venue_ids
        self.geo = geo or {"latitude": 40.7128, "longitude": -74.006, "radius": 35420}
        self._headers = {
            "Authorization": f'ResyAPI api_key="{api_key}"',
            "User-Agent": user_agent,
            "Accept": "application/json",
            "Origin": "https://resy.com",
        }

    def __repr__(self) -> str:  # never shows the key
        return f"ResyClient({self.base_url!r}, venues={len(self.venue_ids) or 'area'})"

    async def aclose(self) -> None:
        return None

    async def fetch(self, query: BucketQuery) -> FetchResult:
        if self.venue_ids:
            return await self._fetch_venues(query)
        return await self._fetch_area(query)

    # ------------------------------------------------------------------ area search

    def _body(self, query: BucketQuery, page: int, per_page: int) -> dict[str, Any]:
        return {
            "availability": True,
            "page": page,
            "per_page": per_page,
            "slot_filter": {
                "day": query.date,
                "party_size": query.party_size,
                "time_filter": query.time_slot[:2] + ":00",
            },
            "types": ["venue"],
            "order_by": "availability",
            "geo": self.geo,
            "query": "",
        }

    async def _page(
        self, query: BucketQuery, page: int, per_page: int, expect: int | None, c: Counters
    ) -> Any:
        def validate(doc: Any) -> None:
            hits = _hits(doc)
            if expect is not None and len(hits) != expect:
                raise Invalid(f"page {page} has {len(hits)} venues, expected {expect}")

        return await self.transport.request_json(
            NAME,
            "POST",
            f"{self.base_url}/3/venuesearch/search",
            c,
            json=self._body(query, page, per_page),
            headers=self._headers,
            validate=validate,
        )

    async def _fetch_area(self, query: BucketQuery) -> FetchResult:
        c = Counters()
        failures: list[Failure] = []
        entries: list[SlotEntry] = []
        seen: set[str] = set()
        try:
            first = await self._page(query, 1, self.per_page, None, c)
        except ProviderError as err:
            failures.append(Failure("provider", "search", str(err)))
            return FetchResult(NAME, [], False, failures, 0, c.requests, c.retries)
        hits = _hits(first)
        total = _total(first)
        size = len(hits)
        docs: list[tuple[int, Any]] = [(1, first)]
        if total is not None and total > size:
            if size == 0:
                failures.append(Failure("page", "1", f"empty first page of {total} venues"))
            else:
                pages = -(-total // size)
                expect = {p: min(size, total - (p - 1) * size) for p in range(2, pages + 1)}
                results = await asyncio.gather(
                    *(self._page(query, p, size, expect[p], c) for p in expect),
                    return_exceptions=True,
                )
                for p, res in zip(expect, results, strict=True):
                    if isinstance(res, ProviderError):
                        failures.append(Failure("page", str(p), str(res)))
                    elif isinstance(res, BaseException):
                        raise res
                    else:
                        docs.append((p, res))
        elif total is None and size >= self.per_page:
            page = 2  # no total: walk until a short page
            while True:
                try:
                    doc = await self._page(query, page, size, None, c)
                except ProviderError as err:
                    failures.append(Failure("page", str(page), str(err)))
                    break
                docs.append((page, doc))
                if len(_hits(doc)) < size:
                    break
                page += 1
        for _, doc in docs:
            for hit in _hits(doc):
                avail = hit.get("availability") if isinstance(hit, dict) else None
                slots = avail.get("slots") if isinstance(avail, dict) else None
                vid, error = parse_venue(hit, slots if slots is not None else [], query, entries)
                if error is not None:
                    failures.append(Failure("venue", vid or "?", error))
                if vid is not None:
                    seen.add(vid)
        slots_out = merge(NAME, entries)
        if failures:  # keep only what parsed; the failed venues' slots are unknown
            bad = {f.ref for f in failures if f.scope == "venue"}
            slots_out = [s for s in slots_out if s.venue_id not in bad]
        return FetchResult(
            NAME, slots_out, not failures, failures, len(seen), c.requests, c.retries
        )

    # ------------------------------------------------------------------ per-venue find

    async def find(self, query: BucketQuery, venue_id: str, c: Counters) -> Any:
        def validate(doc: Any) -> None:
            venues = (doc.get("results") or {}).get("venues") if isinstance(doc, dict) else None
            if not isinstance(venues, list):
                raise Invalid("no results.venues list")

        return await self.transport.request_json(
            NAME,
            "GET",
            f"{self.base_url}/4/find",
            c,
            params={
                "lat": 0,
                "long": 0,
                "day": query.date,
                "party_size": query.party_size,
                "venue_id": venue_id,
            },
            headers=self._headers,
            validate=validate,
        )

    async def _fetch_venues(self, query: BucketQuery) -> FetchResult:
        c = Counters()
        failures: list[Failure] = []
        entries: list[SlotEntry] = []
        seen = 0
        results = await asyncio.gather(
            *(self.find(query, vid, c) for vid in self.venue_ids), return_exceptions=True
        )
        for vid, res in zip(self.venue_ids, results, strict=True):
            if isinstance(res, ProviderError):
                failures.append(Failure("venue", vid, str(res)))
                continue
            if isinstance(res, BaseException):
                raise res
            rows = [
                r
                for r in res["results"]["venues"]
                if isinstance(r, dict)
                and isinstance(r.get("venue"), dict)
                and str((r["venue"].get("id") or {}).get("resy")) == vid
            ]
            if not rows:
                failures.append(Failure("venue", vid, "venue missing from find results"))
                continue
            mine: list[SlotEntry] = []
            _, error = parse_venue(rows[0]["venue"], rows[0].get("slots", []), query, mine)
            if error is not None:
                failures.append(Failure("venue", vid, error))
                continue
            entries.extend(mine)
            seen += 1
        slots = merge(NAME, entries)
        return FetchResult(NAME, slots, not failures, failures, seen, c.requests, c.retries)
