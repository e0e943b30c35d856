"""The provider's booking page for a slot: one link a person taps to book it (pure).

Built from what the provider's answer gives (never from a booking token: tokens rotate):

- **Resy**: the venue's ``url_slug`` and its location's ``url_slug`` (the city, e.g.
  ``new-york-ny``; the short location ``code``, e.g. ``ny``, when that is all there is):
  ``https://resy.com/cities/<city>/venues/<slug>?date=YYYY-MM-DD&seats=N&time=HHMM``.
- **OpenTable**: the restaurant id (``rid``, the venue id):
  ``https://www.opentable.com/restref/client/?rid=<rid>&restref=<rid>&datetime=YYYY-MM-DDTHH:MM&covers=N``.

Both are the best-known public forms (the shapes public reservation bots and restaurants'
own "Reserve" buttons use; neither provider documents them): Resy's venue page reads
``date`` and ``seats`` (``time`` is carried for the reader and is ignored by a page that does
not use it), OpenTable's booking widget reads ``datetime`` and ``covers``.

A link is either whole or empty: a missing slug, city or id, a start time that is not
``YYYY-MM-DD HH:MM[:SS]``, a party size under 1 or an unknown provider give ``""``, never a
broken link. Every value is percent-encoded as one path segment or query value, so a
hostile slug cannot add a path segment, a query or a fragment; the scheme and host are
fixed, so a link is never ``javascript:`` or another site.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

RESY = "resy"
OPENTABLE = "opentable"
RESY_BASE = "https://resy.com"
OPENTABLE_BASE = "https://www.opentable.com"
MAX_PART = 200  # a slug or city longer than this is not a real one: no link


def _segment(value: str) -> str:
    """``value`` as one URL path segment, or ``""`` when it cannot be one (empty, ``.``,
    ``..``, too long, a control character)."""
    value = value.strip()
    if (
        not value
        or value in (".", "..")
        or len(value) > MAX_PART
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        return ""
    return quote(value, safe="")


def _start(actual_time: str) -> dt.datetime | None:
    if len(actual_time) not in (16, 19) or actual_time[10] != " ":
        return None
    try:
        return dt.datetime.strptime(actual_time[:16], "%Y-%m-%d %H:%M")
    except ValueError:
        return None


def link_party_size(party_min: int, party_max: int, preferred: int) -> int:
    """The party size a link asks for: ``preferred`` (the size the providers were asked
    for, or a watch's), moved into the slot's party range when the range is known."""
    size = max(1, preferred)
    if party_max >= max(1, party_min):
        size = min(max(size, max(1, party_min)), party_max)
    return size


def booking_url(
    provider: str,
    venue_id: str,
    slug: str,
    city: str,
    actual_time: str,
    party_size: int,
) -> str:
    """The provider's booking page for this venue, venue-local start and party size, or
    ``""`` when the provider's answer did not give what the link needs."""
    start = _start(actual_time)
    if start is None or party_size < 1 or party_size > 99:
        return ""
    if provider == RESY:
        s, c = _segment(slug), _segment(city)
        if not s or not c:
            return ""
        query = urlencode(
            {
                "date": start.strftime("%Y-%m-%d"),
                "seats": str(party_size),
                "time": start.strftime("%H%M"),
            }
        )
        return f"{RESY_BASE}/cities/{c}/venues/{s}?{query}"
    if provider == OPENTABLE:
        rid = venue_id.strip()
        if not rid.isascii() or not rid.isdigit() or len(rid) > 18:
            return ""
        query = urlencode(
            {
                "rid": rid,
                "restref": rid,
                "datetime": start.strftime("%Y-%m-%dT%H:%M"),
                "covers": str(party_size),
            }
        )
        return f"{OPENTABLE_BASE}/restref/client/?{query}"
    return ""


def drop_link(drop: Mapping[str, Any], party_size: int | None = None) -> str:
    """The booking link of a drop record (as a JSON object): for ``party_size`` when given
    (a watch's, rebuilt from the venue's slug and city), else the record's ``booking_url``;
    for a record without one, its ``booking`` when that is already a web link."""
    if party_size is not None:
        try:
            link = booking_url(
                str(drop.get("provider") or ""),
                str(drop.get("venue_id") or ""),
                str(drop.get("venue_slug") or ""),
                str(drop.get("venue_city") or ""),
                str(drop.get("actual_time") or ""),
                link_party_size(
                    int(drop.get("party_min") or 0), int(drop.get("party_max") or 0), party_size
                ),
            )
        except (TypeError, ValueError):
            link = ""
        if link:
            return link
    for key in ("booking_url", "booking"):
        value = drop.get(key)
        if isinstance(value, str) and value.startswith(("https://", "http://")):
            return value
    return ""
