"""Resy: area search with pagination (``POST /3/venuesearch/search``) or, for a configured venue
list, the per-venue find (``GET /4/find``). Wire format: field notes §5.

Coverage: the first page says how many venues the area has (``nbHits``) and how many the
server puts on a page; every later page must hold exactly its share. A page that failed after
retries (or came back short) is a ``Failure(scope="page")``; a venue whose find failed is a
``Failure(scope="venue")``; when not even the first page could be read, ``scope="provider"``.

Time coverage: the bucket's ordinary read is the area search, which answers the starts within
the provider's own reach of ``time_filter`` (±150 minutes is what :mod:`producers.windows`
assumes; a provider may answer less). ``/4/find`` answers the whole day, so a venue read by the
fallback may show starts the search never shows. The fallback keeps a venue only when every
start of its find answer inside the bucket window lies within the span of starts the same
fetch's successful pages returned (see :func:`search_span`); otherwise the venue is unknown
(``Failure(scope="venue")``), never read as more than the search would show.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from drops.log import get_log
from producers.providers.base import (
    MINUTE_OF,
    BucketQuery,
    Collector,
    Counters,
    FetchResult,
    SlotIds,
    SlotTable,
)
from producers.providers.native import lib as native
from producers.providers.transport import Decode, Invalid, ProviderError, Transport
from producers.windows import hhmm
from schemas import Failure
from schemas.records import READ_FALLBACK

NAME = "resy"
log = get_log("producer.resy")

Span = tuple[str, str]  # the first and last start time (``YYYY-MM-DD HH:MM:SS``), inclusive


def search_span(acc: Collector) -> Span | None:
    """The span of start times (inside the bucket window) that the search pages read so far
    returned, or ``None`` when they returned none.

    It is what the search is known to cover at this moment: every start in it is one the
    search answers for this ``time_filter`` (a time query covers one range of start times).
    It is never more than the search covers, so a start outside it may or may not be covered;
    and it is learned from the same fetch, so it cannot be stale when the provider changes
    its reach, and a restart forgets nothing. (Starts are ``YYYY-MM-DD HH:MM:SS`` of one day:
    their text order is their time order.)"""
    lo: str | None = None
    hi: str | None = None
    for v in acc.venues.values():
        if v.times:
            a, b = min(v.times), max(v.times)
            lo = a if lo is None or a < lo else lo
            hi = b if hi is None or b > hi else hi
    return None if lo is None or hi is None else (lo, hi)


def beyond_span(times: dict[str, Any] | list[str], span: Span | None) -> list[str]:
    """The start times (inside the window) that the span does not cover, in order."""
    if span is None:
        return sorted(times)
    lo, hi = span
    return sorted(t for t in times if t < lo or t > hi)


# ------------------------------------------------------------------ the typed reading
#
# A search page is decoded straight into these Structs, which name only the fields a snapshot
# uses: msgspec skips the rest of each slot (template, shift, payment, ...) without building
# it. A page that does not fit them (a field missing or of another type anywhere) is not
# guessed at: it is read again as plain JSON by the lenient reading (:func:`parse_venue`),
# which names each venue it cannot read as a failure. So the typed reading only ever
# accepts pages on which both readings give the same slots
# (``tests/unit/test_resy_decode.py`` checks that against the lenient reading).


class _Date(msgspec.Struct, gc=False):
    start: str


class _Config(msgspec.Struct, gc=False):
    type: str | None = None
    token: str | None = None


class _Size(msgspec.Struct, gc=False):
    min: int = 0
    max: int = 0


class _Slot(msgspec.Struct, gc=False):
    date: _Date
    config: _Config
    size: _Size | None = None


class _Availability(msgspec.Struct, gc=False):
    slots: list[_Slot] | None = None


class _VenueId(msgspec.Struct, gc=False):
    resy: int | str


class Hit(msgspec.Struct, gc=False):
    """One venue of a search page. Its descriptive fields are read by :func:`venue_info`
    (the one place for them, in both readings): a new venue field is a field here and a
    line there."""

    id: _VenueId
    availability: _Availability | None = None
    name: Any = None
    location: Any = None
    url_slug: Any = None


class _Search(msgspec.Struct, gc=False):
    hits: list[Hit]
    nbHits: int | None = None


class _Meta(msgspec.Struct, gc=False):
    total: int | None = None


class Page(msgspec.Struct, gc=False):
    search: _Search
    meta: _Meta | None = None


_page_decoder = msgspec.json.Decoder(Page)


def decode_page(body: bytes) -> Page | None:
    """A search page in the typed reading, or ``None`` when it does not fit (then the
    transport parses it as plain JSON for the lenient reading; not JSON at all: malformed)."""
    try:
        return _page_decoder.decode(body)
    except msgspec.DecodeError:  # ValidationError included: not this shape
        return None


def page_decoder(query: BucketQuery) -> Decode:
    """How a search page of ``query``'s bucket is read: natively when the native reader is
    built (``native/``: it reads the bucket's window straight from the bytes, see
    :mod:`producers.providers.native`), else, or when a page is not of the plain shape the
    native reader takes, by :func:`decode_page` (which leaves what it does not take to the
    lenient reading)."""
    if native is None:
        return decode_page
    read, date, (lo, hi) = native.read_search_page, query.date, query.window

    def decode(body: bytes) -> Any:
        got = read(body, date, lo, hi)
        return got if got is not None else decode_page(body)

    return decode


def join_native(gathered: native.Collector, acc: Collector) -> None:
    """The venues the native reader gathered, into ``acc`` (merged with what is there): for
    the rare fetches that also need the Python side (a page read in Python, the fallback, a
    venue failure)."""
    for vid, name, tz, hood, slug, city, times in gathered.export():
        v = acc.venue(vid, name, tz, hood, slug, city)
        for actual, seating, pmin, pmax, token in times:
            for seat in seating or [""]:
                v.add(actual, seat, pmin, pmax, token)


def venue_info(venue: Any) -> tuple[str, str, str, str, str]:
    """``(name, time_zone, neighborhood, slug, city)`` of a venue object of either reading (a
    :class:`Hit`, or a dict of the plain JSON): the one place the venue's fields are taken.

    ``slug`` and ``city`` are what the venue's booking link is built from
    (``domain/booking.py``): its ``url_slug`` and its location's ``url_slug`` (the city, e.g.
    ``new-york-ny``), else the location's ``code`` (``ny``); ``""`` for what the answer does
    not give as text (a link is then not built, never a broken one)."""
    if isinstance(venue, Hit):
        name, loc, slug = venue.name, venue.location, venue.url_slug
    else:
        name, loc, slug = venue.get("name"), venue.get("location"), venue.get("url_slug")
    location: dict[str, Any] = loc if isinstance(loc, dict) else {}
    city = location.get("url_slug") or location.get("code")
    return (
        str(name or ""),
        str(location.get("time_zone") or ""),
        str(location.get("neighborhood") or ""),
        slug if isinstance(slug, str) else "",
        city if isinstance(city, str) else "",
    )


def take_hits(hits: list[Hit], query: BucketQuery, acc: Collector, seen: set[str]) -> None:
    """The typed reading of a page's venues: every slot in the bucket window into ``acc``
    (merged per start time, as :func:`parse_venue` does; no venue can fail here, the types
    were checked by the decoder)."""
    date, (lo, hi), minute_of = query.date, query.window, MINUTE_OF
    add_venue = acc.venue
    for hit in hits:
        vid = hit.id.resy
        venue_id = vid if vid.__class__ is str else str(vid)
        seen.add(venue_id)
        avail = hit.availability
        slots = avail.slots if avail is not None else None
        if not slots:
            continue
        times: dict[str, list[Any]] | None = None
        for s in slots:
            start = s.date.start
            if start[:10] != date:
                continue  # another day
            minute = minute_of.get(start[11:16])
            if minute is None or minute < lo or minute >= hi:
                continue  # another bucket's window (or not a time)
            config, size = s.config, s.size
            seating, token = config.type or "", config.token or ""
            if size is None:
                pmin = pmax = 0
            else:
                pmin, pmax = size.min, size.max
            if times is None:
                times = add_venue(venue_id, *venue_info(hit)).times
            actual = start if len(start) == 19 and start[10] == " " else f"{date} {start[11:16]}:00"
            got = times.get(actual)
            if got is None:
                times[actual] = [[seating] if seating else [], pmin, pmax, token]
                continue
            if seating and seating not in got[0]:
                got[0].append(seating)
            if pmin < got[1]:
                got[1] = pmin
            if pmax > got[2]:
                got[2] = pmax


# ------------------------------------------------------------------ the lenient reading


def _count(doc: Any) -> int:
    """How many venues a page holds, in any reading."""
    if native is not None and isinstance(doc, native.Page):
        return doc.hits
    return len(_hits(doc))


def _hits(doc: Any) -> list[Any]:
    if isinstance(doc, Page):
        return doc.search.hits
    if not isinstance(doc, dict) or not isinstance(doc.get("search"), dict):
        raise Invalid("no search object")
    hits = doc["search"].get("hits")
    if not isinstance(hits, list):
        raise Invalid("search.hits is not a list")
    return hits


def _total(doc: Any) -> int | None:
    if native is not None and isinstance(doc, native.Page):
        return doc.total
    if isinstance(doc, Page):
        meta = doc.search.nbHits
        return meta if meta is not None else (doc.meta.total if doc.meta is not None else None)
    search = doc.get("search", {})
    for value in (search.get("nbHits"), (doc.get("meta") or {}).get("total")):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def parse_venue(
    venue: Any, slots: Any, query: BucketQuery, acc: Collector
) -> tuple[str | None, str | None]:
    """Add the venue's slots in the bucket window to ``acc`` (merged per start time).

    Returns ``(venue_id, error)``: a venue whose entries cannot be read is an error (its slots
    are unknown, and none of them are kept), never silently empty.
    """
    if not isinstance(venue, dict):
        return None, "venue is not an object"
    vid_doc = venue.get("id")
    vid = vid_doc.get("resy") if isinstance(vid_doc, dict) else None
    if not isinstance(vid, (int, str)) or isinstance(vid, bool):
        return None, "venue without id.resy"
    venue_id = str(vid)
    if not isinstance(slots, list):
        return venue_id, "slots is not a list"
    date, (lo, hi), minute_of = query.date, query.window, MINUTE_OF
    times: dict[str, list[Any]] | None = None
    for s in slots:
        try:
            start = s["date"]["start"]
        except (KeyError, TypeError):
            return _bad(acc, venue_id, "slot entry without date.start")
        if start.__class__ is not str:
            return _bad(acc, venue_id, "slot date.start is not text")
        if start[:10] != date:
            continue  # another day
        minute = minute_of.get(start[11:16])
        if minute is None or minute < lo or minute >= hi:
            continue  # another bucket's window (or not a time)
        try:  # the usual shape first, then the lenient reading
            config, size = s["config"], s["size"]
            seating, token, pmin, pmax = config["type"], config["token"], size["min"], size["max"]
        except (KeyError, TypeError):
            try:
                config = s["config"]
                seating, token = config.get("type"), config.get("token")
                size = s.get("size") or {}
                pmin, pmax = size.get("min", 0), size.get("max", 0)
            except (KeyError, TypeError, AttributeError):
                return _bad(acc, venue_id, "slot entry without config or size")
        if pmin.__class__ is not int or pmax.__class__ is not int:
            try:
                pmin, pmax = int(pmin), int(pmax)
            except (TypeError, ValueError):
                return _bad(acc, venue_id, "slot size is not a number")
        if seating.__class__ is not str or token.__class__ is not str:
            seating, token = str(seating or ""), str(token or "")
        if times is None:
            times = acc.venue(venue_id, *venue_info(venue)).times
        actual = start if len(start) == 19 and start[10] == " " else f"{date} {start[11:16]}:00"
        got = times.get(actual)  # VenueSlots.add, inlined: this loop runs a million times
        if got is None:
            times[actual] = [[seating] if seating else [], pmin, pmax, token]
            continue
        if seating and seating not in got[0]:
            got[0].append(seating)
        if pmin < got[1]:
            got[1] = pmin
        if pmax > got[2]:
            got[2] = pmax
    return venue_id, None


def _span_text(span: Span | None) -> str:
    return "none yet" if span is None else f"{span[0][11:16]}-{span[1][11:16]}"


def _bad(acc: Collector, venue_id: str, error: str) -> tuple[str, str]:
    acc.discard(venue_id)  # what was added of this venue is not a whole answer
    return venue_id, error


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
        directory: tuple[str, ...] = (),
        fallback_max: int = 500,
    ) -> None:
        self.transport, self.base_url = transport, base_url.rstrip("/")
        self.per_page = max(1, min(per_page, 100))
        self.venue_ids = venue_ids
        # venues known to exist in the area: named in config or seen in any answer
        self.directory: set[str] = set(directory) | set(venue_ids)
        self.fallback_max = fallback_max
        self._ids = SlotIds(NAME)
        self.geo = geo or {"latitude": 40.7128, "longitude": -74.006, "radius": 35420}
        transport.secret(api_key)
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
            hits = _count(doc)
            if expect is not None and hits != expect:
                raise Invalid(f"page {page} has {hits} venues, expected {expect}")

        return await self.transport.request_json(
            NAME,
            "POST",
            f"{self.base_url}/3/venuesearch/search",
            c,
            json=self._body(query, page, per_page),
            headers=self._headers,
            validate=validate,
            decode=page_decoder(query),
        )

    async def _fetch_area(self, query: BucketQuery) -> FetchResult:
        """Every page of the area search, each parsed as soon as it arrives. A page that
        failed after retries is fetched again venue by venue (``/4/find``) when the venue
        directory can name its venues (see :meth:`_fallback`); otherwise it stays a failure."""
        c = Counters()
        failures: list[Failure] = []
        acc = Collector(NAME, self._ids)
        seen: set[str] = set()
        # the native reading's venues (None when not built, or once handed to acc)
        gathered: native.Collector | None = native.Collector() if native is not None else None

        def take(doc: Any) -> int:
            if gathered is not None and isinstance(doc, native.Page):  # the usual case
                gathered.take(doc)
                seen.update(doc.venue_ids())
                return doc.hits
            hits = _hits(doc)
            if isinstance(doc, Page):  # the typed reading
                take_hits(doc.search.hits, query, acc, seen)
                return len(hits)
            for hit in hits:
                avail = hit.get("availability") if isinstance(hit, dict) else None
                slots = avail.get("slots") if isinstance(avail, dict) else None
                vid, error = parse_venue(hit, slots if slots is not None else [], query, acc)
                if error is not None:
                    failures.append(Failure("venue", vid or "?", error))
                if vid is not None:
                    seen.add(vid)
            return len(hits)

        async def page(p: int, size: int, expect: int | None) -> None:
            try:
                take(await self._page(query, p, size, expect, c))
            except ProviderError as err:
                failures.append(Failure("page", str(p), str(err)))

        try:
            first = await self._page(query, 1, self.per_page, None, c)
        except ProviderError as err:
            failures.append(Failure("provider", "search", str(err)))
            return FetchResult(NAME, SlotTable(NAME), False, failures, 0, c.requests, c.retries)
        total = _total(first)
        size = take(first)
        del first
        if total is not None and total > size:
            if size == 0:
                failures.append(Failure("page", "1", f"empty first page of {total} venues"))
            else:
                pages = -(-total // size)
                await asyncio.gather(
                    *(page(p, size, min(size, total - (p - 1) * size)) for p in range(2, pages + 1))
                )
        elif total is None and size >= self.per_page:
            p = 2  # no total: walk until a short page
            while True:
                try:
                    got = take(await self._page(query, p, size, None, c))
                except ProviderError as err:
                    failures.append(Failure("page", str(p), str(err)))
                    break
                if got < size:
                    break
                p += 1
        self.directory.update(seen)
        read = beyond = 0
        fallback = total is not None and any(f.scope == "page" for f in failures)
        if gathered is not None and (fallback or failures or acc.venues):
            join_native(gathered, acc)  # the Python side is needed: it takes every venue
            gathered = None
        if fallback and total is not None:
            failures, read, beyond = await self._fallback(query, total, seen, failures, acc, c)
        for f in failures:  # the failed venues' slots are unknown: keep none of them
            if f.scope == "venue":
                acc.discard(f.ref)
        slots_out = SlotTable(NAME, *gathered.table(NAME)) if gathered is not None else acc.table()
        return FetchResult(
            NAME,
            slots_out,
            not failures,
            failures,
            len(seen),
            c.requests,
            c.retries,
            fallback_venues=read,
            contradictions=beyond,
        )

    async def _fallback(
        self,
        query: BucketQuery,
        total: int,
        seen: set[str],
        failures: list[Failure],
        acc: Collector,
        c: Counters,
    ) -> tuple[list[Failure], int, int]:
        """Per-venue find for the venues of failed pages; returns the failures, the venues
        read by find and the venues whose find contradicted the search's coverage.

        The failed pages held ``total - len(seen)`` venues. The candidates are the venues of
        the directory (every venue this client has seen in an area page or a find, plus the
        configured ones) not seen in this fetch. Only when there are exactly as many
        candidates as missing venues, and every find succeeds, do the page failures go away:
        then every venue whose slots could be in the processor's state was read again. In
        every other case the page failures stay (the snapshot stays incomplete) and the
        slots that were found are only added.

        A find answers the venue's whole day, the search only its reach around
        ``time_filter``. A found venue is kept only when all its starts in the bucket window
        lie within :func:`search_span` of this fetch's successful pages: then it holds
        exactly what the search would have shown. Otherwise (a start the search is not known
        to cover, or no span yet) the venue is unknown: a named ``Failure(scope="venue")``,
        which still lets the page failures go (the venue is named, the processor keeps its
        slots), and the answer is logged and counted as one contradicting the window."""
        missing = total - len(seen)
        candidates = sorted(self.directory - seen)
        if not candidates or missing <= 0 or len(candidates) > self.fallback_max:
            return failures, 0, 0
        span = search_span(acc)  # before any find adds to acc
        results = await asyncio.gather(
            *(self.find(query, vid, c) for vid in candidates), return_exceptions=True
        )
        venue_failures: list[Failure] = []
        uncovered: list[Failure] = []
        read = 0
        for vid, res in zip(candidates, results, strict=True):
            if isinstance(res, BaseException):
                if not isinstance(res, ProviderError):
                    raise res
                venue_failures.append(Failure("venue", vid, f"fallback find: {res}"))
                continue
            error = self._take_find(res, vid, query, acc)
            if error is not None:
                venue_failures.append(Failure("venue", vid, f"fallback find: {error}"))
                continue
            found = acc.venues.get(vid)
            if found is None:  # no start in the window: the search would show none either
                seen.add(vid)
                read += 1
                continue
            beyond = beyond_span(found.times, span)
            if beyond:
                acc.discard(vid)
                uncovered.append(
                    Failure(
                        "venue",
                        vid,
                        f"fallback find: {len(beyond)} starts ({beyond[0][11:16]}..) outside "
                        f"what the search covers ({_span_text(span)}): unknown",
                    )
                )
                continue
            found.read_via = READ_FALLBACK
            seen.add(vid)
            read += 1
        if uncovered:
            log.warning(
                "coverage_contradiction",
                provider=NAME,
                date=query.date,
                time_slot=query.time_slot,
                window=f"{hhmm(query.window[0])}-{hhmm(query.window[1] - 1)}",
                search_span=_span_text(span),
                venues=len(uncovered),
                first=uncovered[0].ref,
            )
        covered = len(candidates) == missing and not venue_failures
        kept = [f for f in failures if f.scope != "page"] if covered else failures
        return kept + venue_failures + uncovered, read, len(uncovered)

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

    def _take_find(self, doc: Any, vid: str, query: BucketQuery, acc: Collector) -> str | None:
        """Add one find answer's slots for ``vid`` to ``acc``; an error text when unusable."""
        rows = [
            r
            for r in doc["results"]["venues"]
            if isinstance(r, dict)
            and isinstance(r.get("venue"), dict)
            and str((r["venue"].get("id") or {}).get("resy")) == vid
        ]
        if not rows:
            return "venue missing from find results"
        _, error = parse_venue(rows[0]["venue"], rows[0].get("slots", []), query, acc)
        return error

    async def _fetch_venues(self, query: BucketQuery) -> FetchResult:
        c = Counters()
        failures: list[Failure] = []
        acc = Collector(NAME, self._ids)
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
            error = self._take_find(res, vid, query, acc)
            if error is not None:
                failures.append(Failure("venue", vid, error))
                continue
            seen += 1
        return FetchResult(NAME, acc.table(), not failures, failures, seen, c.requests, c.retries)
