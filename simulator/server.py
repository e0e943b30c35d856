"""The provider simulator: an HTTP server speaking Resy's and OpenTable's wire formats over a
seeded :class:`~simulator.market.Market`, with control endpoints for tests.

Provider endpoints (field notes §5)
- ``POST /3/venuesearch/search`` (Resy area search; ``per_page`` capped at 100, pages from 1)
- ``GET /4/find?day=&party_size=&venue_id=`` (Resy per-venue find; the whole day)
- ``POST /dapi/fe/gql?optype=query&opname=RestaurantsAvailability`` (OpenTable GraphQL)

A time query (Resy ``time_filter``, OpenTable ``time``) answers the slots starting within the
market's reach of the asked time (±150 minutes unless ``sim_reach`` says otherwise, e.g.
``120`` or ``90,150`` for minutes before and after; OpenTable never more than its
``backwardMinutes``/``forwardMinutes``); the clients keep the bucket's own window of those
(:mod:`producers.windows`). ``/4/find`` answers the venue's whole day. Resy endpoints need
``Authorization: ResyAPI api_key="<key>"`` (419 otherwise) and a ``User-Agent`` (500 without
one), like the real API.

Control endpoints (JSON, never faulted), see :mod:`simulator.control` for a client:
- ``POST /_control/open``   ``{provider, venue_id, actual_time, seating_types?,
  party_min?, party_max?}``
- ``POST /_control/close``  ``{provider, venue_id, actual_time}``
- ``POST /_control/faults`` ``{kind, count? | rate?, provider?, endpoint?, retry_after?,
  delay_ms?, status?}`` (``endpoint``: ``search``, ``find``, ``availability`` or ``*``)
  kinds: ``5xx``, ``timeout``, ``429``, ``403``, ``malformed``, ``truncated``, ``slow``;
  ``DELETE /_control/faults`` removes all; ``GET /_control/faults`` lists them.
- ``POST /_control/freeze`` ``{at_ms?}`` (scripted mode: no churn, only scripted changes),
  ``POST /_control/unfreeze``
- ``POST /_control/clock`` ``{now_ms} | {advance_ms} | {wall: true}``
- ``POST /_control/reset`` (overlay, faults, clock and mode back to the start)
- ``GET /_control/slots?date=&time_slot=[&party_size=][&provider=]``: the exact open set
  that a bucket's snapshot should hold (its window, within the search reach)
- ``GET /_control/venues?provider=``, ``GET /_control/stats``, ``GET /_control/health``
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from drops.clock import Clock
from drops.errors import BadRequest
from drops.log import get_log
from drops.settings import Settings
from producers.windows import bucket_window, minutes
from schemas import ids
from simulator.market import Market, Overlay, Override, SimSlot, Venue, mix

log = get_log("simulator")

FAULT_KINDS = ("5xx", "timeout", "429", "403", "malformed", "truncated", "slow")
MAX_PER_PAGE = 100
ENDPOINTS = ("*", "search", "find", "availability")


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status, headers, media_type="application/json")


@dataclass(slots=True)
class Fault:
    id: int
    kind: str
    provider: str = "*"  # "resy", "opentable" or "*"
    endpoint: str = "*"  # "search", "find", "availability" or "*"
    remaining: int | None = None  # the next N matching requests ...
    rate: float = 0.0  # ... or this share of them
    retry_after: float = 1.0
    delay_ms: int = 2000
    status: int = 503
    applied: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "provider": self.provider,
            "endpoint": self.endpoint,
            "remaining": self.remaining,
            "rate": self.rate,
            "retry_after": self.retry_after,
            "delay_ms": self.delay_ms,
            "status": self.status,
            "applied": self.applied,
        }


@dataclass(slots=True)
class SimState:
    """The simulator's mutable shell around the pure market."""

    market: Market
    api_key: str
    time_slots: tuple[str, ...]
    party_size: int = 2
    clock: Clock = field(default_factory=Clock)
    scripted: bool = False
    initial_scripted: bool = False
    frozen_ms: int = 0
    fixed_clock_ms: int | None = None
    overlay: Overlay = field(default_factory=Overlay)
    faults: list[Fault] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    counts: Counter[str] = field(default_factory=Counter)
    cache_budget: int = 512 << 20  # bytes of rendered pages kept (0: no cache)
    _cache: dict[tuple[Any, ...], bytes] = field(default_factory=dict)
    _cache_stamp: tuple[int, int] = (-1, -1)
    _cache_bytes: int = 0
    # one venue's rendered search hit, per (venue id, day, lo, hi, party): (its overlay
    # version, the bytes: a window into the cached page that holds them); for the model
    # minute ``_hits_minute`` only
    _hits: dict[tuple[Any, ...], tuple[int, memoryview]] = field(default_factory=dict)
    _hits_minute: int = -1
    _next_fault: int = 1

    def cached(self, key: tuple[Any, ...], model_ms: int) -> bytes | None:
        """A page rendered from this very market state (model minute and overlay), if kept."""
        stamp = (model_ms // 60_000, self.overlay.version)
        if stamp != self._cache_stamp:
            self._cache.clear()
            self._cache_stamp, self._cache_bytes = stamp, 0
            return None
        return self._cache.get(key)

    def store(self, key: tuple[Any, ...], data: bytes) -> bool:
        if self._cache_bytes + len(data) <= self.cache_budget:
            self._cache[key] = data
            self._cache_bytes += len(data)
            return True
        return False

    def hits_for(self, model_ms: int) -> dict[tuple[Any, ...], tuple[int, memoryview]]:
        """The venues' rendered hits of this model minute (an empty map at a new minute:
        the market itself has moved)."""
        minute = model_ms // 60_000
        if minute != self._hits_minute:
            self._hits.clear()
            self._hits_minute = minute
        return self._hits

    def clock_ms(self) -> int:
        return self.fixed_clock_ms if self.fixed_clock_ms is not None else self.clock.now_ms()

    def model_ms(self) -> int:
        """The time the market is evaluated at (frozen in scripted mode)."""
        return self.frozen_ms if self.scripted else self.clock_ms()

    def freeze(self, at_ms: int | None = None) -> None:
        self.frozen_ms = self.clock_ms() if at_ms is None else at_ms
        self.scripted = True

    def add_fault(self, **spec: Any) -> Fault:
        kind = str(spec.get("kind", ""))
        if kind not in FAULT_KINDS:
            raise BadRequest(f"fault kind must be one of {FAULT_KINDS}, not {kind!r}")
        if str(spec.get("endpoint") or "*") not in ENDPOINTS:
            raise BadRequest(f"fault endpoint must be one of {ENDPOINTS}")
        count, rate = spec.get("count"), float(spec.get("rate") or 0.0)
        if count is None and rate <= 0:
            count = 1
        if not 0.0 <= rate <= 1.0:
            raise BadRequest("fault rate must be within 0..1")
        fault = Fault(
            id=self._next_fault,
            kind=kind,
            provider=str(spec.get("provider") or "*"),
            endpoint=str(spec.get("endpoint") or "*"),
            remaining=None if count is None else int(count),
            rate=rate if count is None else 0.0,
            retry_after=float(spec.get("retry_after", 1.0)),
            delay_ms=int(spec.get("delay_ms", 30_000 if kind == "timeout" else 2000)),
            status=int(spec.get("status", 503)),
        )
        self._next_fault += 1
        self.faults.append(fault)
        return fault

    def pick_fault(self, provider: str, endpoint: str = "*") -> Fault | None:
        for fault in self.faults:
            if fault.provider not in ("*", provider) or fault.endpoint not in ("*", endpoint):
                continue
            if fault.remaining is not None:
                if fault.remaining > 0:
                    fault.remaining -= 1
                    fault.applied += 1
                    return fault
            elif self.rng.random() < fault.rate:
                fault.applied += 1
                return fault
        return None

    def reset(self) -> None:
        self.overlay.clear()
        self.faults.clear()
        self.fixed_clock_ms = None
        self.scripted = False
        if self.initial_scripted:
            self.freeze()
        self.counts.clear()


# ------------------------------------------------------------------ payload builders (pure)


_HMS = [f"{m // 60:02d}:{m % 60:02d}:00" for m in range(24 * 60)]


def _token(slot: SimSlot, seating: str, party: int, model_ms: int) -> str:
    nonce = mix(slot.config_id ^ (model_ms // 300_000)) & 0xFFFFFF  # tokens rotate
    return (
        f"rgs://resy/{slot.venue.id}/{slot.config_id}/{party}/{slot.day.isoformat()}/"
        f"{slot.actual_time[11:]}/{seating}/{nonce:06x}"
    )


_SERVICES = ((0, "Lunch", "11:30:00", "15:00:00"), (1, "Dinner", "16:30:00", "23:00:00"))


def _text(value: str) -> str:
    return orjson.dumps(value).decode()


def resy_slots(slots: list[SimSlot], party: int, model_ms: int) -> orjson.Fragment:
    """Resy lists one entry per (start time, seating type), each in the real answer's full
    shape (field notes §8: config, date, size, quantity, template, shift, payment,
    availability, status, exclusive, time, reservation_config), so a client pays for the
    bytes a real page carries. Written as JSON text (a page holds hundreds of entries)."""
    if not slots:
        return orjson.Fragment(b"[]")
    day = slots[0].day
    dstr = day.isoformat()
    head, next_head = dstr + " ", (day + timedelta(days=1)).isoformat() + " "
    rot = model_ms // 300_000
    vid = slots[0].venue.id
    texts: dict[str, str] = {}
    out: list[str] = []
    for s in slots:
        m, cfg = s.minute, s.config_id
        start = head + _HMS[m]
        end = head + _HMS[m + 90] if m + 90 < 1440 else next_head + _HMS[m + 90 - 1440]
        nonce = mix(cfg ^ rot) & 0xFFFFFF
        tok = f"rgs://resy/{vid}/{cfg}/{party}/{dstr}/{_HMS[m]}/"
        sid, service, shift_from, shift_to = _SERVICES[m >= 15 * 60]
        shift = cfg % 97 * 2 + sid
        hour = m // 60 % 12 or 12
        display = f"{hour}:{m % 60:02d} {'PM' if m >= 720 else 'AM'}"
        for k, seating in enumerate(s.seating):
            name = texts.get(seating)
            if name is None:
                name = texts[seating] = _text(seating)
            token = _text(f"{tok}{seating}/{nonce:06x}")
            out.append(
                f'{{"config":{{"id":{cfg * 10 + k},"type":{name},"token":{token}}},'
                f'"date":{{"start":"{start}","end":"{end}"}},'
                f'"size":{{"min":{s.party_min},"max":{s.party_max}}},'
                f'"quantity":{1 + (cfg >> 3) % 3},'
                f'"template":{{"id":{vid * 10 + k},"is_paid":false,"display_name":{name},'
                f'"image":null,"is_default":{_b(k == 0)}}},'
                f'"shift":{{"id":{shift},"day":"{dstr}","service":{{"type":"{service}",'
                f'"id":{sid + 1}}},"time_start":"{shift_from}","time_end":"{shift_to}"}},'
                f'"payment":{{"cancellation_fee":null,"deposit_fee":null,"is_paid":false,'
                f'"payment_structure":0,"secs_cancel_cut_off":null,"secs_change_cut_off":null,'
                f'"service_charge":null,"service_charge_options":[],"time_cancel_cut_off":null,'
                f'"time_change_cut_off":null,"venue_share":null}},'
                f'"availability":{{"id":3}},"status":{{"id":1}},'
                f'"exclusive":{{"id":0,"is_eligible":false}},'
                f'"time":{{"turn_time":90,"display":"{display}"}},'
                f'"reservation_config":{{"badge":null,"min_party_size":{s.party_min},'
                f'"max_party_size":{s.party_max},"is_auto_accept":true}}}}'
            )
    return orjson.Fragment(("[" + ",".join(out) + "]").encode())


def _b(value: bool) -> str:
    return "true" if value else "false"


@functools.cache
def url_slug(name: str) -> str:
    """A venue's web slug as Resy makes them: lower case, words joined by ``-``."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def resy_venue(v: Venue) -> dict[str, Any]:
    # the real answer's venue: ``url_slug`` and the location's ``url_slug`` / ``code`` make
    # the venue's booking page (resy.com/cities/<location.url_slug>/venues/<url_slug>)
    return {
        "id": {"resy": v.id},
        "name": v.name,
        "url_slug": url_slug(v.name),
        "location": {
            "time_zone": v.time_zone,
            "neighborhood": v.neighborhood,
            "code": "ny",
            "url_slug": "new-york-ny",
        },
    }


def _day(text: Any, what: str = "day") -> date:
    try:
        return date.fromisoformat(str(text))
    except ValueError:
        raise BadRequest(f"{what} must be YYYY-MM-DD, not {text!r}") from None


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{what} must be an integer, not {value!r}") from None


def search_page(state: SimState, body: Any) -> bytes:
    """One page of the area search, as JSON bytes. Pages are cached while the market they
    were rendered from has not changed (same model minute, same overlay): a poll cycle asks
    the same pages again and again within a minute, and in scripted mode for ever."""
    if not isinstance(body, dict) or not isinstance(body.get("slot_filter"), dict):
        raise BadRequest("body needs slot_filter{day, party_size}")
    sf = body["slot_filter"]
    day = _day(sf.get("day"))
    party = _int(sf.get("party_size", 2), "party_size")
    tf = sf.get("time_filter")
    lo, hi = (0, 24 * 60) if not tf else state.market.around(minutes(str(tf)))
    page = max(_int(body.get("page", 1), "page"), 1)
    per_page = min(max(_int(body.get("per_page", 20), "per_page"), 1), MAX_PER_PAGE)
    model_ms = state.model_ms()
    key = (day, lo, hi, party, page, per_page)
    cached = state.cached(key, model_ms)
    if cached is not None:
        return cached
    venues = state.market.venues.get("resy", [])
    now = state.market.local_now(model_ms)
    cache = state.hits_for(model_ms) if state.cache_budget > 0 else {}
    versions, dstr = state.overlay.versions, day.isoformat()
    chosen = venues[(page - 1) * per_page : page * per_page]
    keys, parts = [], []
    for v in chosen:
        hkey, version = (v.id, day, lo, hi, party), versions.get(("resy", v.id, dstr), 0)
        kept = cache.get(hkey)
        part: bytes | memoryview
        if kept is not None and kept[0] == version:
            part = kept[1]  # the venue's answer has not changed since it was rendered
        else:
            slots = state.market.slots(v, day, lo, hi, party, model_ms, state.overlay, now)
            hit = resy_venue(v)
            hit["availability"] = {"slots": resy_slots(slots, party, model_ms)}
            part = orjson.dumps(hit)
        keys.append((hkey, version))
        parts.append(part)
    data = render_page(parts, len(venues), page, per_page)
    if state.store(key, data):  # the hits kept are windows into the page: no second copy
        view, at = memoryview(data), len(PAGE_HEAD)
        for (hkey, version), part in zip(keys, parts, strict=True):
            cache[hkey] = (version, view[at : at + len(part)])
            at += len(part) + 1
    return data


PAGE_HEAD = b'{"search":{"hits":['


def render_page(hits: list[bytes | memoryview], total: int, page: int, per_page: int) -> bytes:
    """A search page of hits already rendered as JSON: byte for byte what ``orjson.dumps``
    makes of ``{"search": {"hits": [...], "nbHits": total}, "meta": {...}}``."""
    tail = b'],"nbHits":%d},"meta":{"page":%d,"per_page":%d,"total":%d}}' % (
        total, page, per_page, total
    )  # fmt: skip
    return b"".join((PAGE_HEAD, b",".join(hits), tail))


def find_venue(state: SimState, params: dict[str, str]) -> dict[str, Any] | None:
    day = _day(params.get("day"))
    party = _int(params.get("party_size", 2), "party_size")
    venue = state.market.venue("resy", _int(params.get("venue_id"), "venue_id"))
    if venue is None:
        return None
    model_ms = state.model_ms()
    slots = state.market.slots(venue, day, 0, 24 * 60, party, model_ms, state.overlay)
    return {
        "query": {"day": day.isoformat(), "party_size": party},
        "results": {
            "venues": [{"venue": resy_venue(venue), "slots": resy_slots(slots, party, model_ms)}]
        },
    }


def ot_availability(state: SimState, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("variables"), dict):
        raise BadRequest("body needs variables{restaurantIds, date, time, partySize}")
    var = body["variables"]
    ids_ = var.get("restaurantIds")
    if not isinstance(ids_, list):
        raise BadRequest("variables.restaurantIds must be a list")
    day = _day(var.get("date"), "date")
    asked = minutes(str(var.get("time", "19:00")))
    party = _int(var.get("partySize", 2), "partySize")
    back = _int(var.get("backwardMinutes", 150), "backwardMinutes")
    fwd = _int(var.get("forwardMinutes", 150), "forwardMinutes")
    lo, hi = state.market.around(asked, back, fwd)
    model_ms = state.model_ms()
    now = state.market.local_now(model_ms)
    wanted = [state.market.venue("opentable", _int(i, "restaurantIds[]")) for i in ids_]
    venues = [v for v in wanted if v is not None]
    if venues:  # the real service also lists restaurants nearby
        nearby = state.market.venues["opentable"]
        extra = nearby[(venues[-1].index + 1) % len(nearby)]
        if extra not in venues:
            venues.append(extra)
    out = []
    for v in venues:
        open_ = {s.minute: s for s in state.market.slots(v, day, lo, hi, party, model_ms,
                                                         state.overlay, now)}  # fmt: skip
        slots: list[dict[str, Any]] = []
        for minute in sorted(set(v.candidates()) | set(open_)):
            if not lo <= minute < hi:
                continue
            s = open_.get(minute)
            if s is None:
                slots.append(
                    {
                        "__typename": "UnavailableSlot",
                        "isAvailable": False,
                        "timeOffsetMinutes": minute - asked,
                    }
                )
                continue
            slots.append(
                {
                    "__typename": "AvailableSlot",
                    "isAvailable": True,
                    "timeOffsetMinutes": minute - asked,
                    "slotHash": str(mix(s.config_id) % 10**10),
                    "slotAvailabilityToken": "eyJ2IjoyLCJtIjowLCJwIjow"
                    + _token(s, s.seating[0], party, model_ms)[-6:],
                    "type": "Standard" if s.seating[0] == "Dining Room" else s.seating[0],
                    "attributes": ["default"],
                }
            )
        out.append(
            {
                "restaurantId": v.id,
                "restaurantAvailabilityToken": f"rat-{v.id:x}",
                "availabilityDays": [{"dayOffset": 0, "slots": slots}],
            }
        )
    return {"data": {"availability": out}}


def reference_slots(
    state: SimState, day: date, time_slot: str, party: int, providers: tuple[str, ...]
) -> list[dict[str, Any]]:
    lo, hi = bucket_window(time_slot, state.time_slots)
    reach_lo, reach_hi = state.market.around(minutes(time_slot))  # what a time query answers
    lo, hi = max(lo, reach_lo), min(hi, reach_hi)
    model_ms = state.model_ms()
    out = []
    for provider in providers:
        for s in state.market.open_slots(provider, day, lo, hi, party, model_ms, state.overlay):
            vid = str(s.venue.id)
            out.append(
                {
                    "provider": provider,
                    "venue_id": vid,
                    "actual_time": s.actual_time,
                    "slot_id": ids.slot_id(provider, vid, s.actual_time),
                }
            )
    return out


# ------------------------------------------------------------------ the app


def create_app(
    market: Market,
    api_key: str = "simulator",
    time_slots: tuple[str, ...] = ("15:00", "19:00"),
    party_size: int = 2,
    scripted: bool = False,
    fault_rate: float = 0.0,
    fault_kinds: tuple[str, ...] = (),
    fault_seed: int = 0,
    cache_mb: int = 512,
    clock: Clock | None = None,
) -> Starlette:
    state = SimState(
        clock=clock or Clock(),
        cache_budget=max(cache_mb, 0) << 20,
        market=market,
        api_key=api_key,
        time_slots=time_slots,
        party_size=party_size,
        initial_scripted=scripted,
        rng=random.Random(fault_seed),
    )
    if scripted:
        state.freeze()
    for kind in fault_kinds:
        if fault_rate > 0:
            state.add_fault(kind=kind, rate=fault_rate / len(fault_kinds))

    async def faulted(provider: str, build: Any, truncate: Any, endpoint: str = "*") -> Response:
        state.counts[f"{provider}_requests"] += 1
        state.counts[f"{endpoint}_requests"] += 1
        fault = state.pick_fault(provider, endpoint)
        if fault is not None:
            state.counts[f"fault_{fault.kind}"] += 1
            if fault.kind == "5xx":
                return _json({"message": "Service Unavailable"}, fault.status)
            if fault.kind == "429":
                headers = {"Retry-After": f"{fault.retry_after:g}"}
                return _json({"message": "Too Many Requests"}, 429, headers)
            if fault.kind == "403":
                return Response("<html>Access Denied</html>", 403, media_type="text/html")
            if fault.kind in ("timeout", "slow"):
                await asyncio.sleep(fault.delay_ms / 1000)
                if fault.kind == "timeout":
                    return _json({"message": "Gateway Timeout"}, 504)
        try:
            doc = build()
        except BadRequest as exc:
            return _json({"message": str(exc)}, 400)
        if doc is None:
            return _json({"message": "Not Found"}, 404)
        if fault is not None and fault.kind == "malformed":
            raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
            return Response(raw[: max(len(raw) // 2, 1)], 200, media_type="application/json")
        if fault is not None and fault.kind == "truncated":
            doc = truncate(orjson.loads(doc) if isinstance(doc, bytes) else doc)
        if isinstance(doc, bytes):
            return Response(doc, 200, media_type="application/json")
        return _json(doc)

    def resy_auth(request: Request) -> Response | None:
        if not request.headers.get("user-agent"):
            return _json({"message": "Internal Server Error"}, 500)
        if request.headers.get("authorization") != f'ResyAPI api_key="{state.api_key}"':
            return _json({"message": "Unauthorized"}, 419)
        return None

    async def read_json(request: Request) -> Any:
        try:
            return orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return None

    def cut_hits(doc: dict[str, Any]) -> dict[str, Any]:
        hits = doc["search"]["hits"]
        doc["search"]["hits"] = hits[: len(hits) // 2]
        return doc

    def cut_find(doc: dict[str, Any]) -> dict[str, Any]:
        doc["results"]["venues"] = []
        return doc

    def cut_availability(doc: dict[str, Any]) -> dict[str, Any]:
        rows = doc["data"]["availability"]
        doc["data"]["availability"] = rows[: len(rows) // 2]
        return doc

    async def search(request: Request) -> Response:
        denied = resy_auth(request)
        if denied is not None:
            return denied
        body = await read_json(request)
        return await faulted("resy", lambda: search_page(state, body), cut_hits, "search")

    async def find(request: Request) -> Response:
        denied = resy_auth(request)
        if denied is not None:
            return denied
        params = dict(request.query_params)
        return await faulted("resy", lambda: find_venue(state, params), cut_find, "find")

    async def gql(request: Request) -> Response:
        if not request.headers.get("user-agent"):
            return Response("<html>Access Denied</html>", 403, media_type="text/html")
        if request.query_params.get("opname") != "RestaurantsAvailability":
            return _json({"errors": [{"message": "unknown operation"}], "data": None}, 400)
        body = await read_json(request)
        return await faulted(
            "opentable", lambda: ot_availability(state, body), cut_availability, "availability"
        )

    # -------------------------------------------------------------- control

    async def control_body(request: Request) -> dict[str, Any]:
        body = await read_json(request) if await request.body() else {}
        if not isinstance(body, dict):
            raise BadRequest("control bodies are JSON objects")
        return body

    def slot_target(body: dict[str, Any]) -> tuple[str, int, str]:
        provider = str(body.get("provider", "resy"))
        venue_id = _int(body.get("venue_id"), "venue_id")
        actual_time = str(body.get("actual_time", ""))
        if state.market.venue(provider, venue_id) is None:
            raise BadRequest(f"no {provider} venue {venue_id}")
        try:
            ids.normalize_time(actual_time)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return provider, venue_id, actual_time

    def control(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return _json(await handler(request))
            except BadRequest as exc:
                return _json({"error": str(exc)}, 400)

        return endpoint

    async def c_open(request: Request) -> dict[str, Any]:
        body = await control_body(request)
        provider, venue_id, actual_time = slot_target(body)
        seating = tuple(body.get("seating_types") or ("Dining Room",))
        ov = Override(True, seating, int(body.get("party_min", 1)), int(body.get("party_max", 8)))
        state.overlay.set(provider, venue_id, actual_time, ov)
        log.info("sim_open", provider=provider, venue_id=venue_id, actual_time=actual_time)
        sid = ids.slot_id(provider, str(venue_id), actual_time)
        return {"ok": True, "slot_id": sid}

    async def c_close(request: Request) -> dict[str, Any]:
        body = await control_body(request)
        provider, venue_id, actual_time = slot_target(body)
        state.overlay.set(provider, venue_id, actual_time, Override(False))
        log.info("sim_close", provider=provider, venue_id=venue_id, actual_time=actual_time)
        sid = ids.slot_id(provider, str(venue_id), actual_time)
        return {"ok": True, "slot_id": sid}

    async def c_faults(request: Request) -> dict[str, Any]:
        if request.method == "DELETE":
            n = len(state.faults)
            state.faults.clear()
            return {"ok": True, "removed": n}
        if request.method == "GET":
            return {"faults": [f.to_dict() for f in state.faults]}
        fault = state.add_fault(**(await control_body(request)))
        return {"ok": True, "fault": fault.to_dict()}

    async def c_freeze(request: Request) -> dict[str, Any]:
        body = await control_body(request)
        at = body.get("at_ms")
        state.freeze(None if at is None else _int(at, "at_ms"))
        return {"ok": True, "scripted": True, "model_ms": state.model_ms()}

    async def c_unfreeze(request: Request) -> dict[str, Any]:
        state.scripted = False
        return {"ok": True, "scripted": False, "model_ms": state.model_ms()}

    async def c_clock(request: Request) -> dict[str, Any]:
        body = await control_body(request)
        if body.get("wall"):
            state.fixed_clock_ms = None
        elif "now_ms" in body:
            state.fixed_clock_ms = _int(body["now_ms"], "now_ms")
        elif "advance_ms" in body:
            state.fixed_clock_ms = state.clock_ms() + _int(body["advance_ms"], "advance_ms")
        else:
            raise BadRequest("clock needs now_ms, advance_ms or wall")
        if state.scripted:
            state.frozen_ms = state.clock_ms()
        return {"ok": True, "clock_ms": state.clock_ms(), "model_ms": state.model_ms()}

    async def c_reset(request: Request) -> dict[str, Any]:
        state.reset()
        return {"ok": True, "scripted": state.scripted}

    async def c_slots(request: Request) -> dict[str, Any]:
        q = request.query_params
        day = _day(q.get("date"), "date")
        time_slot = q.get("time_slot", "")
        if time_slot not in state.time_slots:
            raise BadRequest(f"time_slot must be one of {state.time_slots}")
        party = _int(q.get("party_size", state.party_size), "party_size")
        providers = (q["provider"],) if q.get("provider") else state.market.providers
        slots = reference_slots(state, day, time_slot, party, providers)
        return {"model_ms": state.model_ms(), "scripted": state.scripted, "slots": slots}

    async def c_venues(request: Request) -> dict[str, Any]:
        provider = request.query_params.get("provider", "resy")
        return {
            "venues": [
                {
                    "id": v.id,
                    "name": v.name,
                    "neighborhood": v.neighborhood,
                    "time_zone": v.time_zone,
                }
                for v in state.market.venues.get(provider, [])
            ]
        }

    async def c_stats(request: Request) -> dict[str, Any]:
        return {
            "counts": dict(state.counts),
            "overlay": len(state.overlay),
            "scripted": state.scripted,
            "model_ms": state.model_ms(),
        }

    async def c_health(request: Request) -> dict[str, Any]:
        return {"ok": True, "venues": {p: len(v) for p, v in state.market.venues.items()}}

    routes = [
        Route("/3/venuesearch/search", search, methods=["POST"]),
        Route("/4/find", find, methods=["GET"]),
        Route("/dapi/fe/gql", gql, methods=["POST"]),
        Route("/_control/open", control(c_open), methods=["POST"]),
        Route("/_control/close", control(c_close), methods=["POST"]),
        Route("/_control/faults", control(c_faults), methods=["GET", "POST", "DELETE"]),
        Route("/_control/freeze", control(c_freeze), methods=["POST"]),
        Route("/_control/unfreeze", control(c_unfreeze), methods=["POST"]),
        Route("/_control/clock", control(c_clock), methods=["POST"]),
        Route("/_control/reset", control(c_reset), methods=["POST"]),
        Route("/_control/slots", control(c_slots), methods=["GET"]),
        Route("/_control/venues", control(c_venues), methods=["GET"]),
        Route("/_control/stats", control(c_stats), methods=["GET"]),
        Route("/_control/health", control(c_health), methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.sim = state
    return app


def app_from_settings(settings: Settings) -> Starlette:
    market = Market(
        seed=settings.simulator.seed,
        venues=settings.simulator.venues,
        churn=settings.simulator.churn,
        reach=settings.simulator.reach,
    )
    kinds = settings.simulator.fault_kinds
    return create_app(
        market,
        api_key=settings.providers.resy.api_key.get_secret_value(),
        time_slots=settings.producer.time_slots,
        party_size=settings.producer.party_sizes[0],
        scripted=settings.simulator.scripted,
        fault_rate=settings.simulator.fault_rate,
        fault_kinds=kinds,
        fault_seed=settings.simulator.seed,
        cache_mb=settings.simulator.cache_mb,
        clock=settings.clock(),
    )


def run(settings: Settings) -> None:
    """Serve the simulator until SIGTERM/SIGINT (uvicorn handles both)."""
    import uvicorn

    from drops.runtime import tune_gc
    from producers.service import GC_THRESHOLD

    app = app_from_settings(settings)
    tune_gc(*GC_THRESHOLD)
    log.info(
        "simulator_start",
        host=settings.simulator.host,
        port=settings.simulator.port,
        venues=settings.simulator.venues,
        seed=settings.simulator.seed,
        scripted=settings.simulator.scripted,
        churn=settings.simulator.churn,
    )
    uvicorn.run(
        app,
        host=settings.simulator.host,
        port=settings.simulator.port,
        log_level="warning",
        access_log=False,
    )
    log.info("simulator_stopped")


def main(argv: list[str] | None = None) -> int:
    """``drops simulate``: serve the simulator until SIGTERM/SIGINT."""
    import argparse

    from drops.settings import get_settings

    argparse.ArgumentParser(prog="drops simulate", description="the provider simulator").parse_args(
        argv
    )
    run(get_settings())
    return 0
