"""Request parsing and validation, and the filters in both forms (pure).

Every error is a :class:`BadRequest` naming the parameter, answered with a 400. The same
:class:`Filters` select rows in ClickHouse (:meth:`Filters.sql`) and live events in memory
(:meth:`Filters.matches`), so the catch-up and the live tail of a stream agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from api import cursor as C
from drops.errors import BadRequest, InvariantError

KNOWN_PROVIDERS = frozenset({"resy", "opentable"})
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_MARKET = re.compile(r"^[a-z0-9_\-]{1,32}$")
_SLOT = re.compile(r"^([01]\d|2[0-3]):?([0-5]\d)$")

FILTER_PARAMS = (
    "market",
    "provider",
    "venue",
    "neighborhood",
    "date_from",
    "date_to",
    "time_slot",
    "party_size",
    "event",
)


@dataclass(frozen=True, slots=True)
class Allowed:
    """The values the filters accept (from the settings)."""

    markets: frozenset[str]
    providers: frozenset[str]
    time_slots: frozenset[str]
    max_limit: int = 1000
    partitions: int = 1  # of the drops topic: a cursor naming any other is refused


@dataclass(frozen=True, slots=True)
class Filters:
    market: tuple[str, ...] = ()
    provider: tuple[str, ...] = ()
    venue: tuple[str, ...] = ()
    neighborhood: tuple[str, ...] = ()
    date_from: str | None = None
    date_to: str | None = None
    time_slot: tuple[str, ...] = ()
    party_size: int | None = None
    event: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self == Filters()

    def normalized(self) -> Filters:
        """The same filter with every list sorted and deduplicated: two clients whose filters
        select the same events have equal normalized filters (the live tail groups them)."""
        return Filters(
            market=tuple(sorted(set(self.market))),
            provider=tuple(sorted(set(self.provider))),
            venue=tuple(sorted(set(self.venue))),
            neighborhood=tuple(sorted(set(self.neighborhood))),
            date_from=self.date_from,
            date_to=self.date_to,
            time_slot=tuple(sorted(set(self.time_slot))),
            party_size=self.party_size,
            event=tuple(sorted(set(self.event))),
        )

    def matches(self, item: Mapping[str, Any]) -> bool:
        if self.market and item["market"] not in self.market:
            return False
        if self.provider and item["provider"] not in self.provider:
            return False
        if self.venue and item["venue_id"] not in self.venue:
            return False
        if self.neighborhood and item["neighborhood"] not in self.neighborhood:
            return False
        if self.date_from and item["date"] < self.date_from:
            return False
        if self.date_to and item["date"] > self.date_to:
            return False
        if self.time_slot and item["time_slot"] not in self.time_slot:
            return False
        if self.event and item["event"] not in self.event:
            return False
        if self.party_size is not None:
            lo, hi = item["party_min"], item["party_max"]
            if lo > self.party_size or (hi and hi < self.party_size):
                return False
        return True

    def sql(self) -> tuple[str, dict[str, Any]]:
        """``AND``-joined conditions (or ``1``) with their bound parameters."""
        terms: list[str] = []
        params: dict[str, Any] = {}
        for name, column in (
            ("market", "market"),
            ("provider", "provider"),
            ("venue", "venue_id"),
            ("neighborhood", "neighborhood"),
            ("time_slot", "time_slot"),
            ("event", "event"),
        ):
            values: tuple[str, ...] = getattr(self, name)
            if values:
                terms.append(f"{column} IN %(f_{name})s")
                params[f"f_{name}"] = list(values)
        if self.date_from:
            terms.append("date >= %(f_date_from)s")
            params["f_date_from"] = date.fromisoformat(self.date_from)
        if self.date_to:
            terms.append("date <= %(f_date_to)s")
            params["f_date_to"] = date.fromisoformat(self.date_to)
        if self.party_size is not None:
            terms.append("party_min <= %(f_party)s AND (party_max = 0 OR party_max >= %(f_party)s)")
            params["f_party"] = self.party_size
        return (" AND ".join(terms) or "1"), params


@dataclass(frozen=True, slots=True)
class FeedRequest:
    since: C.Cursor | None
    limit: int
    filters: Filters = field(default_factory=Filters)


Query = Mapping[str, Sequence[str]]


def _one(q: Query, name: str) -> str | None:
    values = q.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(name, "given more than once")
    return values[0]


def _list(q: Query, name: str) -> tuple[str, ...]:
    raw = _one(q, name)
    if raw is None:
        return ()
    items = tuple(dict.fromkeys(v.strip() for v in raw.split(",") if v.strip()))
    if not items:
        raise BadRequest(name, "is empty")
    if len(items) > 50:
        raise BadRequest(name, "has more than 50 values")
    return items


def _date(q: Query, name: str) -> str | None:
    raw = _one(q, name)
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw).isoformat() if len(raw) == 10 else _bad_date(name, raw)
    except ValueError:
        return _bad_date(name, raw)


def _bad_date(name: str, raw: str) -> str:
    raise BadRequest(name, f"not a date YYYY-MM-DD: {raw[:40]!r}")


def _int(q: Query, name: str, lo: int, hi: int, default: int | None) -> int | None:
    raw = _one(q, name)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,9}", raw.strip()):
        raise BadRequest(name, f"not a whole number: {raw[:40]!r}")
    value = int(raw)
    if not lo <= value <= hi:
        raise BadRequest(name, f"must be between {lo} and {hi}")
    return value


def int_param(q: Query, name: str, lo: int, hi: int, default: int) -> int:
    value = _int(q, name, lo, hi, default)
    if value is None:
        raise InvariantError(f"{name}: no value and no default")
    return value


def one_param(q: Query, name: str) -> str | None:
    return _one(q, name)


def parse_filters(q: Query, allowed: Allowed) -> Filters:
    market = _list(q, "market")
    for m in market:
        if not _MARKET.match(m) or (allowed.markets and m not in allowed.markets):
            raise BadRequest("market", f"unknown market {m[:40]!r}")
    provider = _list(q, "provider")
    for p in provider:
        if p not in allowed.providers:
            raise BadRequest("provider", f"unknown provider {p[:40]!r}")
    venue = _list(q, "venue")
    for v in venue:
        if not _ID.match(v):
            raise BadRequest("venue", f"not a venue id: {v[:40]!r}")
    neighborhood = _list(q, "neighborhood")
    for n in neighborhood:
        if len(n) > 100:
            raise BadRequest("neighborhood", "longer than 100 characters")
    slots: list[str] = []
    for s in _list(q, "time_slot"):
        hm = _SLOT.match(s)
        norm = f"{hm.group(1)}:{hm.group(2)}" if hm else s
        if norm not in allowed.time_slots:
            raise BadRequest(
                "time_slot", f"unknown time slot {s[:20]!r} (one of {sorted(allowed.time_slots)})"
            )
        slots.append(norm)
    events = _list(q, "event")
    for e in events:
        if e not in ("open", "close"):
            raise BadRequest("event", f"unknown event {e[:20]!r} (open or close)")
    date_from, date_to = _date(q, "date_from"), _date(q, "date_to")
    if date_from and date_to and date_from > date_to:
        raise BadRequest("date_to", "is before date_from")
    return Filters(
        market=market,
        provider=provider,
        venue=venue,
        neighborhood=neighborhood,
        date_from=date_from,
        date_to=date_to,
        time_slot=tuple(slots),
        party_size=_int(q, "party_size", 1, 50, None),
        event=events,
    )


def check_known(q: Query, known: Iterable[str]) -> None:
    allowed = set(known) | {"api_key"}
    for name in q:
        if name not in allowed:
            raise BadRequest(name, "unknown parameter")


def parse_cursor(
    raw: str | None, name: str = "since", partitions: int | None = None
) -> C.Cursor | None:
    """A cursor; with ``partitions``, only one naming partitions of the drops topic (a cursor
    of thousands of made-up partitions would be copied for every event such a client gets)."""
    if raw is None or raw == "":
        return None
    try:
        cur = C.decode(raw.strip())
    except C.CursorError as exc:
        raise BadRequest(name, f"malformed cursor ({exc})") from None
    if partitions is not None and cur and max(cur) >= partitions:
        raise BadRequest(
            name, f"cursor names partition {max(cur)}; the drops topic has {partitions}"
        )
    return cur


def parse_feed(q: Query, allowed: Allowed) -> FeedRequest:
    check_known(q, ("since", "limit", *FILTER_PARAMS))
    limit = _int(q, "limit", 1, allowed.max_limit, 100)
    if limit is None:
        raise InvariantError("limit: no value and no default")
    return FeedRequest(
        since=parse_cursor(_one(q, "since"), partitions=allowed.partitions),
        limit=limit,
        filters=parse_filters(q, allowed),
    )


def parse_stream(
    q: Query, last_event_id: str | None, allowed: Allowed
) -> tuple[C.Cursor | None, Filters]:
    """``Last-Event-ID`` (the browser's reconnect) wins over ``?since=``."""
    check_known(q, ("since", *FILTER_PARAMS))
    since = (
        parse_cursor(last_event_id, "Last-Event-ID", allowed.partitions)
        if last_event_id
        else parse_cursor(_one(q, "since"), partitions=allowed.partitions)
    )
    return since, parse_filters(q, allowed)


def parse_just_opened(q: Query, allowed: Allowed) -> tuple[int, Filters]:
    check_known(q, ("limit", *FILTER_PARAMS))
    limit = _int(q, "limit", 1, allowed.max_limit, 200)
    if limit is None:
        raise InvariantError("limit: no value and no default")
    return limit, parse_filters(q, allowed)
