"""Request validation (every bad input is a BadRequest naming the parameter) and filters."""

from __future__ import annotations

import pytest

from api import cursor as C
from api.hub import LiveBatch, LiveEvent, render
from api.items import item_bytes, item_from_event, sse_bytes
from api.params import Allowed, Filters, parse_feed, parse_stream
from drops.errors import BadRequest
from sinks.testdata import close_of, make_drop

ALLOWED = Allowed(
    markets=frozenset({"nyc"}),
    providers=frozenset({"resy", "opentable"}),
    time_slots=frozenset({"15:00", "19:00"}),
    max_limit=1000,
)


def q(**kw: str) -> dict[str, list[str]]:
    return {k: [v] for k, v in kw.items()}


@pytest.mark.parametrize(
    ("query", "param"),
    [
        (q(since="not-a-cursor!"), "since"),
        (q(since="AQEAAA"), "since"),
        (q(limit="0"), "limit"),
        (q(limit="1001"), "limit"),
        (q(limit="ten"), "limit"),
        (q(limit="-5"), "limit"),
        (q(market="paris"), "market"),
        (q(provider="yelp"), "provider"),
        (q(time_slot="12:00"), "time_slot"),
        (q(time_slot="25:00"), "time_slot"),
        (q(date_from="2026-13-01"), "date_from"),
        (q(date_to="tomorrow"), "date_to"),
        (q(date_from="2026-12-05", date_to="2026-12-01"), "date_to"),
        (q(party_size="0"), "party_size"),
        (q(party_size="two"), "party_size"),
        (q(venue="a b"), "venue"),
        (q(event="maybe"), "event"),
        (q(colour="red"), "colour"),
        ({"limit": ["1", "2"]}, "limit"),
        (q(provider=","), "provider"),
    ],
)
def test_bad_input_names_the_parameter(query: dict[str, list[str]], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_feed(query, ALLOWED)
    assert info.value.param == param
    assert info.value.body()["param"] == param


def test_good_input_parses() -> None:
    since = C.encode({0: 41})
    req = parse_feed(
        q(
            since=since,
            limit="50",
            market="nyc",
            provider="resy,opentable",
            time_slot="1900",
            date_from="2026-12-01",
            party_size="4",
            neighborhood="SoHo,Tribeca",
        ),
        ALLOWED,
    )
    assert req.since == {0: 41} and req.limit == 50
    f = req.filters
    assert f.time_slot == ("19:00",) and f.provider == ("resy", "opentable")
    assert f.neighborhood == ("SoHo", "Tribeca") and f.party_size == 4
    sql, params = f.sql()
    assert "time_slot IN %(f_time_slot)s" in sql and params["f_party"] == 4


def test_last_event_id_wins_over_since() -> None:
    since, _ = parse_stream(q(since=C.encode({0: 1})), C.encode({0: 9}), ALLOWED)
    assert since == {0: 9}
    with pytest.raises(BadRequest) as info:
        parse_stream({}, "garbage!", ALLOWED)
    assert info.value.param == "Last-Event-ID"


def test_filters_match_like_the_sql() -> None:
    ev = item_from_event(make_drop(3, party=(2, 4), time_slot="19:00", date="2026-12-03"), 0, 7)
    assert Filters().matches(ev)
    assert Filters(party_size=4).matches(ev) and not Filters(party_size=5).matches(ev)
    assert Filters(date_from="2026-12-03", date_to="2026-12-03").matches(ev)
    assert not Filters(date_from="2026-12-04").matches(ev)
    assert not Filters(time_slot=("15:00",)).matches(ev)
    assert Filters(event=("open",)).matches(ev) and not Filters(event=("close",)).matches(ev)
    assert Filters(venue=(ev["venue_id"],), neighborhood=(ev["neighborhood"],)).matches(ev)


def _batch(events: list[tuple[int, int, dict[str, object]]], before: C.Cursor) -> LiveBatch:
    pos = dict(before)
    out = []
    for p, o, item in events:
        pos[p] = o
        out.append(LiveEvent(p, o, item, item_bytes(item), dict(pos), sse_bytes(item, pos)))
    return LiveBatch(tuple(out), dict(before), dict(pos), b"".join(e.data for e in out), 0.0)


def test_render_skips_what_the_client_has_and_filters() -> None:
    a = make_drop(1)
    items = [item_from_event(a, 0, 5), item_from_event(close_of(a, a.opened_at_ms + 1), 0, 6)]
    b1 = _batch([(0, 5, items[0])], {0: 4})
    b2 = _batch([(0, 6, items[1])], {0: 5})
    data, pos, n = render([b1, b2], {0: 4}, Filters())
    assert data == b1.joined + b2.joined and pos == {0: 6} and n == 2
    data, pos, n = render([b1, b2], {0: 5}, Filters())  # already has offset 5
    assert data == b2.joined and n == 1
    data, pos, n = render([b1, b2], {0: 4}, Filters(event=("close",)))
    assert n == 1 and b"close" in data and pos == {0: 6}
    assert render([b1, b2], {0: 6}, Filters())[2] == 0


def test_a_cursor_naming_partitions_the_topic_does_not_have_is_rejected() -> None:
    """A cursor may name up to 4,096 partitions; only the drops topic's are accepted (before:
    every partition was kept, and each event for such a client copied a 4,096-entry cursor)."""
    one = Allowed(
        markets=ALLOWED.markets,
        providers=ALLOWED.providers,
        time_slots=ALLOWED.time_slots,
        partitions=1,
    )
    huge = C.encode(dict.fromkeys(range(4096), 0))  # 16,000 characters
    for query, header in ((q(since=huge), None), ({}, huge)):
        with pytest.raises(BadRequest) as exc:
            if header is None:
                parse_feed(query, one)
            else:
                parse_stream(query, header, one)
        assert "partition" in exc.value.message
    assert parse_feed(q(since=C.encode({0: 5})), one).since == {0: 5}
    three = Allowed(ALLOWED.markets, ALLOWED.providers, ALLOWED.time_slots, partitions=3)
    assert parse_feed(q(since=C.encode({0: 5, 2: 1})), three).since == {0: 5, 2: 1}
    with pytest.raises(BadRequest):
        parse_feed(q(since=C.encode({3: 1})), three)
