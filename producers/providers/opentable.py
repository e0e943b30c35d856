"""OpenTable: the ``RestaurantsAvailability`` GraphQL query (persisted), in batches of
restaurant ids. Wire format: field notes §5.

Slots carry ``timeOffsetMinutes`` relative to the asked time; only ``isAvailable`` ones
count. The answer also lists restaurants nearby, which are filtered out by id. A requested
restaurant missing from the answer, or a batch that failed after retries, is a
``Failure(scope="venue")`` per restaurant: its slots are unknown.

The venue list (id → name, neighborhood, zone) comes from the configured ids or, when none
are configured, from the simulator's directory (``GET /_control/venues?provider=opentable``).

Time coverage: the query asks for ``backwardMinutes``/``forwardMinutes`` around the bucket
time (:data:`producers.windows.REACH`); the one endpoint reads every bucket, so a snapshot holds
only what the query covers: starts within what was asked and inside the bucket window. A slot
offset beyond what was asked contradicts the query: it is not kept, and it is logged and
counted (``FetchResult.contradictions``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from drops.log import get_log
from producers.providers.base import (
    BucketQuery,
    Collector,
    Counters,
    FetchResult,
    SlotIds,
    SlotTable,
)
from producers.providers.transport import Invalid, ProviderError, Transport
from producers.windows import REACH, minutes
from schemas import Failure

NAME = "opentable"
log = get_log("producer.opentable")
BACKWARD = FORWARD = REACH  # minutes asked before and after the bucket time
PERSISTED_HASH = "e6b87021ed6e865a7778aa39d35d09864c1be29c683c707602dd3de43c854d86"


@dataclass(frozen=True, slots=True)
class OtVenue:
    id: str
    name: str = ""
    neighborhood: str = ""
    time_zone: str = "EST5EDT"


def _availability(doc: Any) -> list[Any]:
    if not isinstance(doc, dict):
        raise Invalid("not an object")
    if doc.get("errors"):
        raise Invalid(f"graphql errors: {str(doc['errors'])[:200]}")
    data = doc.get("data")
    rows = data.get("availability") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise Invalid("no data.availability list")
    return rows


def parse_restaurant(
    row: dict[str, Any],
    venue: OtVenue,
    query: BucketQuery,
    asked: int,
    acc: Collector,
    beyond: list[int] | None = None,
) -> str | None:
    """Add the restaurant's available slots in the bucket window to ``acc``; an error text
    when the row cannot be read (then nothing of it is kept). Offsets beyond what the query
    asked (:data:`BACKWARD`/:data:`FORWARD`) are left out and appended to ``beyond``."""
    lo, hi = query.window
    days = row.get("availabilityDays")
    if not isinstance(days, list):
        return "no availabilityDays"
    found: list[tuple[str, str, str]] = []
    for day in days:
        if not isinstance(day, dict) or day.get("dayOffset", 0) != 0:
            continue
        slots = day.get("slots")
        if not isinstance(slots, list):
            return "availabilityDays[].slots is not a list"
        for s in slots:
            if not isinstance(s, dict) or not s.get("isAvailable"):
                continue
            offset = s.get("timeOffsetMinutes")
            if offset.__class__ is not int:
                return "slot without timeOffsetMinutes"
            if offset < -BACKWARD or offset > FORWARD:  # more than was asked: not covered
                if beyond is not None:
                    beyond.append(offset)
                continue
            minute = asked + offset
            if minute < lo or minute >= hi:
                continue
            actual = f"{query.date} {_HHMM[minute]}:00"
            token = str(s.get("slotAvailabilityToken") or s.get("slotHash") or "")
            found.append((actual, str(s.get("type") or "Standard"), token))
    if found:
        into = acc.venue(venue.id, venue.name, venue.time_zone, venue.neighborhood)
        party = query.party_size
        for actual, seating, token in found:
            into.add(actual, seating, party, party, token)
    return None


_HHMM = [f"{m // 60:02d}:{m % 60:02d}" for m in range(24 * 60)]


class OpenTableClient:
    name = NAME

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        user_agent: str,
        venues: tuple[OtVenue, ...] = (),
        batch: int = 50,
    ) -> None:
        self.transport, self.base_url = transport, base_url.rstrip("/")
        self.batch = max(1, batch)
        self._ids = SlotIds(NAME)
        self._venues: dict[str, OtVenue] | None = {v.id: v for v in venues} if venues else None
        self._headers = {
            "User-Agent": user_agent,
            "Accept": "application/json",
            "x-csrf-token": "00000000-0000-0000-0000-000000000000",
            "ot-page-type": "multi-search",
        }

    async def aclose(self) -> None:
        return None

    async def venues(self, c: Counters) -> dict[str, OtVenue]:
        if self._venues is None:
            doc = await self.transport.request_json(
                NAME,
                "GET",
                f"{self.base_url}/_control/venues",
                c,
                params={"provider": NAME},
                headers=self._headers,
            )
            rows = doc.get("venues") if isinstance(doc, dict) else None
            if not isinstance(rows, list):
                raise ProviderError("invalid", "venue directory without a venues list", False)
            self._venues = {
                str(r["id"]): OtVenue(
                    str(r["id"]),
                    str(r.get("name", "")),
                    str(r.get("neighborhood", "")),
                    str(r.get("time_zone") or "EST5EDT"),
                )
                for r in rows
            }
        return self._venues

    def _body(self, ids: list[str], query: BucketQuery) -> dict[str, Any]:
        return {
            "operationName": "RestaurantsAvailability",
            "variables": {
                "onlyPop": False,
                "forwardDays": 0,
                "requireTimes": False,
                "requireTypes": [],
                "privilegedAccess": [],
                "restaurantIds": [int(i) if i.isdigit() else i for i in ids],
                "date": query.date,
                "time": query.time_slot,
                "partySize": query.party_size,
                "databaseRegion": "NA",
                "restaurantAvailabilityTokens": [],
                "loyaltyRedemptionTiers": [],
                "backwardMinutes": BACKWARD,
                "forwardMinutes": FORWARD,
            },
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": PERSISTED_HASH}},
        }

    async def _batch(self, ids: list[str], query: BucketQuery, c: Counters) -> Any:
        return await self.transport.request_json(
            NAME,
            "POST",
            f"{self.base_url}/dapi/fe/gql",
            c,
            params={"optype": "query", "opname": "RestaurantsAvailability"},
            json=self._body(ids, query),
            headers=self._headers,
            validate=_availability,
        )

    async def fetch(self, query: BucketQuery) -> FetchResult:
        c = Counters()
        try:
            directory = await self.venues(c)
        except ProviderError as err:
            failure = Failure("provider", "venues", str(err))
            return FetchResult(NAME, SlotTable(NAME), False, [failure], 0, c.requests, c.retries)
        ids = list(directory)
        batches = [ids[i : i + self.batch] for i in range(0, len(ids), self.batch)]
        results = await asyncio.gather(
            *(self._batch(b, query, c) for b in batches), return_exceptions=True
        )
        asked = minutes(query.time_slot)
        failures: list[Failure] = []
        acc = Collector(NAME, self._ids)
        seen = 0
        beyond: list[int] = []
        for batch, res in zip(batches, results, strict=True):
            if isinstance(res, ProviderError):
                failures.extend(Failure("venue", vid, str(res)) for vid in batch)
                continue
            if isinstance(res, BaseException):
                raise res
            rows = {
                str(r.get("restaurantId")): r for r in _availability(res) if isinstance(r, dict)
            }
            for vid in batch:  # restaurants nearby (not asked for) are left out here
                row = rows.get(vid)
                if row is None:
                    failures.append(Failure("venue", vid, "missing from the availability answer"))
                    continue
                error = parse_restaurant(row, directory[vid], query, asked, acc, beyond)
                if error is not None:
                    failures.append(Failure("venue", vid, error))
                    continue
                seen += 1
        if beyond:
            log.warning(
                "coverage_contradiction",
                provider=NAME,
                date=query.date,
                time_slot=query.time_slot,
                asked=f"-{BACKWARD}..+{FORWARD}",
                offsets=f"{min(beyond)}..{max(beyond)}",
                slots=len(beyond),
            )
        slots = acc.table()
        return FetchResult(
            NAME,
            slots,
            not failures,
            failures,
            seen,
            c.requests,
            c.retries,
            contradictions=len(beyond),
        )
