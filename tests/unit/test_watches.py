"""Watches: the records, their JSON Schema files, the predicate, and the index against a plain
linear scan (hypothesis)."""

from __future__ import annotations

import datetime as dt
import json
from importlib import resources
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.watches import (
    WatchIndex,
    alert_id,
    human_time,
    matches,
    slot_day_end_ms,
    texts,
    told_ttl_ms,
)
from schemas import SchemaError
from schemas.watches import (
    SCHEMA_FILES,
    WEEKDAYS,
    Channel,
    Criteria,
    Watch,
    WatchSpec,
    decode_watch,
    encode_record,
    field_of,
    json_schema,
)

DAY0 = dt.date(2026, 12, 1)


def drop(**kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "event": "open",
        "market": "nyc",
        "provider": "resy",
        "venue_id": "1505",
        "venue_name": "Lilia",
        "neighborhood": "Williamsburg",
        "date": "2026-12-08",
        "actual_time": "2026-12-08 19:30:00",
        "party_min": 2,
        "party_max": 4,
        "seating_types": ["Dining Room"],
        "dedupe_key": "nyc:2026-12-08:1900|abc|1",
    }
    d.update(kw)
    return d


def watch(wid: str, **criteria: Any) -> Watch:
    return Watch(
        watch_id=wid,
        owner="local",
        secret="s" * 32,
        created_at_ms=1,
        updated_at_ms=1,
        channels=[Channel(type="webhook", url="http://127.0.0.1:9/hook")],
        criteria=Criteria(**criteria),
    )


# ------------------------------------------------------------------------------ records


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_schema_files_are_current(name: str) -> None:
    text = resources.files("schemas").joinpath(f"json/{name}").read_text()
    assert json.loads(text) == json_schema(name), "run: python -m schemas.watches"


def test_watch_round_trip_and_schema() -> None:
    w = watch("w1", markets=["nyc"], date_from="2026-12-01", time_from="18:00")
    raw = encode_record(w)
    jsonschema.validate(json.loads(raw), json_schema("watch.v1.json"))
    assert decode_watch(raw) == w
    # a newer writer's extra field is tolerated
    doc = json.loads(raw)
    doc["later"] = 1
    assert decode_watch(json.dumps(doc)) == w


def test_decode_names_the_field() -> None:
    doc = json.loads(encode_record(watch("w1")))
    doc["criteria"]["time_from"] = "25:00"
    with pytest.raises(SchemaError, match=r"criteria\.time_from"):
        decode_watch(json.dumps(doc))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channels": []}, "channels"),
        ({"channels": [{"type": "sms", "url": "x://y"}]}, "channels.0.type"),
        ({"channels": [{"type": "webhook", "url": "ftp://x"}]}, "channels.0"),
        ({"channels": [{"type": "webhook", "url": "http://x"}], "bogus": 1}, "bogus"),
        (
            {"channels": [{"type": "webhook", "url": "http://x"}], "criteria": {"weekdays": ["x"]}},
            "criteria.weekdays.0",
        ),
        (
            {
                "channels": [{"type": "webhook", "url": "http://x"}],
                "criteria": {"date_from": "2026-12-09", "date_to": "2026-12-08"},
            },
            "criteria",
        ),
        (
            {"channels": [{"type": "webhook", "url": "http://x"}], "criteria": {"party_size": 0}},
            "criteria.party_size",
        ),
    ],
)
def test_spec_validation_names_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        WatchSpec.model_validate(body)
    assert field_of(exc.value) == field


# ------------------------------------------------------------------------------ predicate


def test_predicate_cases() -> None:
    d = drop()
    assert matches(Criteria(), d)
    assert matches(Criteria(venue_ids=["1505"], markets=["nyc"], providers=["resy"]), d)
    assert not matches(Criteria(exclude_venue_ids=["1505"]), d)
    assert matches(Criteria(neighborhoods=[" williamsburg "]), d)
    assert matches(Criteria(weekdays=["tue"]), d)  # 8 Dec 2026 is a Tuesday
    assert not matches(Criteria(weekdays=["wed"]), d)
    assert matches(Criteria(time_from="19:30", time_to="19:30"), d)
    assert matches(Criteria(time_slots=["19:00"]), drop(time_slot="19:00"))
    assert not matches(Criteria(time_slots=["15:00"]), drop(time_slot="19:00"))
    assert not matches(Criteria(time_from="19:31"), d)
    assert matches(Criteria(date_from=dt.date(2026, 12, 8), date_to=dt.date(2026, 12, 8)), d)
    assert not matches(Criteria(date_to=dt.date(2026, 12, 7)), d)
    assert matches(Criteria(party_size=4), d)
    assert not matches(Criteria(party_size=5), d)
    assert not matches(Criteria(party_size=2), drop(party_min=0, party_max=0))
    assert matches(Criteria(seating_types=["dining room", "bar"]), d)
    assert not matches(Criteria(seating_types=["Bar"]), d)


