"""The simulator's per-venue hit cache: a search page joined from cached hits is byte for
byte the page rendered afresh from the same market state, and a scripted change to one venue
re-renders that venue's hit only."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from simulator.market import Market, Override
from simulator.server import SimState, resy_slots, resy_venue, search_page

NY = ZoneInfo("America/New_York")
T0 = int(datetime(2026, 3, 2, 12, 0, tzinfo=NY).timestamp() * 1000)
DAYS = ("2026-03-02", "2026-03-04")


def fresh_page(state: SimState, day: str, tf: str, page: int, per_page: int) -> bytes:
    """The page as the simulator rendered it before the hit cache: one orjson.dumps."""
    model_ms = state.model_ms()
    lo, hi = state.market.around(int(tf[:2]) * 60)
    venues = state.market.venues["resy"]
    now = state.market.local_now(model_ms)
    hits = []
    for v in venues[(page - 1) * per_page : page * per_page]:
        slots = state.market.slots(
            v, date.fromisoformat(day), lo, hi, 2, model_ms, state.overlay, now
        )
        hit = resy_venue(v)
        hit["availability"] = {"slots": resy_slots(slots, 2, model_ms)}
        hits.append(hit)
    return orjson.dumps(
        {
            "search": {"hits": hits, "nbHits": len(venues)},
            "meta": {"page": page, "per_page": per_page, "total": len(venues)},
        }
    )


def body(day: str, tf: str, page: int, per_page: int) -> dict[str, Any]:
    sf = {"day": day, "party_size": 2, "time_filter": tf}
    return {"slot_filter": sf, "page": page, "per_page": per_page}


ASKS = [(d, tf, p, pp) for d in DAYS for tf in ("15:00", "19:00") for p, pp in
        ((1, 100), (2, 100), (3, 100), (1, 40), (6, 40))]  # fmt: skip


@pytest.fixture
def state() -> SimState:
    s = SimState(market=Market(seed=4, venues=230), api_key="k", time_slots=("15:00", "19:00"))
    s.freeze(T0)
    return s


def check_all(state: SimState) -> None:
    for ask in ASKS:
        assert search_page(state, body(*ask)) == fresh_page(state, *ask), ask


def test_joined_pages_are_the_fresh_render_through_scripted_changes(state: SimState) -> None:
    check_all(state)
    check_all(state)  # from the page cache
    vid = state.market.venues["resy"][5].id
    state.overlay.set("resy", vid, f"{DAYS[1]} 19:05:00", Override(True, ("Bar",), 1, 8))
    check_all(state)  # pages re-joined: every hit from the cache but venue 5's
    state.overlay.set("resy", vid, f"{DAYS[1]} 19:05:00", Override(False))
    other = state.market.venues["resy"][150].id
    state.overlay.set("resy", other, f"{DAYS[0]} 14:30:00", Override(True, ("Patio",), 2, 2))
    check_all(state)
    state.overlay.clear()
    check_all(state)
    state.freeze(T0 + 60_000 * 37)  # the market moves on: nothing kept holds
    check_all(state)


def test_a_change_to_one_venue_renders_that_venue_only(
    state: SimState, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    slots = state.market.slots

    def counted(venue: Any, *args: Any, **kw: Any) -> Any:
        calls.append(venue.id)
        return slots(venue, *args, **kw)

    monkeypatch.setattr(state.market, "slots", counted)
    ask = body(DAYS[1], "19:00", 1, 100)
    first = search_page(state, ask)
    assert len(calls) == 100
    vid = state.market.venues["resy"][7].id
    state.overlay.set("resy", vid, f"{DAYS[1]} 20:10:00", Override(True, ("Bar",), 1, 8))
    calls.clear()
    after = search_page(state, ask)
    assert calls == [vid] and after != first
    calls.clear()
    joined = search_page(state, body(DAYS[1], "19:00", 2, 40))  # venues 40-79, by 40
    assert calls == []  # every hit from the 100-venue page's
    assert joined == fresh_page(state, DAYS[1], "19:00", 2, 40)


def test_no_cache_budget_keeps_nothing(state: SimState) -> None:
    state.cache_budget = 0
    check_all(state)
    assert state._hits == {} and state._cache == {}
