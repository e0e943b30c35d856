"""The booking link builder (domain/booking.py), against a plain reference model: the link
parses back into exactly the venue, date, time and party size it was built from."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, unquote, urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.booking import booking_url, drop_link, link_party_size

starts = st.builds(
    dt.datetime, st.integers(2020, 2035), st.integers(1, 12), st.integers(1, 28),
    st.integers(0, 23), st.sampled_from([0, 15, 30, 45, 7, 59]),
).map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S"))  # fmt: skip
# hostile slugs: path and query syntax, schemes, dot segments, whitespace, unicode, controls
hostile = st.text(
    alphabet=st.sampled_from(list("aZ09-_.~/?#&=%:;@+!$'()*,[] \\\"<>`{}|^\t\n\x00é中")),
    max_size=30,
) | st.sampled_from(
    ["..", ".", "javascript:alert(1)", "//evil.example", "a/../../b", "x?seats=99#frag", "%2F"]
)


def ok_segment(value: str) -> bool:
    """The reference: a slug or city is usable when, stripped, it is not empty, not a dot
    segment, at most 200 characters and free of control characters."""
    v = value.strip()
    return bool(v) and v not in (".", "..") and len(v) <= 200 and v.isprintable()


@settings(max_examples=600, deadline=None)
@given(hostile | st.just("lilia"), hostile | st.just("new-york-ny"), starts, st.integers(1, 20))
def test_resy_links_parse_back_to_what_they_were_built_from(
    slug: str, city: str, start: str, party: int
) -> None:
    link = booking_url("resy", "1505", slug, city, start, party)
    if not (ok_segment(slug) and ok_segment(city)):
        assert link == ""  # no link, never a broken one
        return
    u = urlsplit(link)
    assert (u.scheme, u.netloc, u.fragment) == ("https", "resy.com", "")
    parts = u.path.split("/")
    # exactly /cities/<city>/venues/<slug>: a hostile slug adds no segment
    assert len(parts) == 5 and parts[:2] == ["", "cities"] and parts[3] == "venues"
    assert unquote(parts[2]) == city.strip() and unquote(parts[4]) == slug.strip()
    assert parse_qs(u.query, strict_parsing=True) == {
        "date": [start[:10]],
        "seats": [str(party)],
        "time": [start[11:13] + start[14:16]],
    }


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**18 - 1) | st.just(-1), starts, st.integers(1, 20))
def test_opentable_links_carry_the_restaurant_and_its_time(
    rid: int, start: str, party: int
) -> None:
    if rid < 0:  # not a restaurant id: no link
        for bad in ("x1?&", "12/34", "1" * 19, "١٢", " "):
            assert booking_url("opentable", bad, "", "", start, party) == ""
        return
    u = urlsplit(booking_url("opentable", str(rid), "", "", start, party))
    assert (u.scheme, u.netloc, u.path) == ("https", "www.opentable.com", "/restref/client/")
    assert parse_qs(u.query, strict_parsing=True) == {
        "rid": [str(rid)],
        "restref": [str(rid)],
        "datetime": [start[:10] + "T" + start[11:16]],
        "covers": [str(party)],
    }


@given(hostile, hostile, st.text(max_size=25), st.integers(-3, 120))
def test_bad_input_gives_no_link_and_a_link_is_always_https(
    slug: str, city: str, start: str, party: int
) -> None:
    for provider in ("resy", "opentable", "tock", ""):
        link = booking_url(provider, "12", slug, city, start, party)
        assert link == "" or link.startswith(("https://resy.com/", "https://www.opentable.com/"))
        if link:
            assert not any(c in link for c in " \t\n\"'<>\\`{}|^")


def test_missing_parts_give_no_link() -> None:
    start = "2026-12-08 19:30:00"
    assert booking_url("resy", "1", "", "new-york-ny", start, 2) == ""
    assert booking_url("resy", "1", "lilia", "", start, 2) == ""
    assert booking_url("resy", "1", "lilia", "ny", "2026-12-08", 2) == ""
    assert booking_url("resy", "1", "lilia", "ny", "2026-02-30 19:30:00", 2) == ""
    assert booking_url("resy", "1", "lilia", "ny", start, 0) == ""
    assert booking_url("opentable", "", "", "", start, 2) == ""
    assert booking_url("tock", "1", "lilia", "ny", start, 2) == ""
    assert booking_url("resy", "1", "lilia", "new-york-ny", start, 4) == (
        "https://resy.com/cities/new-york-ny/venues/lilia?date=2026-12-08&seats=4&time=1930"
    )


@given(st.integers(0, 30), st.integers(0, 30), st.integers(-5, 30))
def test_the_link_party_size_is_the_preferred_one_moved_into_the_slot_range(
    lo: int, hi: int, preferred: int
) -> None:
    got = link_party_size(lo, hi, preferred)
    want = max(1, preferred)
    if hi >= max(1, lo):  # a known range: the size in it nearest the preferred one
        want = min(range(max(1, lo), hi + 1), key=lambda n: (abs(n - want), n))
    assert got == want


def test_a_watch_party_size_rebuilds_the_link_and_old_records_fall_back() -> None:
    drop = {
        "provider": "resy",
        "venue_id": "1505",
        "venue_slug": "lilia",
        "venue_city": "new-york-ny",
        "actual_time": "2026-12-08 19:30:00",
        "party_min": 2,
        "party_max": 6,
        "booking_url": "https://resy.com/cities/new-york-ny/venues/lilia?date=2026-12-08&seats=2",
        "booking": "rgs://resy/1505/abc",
    }
    assert "seats=4" in drop_link(drop, 4)
    assert drop_link(drop) == drop["booking_url"]
    old = {k: v for k, v in drop.items() if k not in ("venue_slug", "venue_city", "booking_url")}
    assert drop_link(old, 4) == "" and drop_link(old) == ""  # a token is never a link
    assert drop_link({**old, "booking": "https://example.test/b"}) == "https://example.test/b"
    assert drop_link({**old, "booking": "javascript:alert(1)"}) == ""