def test_texts_and_ids() -> None:
    assert human_time("2026-12-08 19:30:00") == "Tue 8 Dec, 7:30 pm"
    assert human_time("2026-12-08 00:05:00") == "Tue 8 Dec, 12:05 am"
    assert human_time("2026-12-08 12:00:00") == "Tue 8 Dec, 12:00 pm"
    title, body = texts("open", drop())
    assert title == "Lilia: Tue 8 Dec, 7:30 pm"
    assert "2-4 people" in body and "Williamsburg" in body
    assert "gone again" in texts("close", drop(open_seconds=240.0))[0]
    assert alert_id("w1", "k") == alert_id("w1", "k") != alert_id("w2", "k")
    assert len(alert_id("w1", "k")) == 32


# ------------------------------------------------------------------------------ index vs scan

VENUES = ["1", "2", "3", "4"]
HOODS = ["Soho", "Tribeca", ""]
TIMES = ["15:00", "17:30", "19:00", "21:15"]


def reference(c: Criteria, d: dict[str, Any]) -> bool:
    """The predicate restated plainly (every criterion as a set membership or comparison)."""
    day = dt.date.fromisoformat(d["actual_time"][:10])
    hhmm = d["actual_time"][11:16]
    ok = [
        not c.markets or d["market"] in c.markets,
        not c.providers or d["provider"] in c.providers,
        not c.venue_ids or d["venue_id"] in c.venue_ids,
        d["venue_id"] not in c.exclude_venue_ids,
        not c.neighborhoods
        or d["neighborhood"].lower() in {n.strip().lower() for n in c.neighborhoods},
        c.date_from is None or c.date_from <= day,
        c.date_to is None or day <= c.date_to,
        not c.weekdays or WEEKDAYS[day.weekday()] in c.weekdays,
        not c.time_slots or d["time_slot"] in c.time_slots,
        c.time_from is None or c.time_from <= hhmm,
        c.time_to is None or hhmm <= c.time_to,
        c.party_size is None
        or (d["party_min"] > 0 and d["party_min"] <= c.party_size <= d["party_max"]),
        not c.seating_types
        or bool({s.lower() for s in c.seating_types} & {s.lower() for s in d["seating_types"]}),
    ]
    return all(ok)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


dates = st.integers(0, 8).map(lambda i: DAY0 + dt.timedelta(days=i))


@st.composite
def criteria(draw: st.DrawFn) -> Criteria:
    d1, d2 = draw(_maybe(dates)), draw(_maybe(dates))
    if draw(st.booleans()):
        d1 = d2 = None
    if d1 and d2 and d1 > d2:
        d1, d2 = d2, d1
    if draw(st.booleans()) and d1 and d2:  # sometimes a range too long to file by date
        d2 = d1 + dt.timedelta(days=100)
    t1, t2 = draw(_maybe(st.sampled_from(TIMES))), draw(_maybe(st.sampled_from(TIMES)))
    if t1 and t2 and t1 > t2:
        t1, t2 = t2, t1

    def some(strategy: st.SearchStrategy[Any], empty: Any) -> Any:
        # each criterion is given only now and then, so that every index key is exercised
        return draw(strategy) if draw(st.integers(0, 2)) == 0 else empty

    return Criteria(
        markets=some(st.lists(st.sampled_from(["nyc", "sf"]), min_size=1, max_size=2), []),
        providers=some(st.lists(st.sampled_from(["resy", "opentable"]), max_size=1), []),
        venue_ids=some(st.lists(st.sampled_from(VENUES), min_size=1, max_size=2), []),
        exclude_venue_ids=some(st.lists(st.sampled_from(VENUES), max_size=1), []),
        neighborhoods=some(st.lists(st.sampled_from(["soho", "TRIBECA"]), max_size=2), []),
        date_from=d1,
        date_to=d2,
        weekdays=some(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=3), []),
        time_slots=some(st.lists(st.sampled_from(["15:00", "19:00"]), min_size=1, max_size=2), []),
        time_from=t1,
        time_to=t2,
        party_size=some(st.integers(1, 6), None),
        seating_types=some(st.lists(st.sampled_from(["Bar", "patio"]), max_size=2), []),
    )


