"""Every market of the config file, end to end: the API's filters, /markets, /buckets,
/just-opened, /stats/by-hour, the OpenAPI enum and the analysts' views, each market in its
own time zone (on the real broker and chDB)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from drops.settings import Settings
from sinks.testdata import DropWriter, make_drop, make_stats
from tests.integration.test_api_feed import Server, read_all, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.clock]

ZONES = {"nyc": "America/New_York", "chi": "America/Chicago", "del": "Asia/Kolkata"}

CONFIG = """
[[markets]]
name = "nyc"
time_zone = "America/New_York"
providers = ["resy"]

[[markets]]
name = "chi"
time_zone = "America/Chicago"
providers = ["resy", "opentable"]

[[markets]]
name = "del"
time_zone = "Asia/Kolkata"
providers = ["resy"]
"""


@pytest.fixture
def markets_settings(kafka_settings: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "markets.toml"
    path.write_text(CONFIG)
    return kafka_settings.model_copy(update={"config": path})


def local_days(s: Settings) -> dict[str, str]:
    """Each market's local date now, by the API's clock (the tests run at chosen instants,
    midnight among them: compare with the dates just before and just after a request)."""
    now = s.clock().now()
    return {m: now.astimezone(ZoneInfo(z)).date().isoformat() for m, z in ZONES.items()}


def get(url: str, **params: Any) -> Any:
    r = httpx.get(url, params=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_every_market_reaches_the_api_in_its_own_time_zone(markets_settings: Settings) -> None:
    s = markets_settings
    now = s.clock().now_ms()  # the API's clock
    events = {
        "nyc": [make_drop(i, market="nyc", opened_at_ms=now - 60_000 * i) for i in range(3)],
        "chi": [make_drop(10 + i, market="chi", opened_at_ms=now - 60_000 * i) for i in range(2)],
        # an hour ago: the last hour of the chart in a zone with a half-hour offset
        "del": [make_drop(20, market="del", opened_at_ms=now - 3_600_000)],
    }
    with Server(s, with_sink=True) as api:
        w = DropWriter(s)
        w.write([e for evs in events.values() for e in evs])
        day = {m: datetime.fromtimestamp(now / 1000, ZoneInfo(z)).date() for m, z in ZONES.items()}
        # a bucket today and tomorrow: a market's day may end while the test runs
        w.write_stats(
            [
                make_stats(
                    market=m, date=(day[m] + timedelta(days=d)).isoformat(), polled_at_ms=now
                )
                for m in ZONES
                for d in (0, 1)
            ]
        )
        wait_for(lambda: len(read_all(api.url, None, 100)[0]) == 6)

        # /markets: the configured list, in order, with each one's local date
        before = local_days(s)
        got = get(api.url + "/markets")["markets"]
        after = local_days(s)
        assert [(m["name"], m["time_zone"]) for m in got] == list(ZONES.items())
        for m in got:
            assert m["today"] in (before[m["name"]], after[m["name"]]), m

        # the feed and just-opened filter by any configured market; an unknown one is a 400
        for market, evs in events.items():
            items, _ = read_all(api.url, None, 100, market=market)
            assert [i["dedupe_key"] for i in items] == [e.dedupe_key for e in evs]
        just = get(api.url + "/just-opened", market="chi")["items"]
        assert {i["dedupe_key"] for i in just} == {e.dedupe_key for e in events["chi"]}
        for path in ("/feed", "/just-opened", "/buckets", "/stats/by-hour"):
            r = httpx.get(api.url + path, params={"market": "sfo"})
            assert r.status_code == 400 and r.json()["param"] == "market", (path, r.text)

        # /buckets: one market's buckets, its "today" in its zone; the first one by default
        before = local_days(s)
        first = wait_for(lambda: get(api.url + "/buckets")["buckets"] and get(api.url + "/buckets"))
        assert first["market"] == "nyc"
        assert first["today"] in (before["nyc"], local_days(s)["nyc"])
        for market in ZONES:
            before = local_days(s)
            doc = wait_for(
                lambda m=market: (d := get(api.url + "/buckets", market=m))["buckets"] and d
            )
            assert doc["market"] == market and doc["time_zone"] == ZONES[market]
            assert doc["today"] in (before[market], local_days(s)[market])
            assert {b["bucket_id"].split(":")[0] for b in doc["buckets"]} == {market}

        # /stats/by-hour: the market's drops, in hours of its own zone
        for market, evs in events.items():
            doc = get(api.url + "/stats/by-hour", market=market)
            assert doc["market"] == market and doc["time_zone"] == ZONES[market]
            assert sum(h["drops"] for h in doc["hours"]) == len(evs)
            zone = ZoneInfo(ZONES[market])
            for h in doc["hours"]:
                start = datetime.fromtimestamp(h["hour_ms"] / 1000, zone)
                assert (start.minute, start.second) == (0, 0), (market, start)
        kolkata = get(api.url + "/stats/by-hour", market="del")["hours"]
        assert all(h["hour_ms"] % 3_600_000 == 1_800_000 for h in kolkata)  # UTC+05:30

        # the OpenAPI document lists the markets
        spec = get(api.url + "/openapi.json")
        feed_params = {p["name"]: p for p in spec["paths"]["/feed"]["get"]["parameters"]}
        market_schema = feed_params["market"]["schema"]
        assert market_schema.get("items", market_schema)["enum"] == list(ZONES)
        assert "/markets" in spec["paths"]

        # the analysts' views: local hours and days of each row's market
        ch = api.app.state.drops.ch
        by_hour = Counter(
            {
                (m, int(h)): int(n)
                for m, h, n in ch.query("SELECT market, hour, drops FROM drops_by_hour")
            }
        )
        expected: Counter[tuple[str, int]] = Counter()
        for market, evs in events.items():
            for e in evs:
                local = datetime.fromtimestamp(e.opened_at_ms / 1000, UTC).astimezone(
                    ZoneInfo(ZONES[market])
                )
                expected[(market, local.hour)] += 1
        assert by_hour == expected
        days = {
            (str(m), str(d)): int(n)
            for m, d, n in ch.query(
                "SELECT market, toString(day), sum(drops) FROM drops_per_venue_day "
                "GROUP BY market, day"
            )
        }
        want: Counter[tuple[str, str]] = Counter()
        for market, evs in events.items():
            for e in evs:
                local_day = datetime.fromtimestamp(e.opened_at_ms / 1000, ZoneInfo(ZONES[market]))
                want[(market, local_day.date().isoformat())] += 1
        assert days == dict(want)
        w.close()