@st.composite
def drops(draw: st.DrawFn) -> dict[str, Any]:
    day = draw(dates)
    lo = draw(st.integers(0, 4))
    return drop(
        market=draw(st.sampled_from(["nyc", "sf"])),
        provider=draw(st.sampled_from(["resy", "opentable"])),
        venue_id=draw(st.sampled_from(VENUES)),
        neighborhood=draw(st.sampled_from(HOODS)),
        date=day.isoformat(),
        actual_time=f"{day.isoformat()} {draw(st.sampled_from(TIMES))}:00",
        time_slot=draw(st.sampled_from(["15:00", "19:00"])),
        party_min=lo,
        party_max=lo + draw(st.integers(0, 3)) if lo else 0,
        seating_types=draw(st.lists(st.sampled_from(["bar", "Patio", "Dining Room"]))),
    )


ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from("abcdefgh"), criteria()),
        st.tuples(st.just("del"), st.sampled_from("abcdefgh"), st.none()),
        st.tuples(st.just("drop"), st.none(), drops()),
    ),
    max_size=40,
)


@settings(max_examples=500, deadline=None)
@given(ops)
def test_index_equals_linear_scan(history: list[tuple[str, Any, Any]]) -> None:
    index = WatchIndex()
    plain: dict[str, Criteria] = {}
    for op, wid, arg in history:
        if op == "put":
            index.upsert(watch(wid, **arg.model_dump()))
            plain[wid] = arg
        elif op == "del":
            index.remove(wid)
            plain.pop(wid, None)
        else:
            expected = sorted(w for w, c in plain.items() if reference(c, arg))
            assert [w.watch_id for w in index.match(arg)] == expected
    assert sorted(index.watches) == sorted(plain)


def test_a_drop_no_watch_wants_looks_at_no_watch() -> None:
    index = WatchIndex()
    for i in range(5000):
        index.upsert(watch(f"w{i}", venue_ids=[f"v{i}"]))
        index.upsert(watch(f"n{i}", neighborhoods=[f"hood{i}"]))
    assert index.candidates(drop(venue_id="elsewhere", neighborhood="nowhere")) == set()
    assert [w.watch_id for w in index.match(drop(venue_id="v7"))] == ["w7"]


def day_end_reference(date: str, time_zone: str) -> int:
    """The first quarter-hour instant whose local date is after ``date`` (a plain scan: every
    zone's midnight is on a quarter hour)."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(time_zone)
    d = dt.date.fromisoformat(date)
    t = dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC) - dt.timedelta(hours=16)
    while t.astimezone(tz).date() <= d:
        t += dt.timedelta(minutes=15)
    return int(t.timestamp() * 1000)


ZONES = ["America/New_York", "America/Los_Angeles", "Europe/London", "Asia/Kolkata", "UTC"]


@given(
    day=st.dates(dt.date(2024, 1, 1), dt.date(2030, 12, 31)),
    zone=st.sampled_from(ZONES),
    before=st.integers(-2 * 86_400_000, 20 * 86_400_000),
    most=st.integers(1, 30 * 86_400_000),
)
def test_told_watches_are_kept_until_the_slots_date_has_passed_and_no_longer_than_most(
    day: dt.date, zone: str, before: int, most: int
) -> None:
    end = day_end_reference(day.isoformat(), zone)
    assert slot_day_end_ms(day.isoformat(), zone) == end
    ttl = told_ttl_ms(day.isoformat(), zone, end - before, most)
    assert ttl == (0 if before <= 0 else min(before, most))


def test_a_dst_day_ends_at_its_own_midnight() -> None:
    # 2026-11-01 in New York has 25 hours: it ends at 05:00 UTC on the 2nd, not 04:00
    end = slot_day_end_ms("2026-11-01", "America/New_York")
    assert end == int(dt.datetime(2026, 11, 2, 5, tzinfo=dt.UTC).timestamp() * 1000)
