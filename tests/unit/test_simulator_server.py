"""The simulator's wire formats, auth, faults and control endpoints (in process)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest
from starlette.testclient import TestClient

from simulator.market import Market
from simulator.server import create_app

NY = ZoneInfo("America/New_York")
T0 = int(datetime(2026, 3, 2, 12, 0, tzinfo=NY).timestamp() * 1000)
DAY = "2026-03-04"
HEADERS = {"Authorization": 'ResyAPI api_key="k"', "User-Agent": "Mozilla/5.0"}


@pytest.fixture
def client() -> TestClient:
    app = create_app(Market(seed=4, venues=230), api_key="k", scripted=True)
    c = TestClient(app)
    assert c.post("/_control/freeze", json={"at_ms": T0}).json()["model_ms"] == T0
    return c


def search(c: TestClient, page: int, per_page: int = 100, time_filter: str = "19:00") -> dict:
    body = {
        "slot_filter": {"day": DAY, "party_size": 2, "time_filter": time_filter},
        "availability": True,
        "page": page,
        "per_page": per_page,
        "types": ["venue"],
    }
    r = c.post("/3/venuesearch/search", json=body, headers=HEADERS)
    assert r.status_code == 200, r.text
    return r.json()


def test_search_pages_cover_every_venue_once_and_cap_per_page(client: TestClient) -> None:
    pages = [search(client, p, per_page=500) for p in (1, 2, 3)]
    assert [len(p["search"]["hits"]) for p in pages] == [100, 100, 30]
    assert all(p["search"]["nbHits"] == 230 for p in pages)
    ids = [h["id"]["resy"] for p in pages for h in p["search"]["hits"]]
    assert len(ids) == len(set(ids)) == 230
    hit = pages[0]["search"]["hits"][0]
    assert hit["location"]["time_zone"] == "EST5EDT" and hit["location"]["neighborhood"]
    slots = [s for p in pages for h in p["search"]["hits"] for s in h["availability"]["slots"]]
    assert slots
    for s in slots:
        assert set(s["config"]) == {"id", "type", "token"}
        start = s["date"]["start"]
        assert start.startswith(DAY)
        minute = int(start[11:13]) * 60 + int(start[14:16])
        assert 19 * 60 - 150 <= minute <= 19 * 60 + 150  # a time query answers ±150 min
        assert s["size"]["min"] <= 2 <= s["size"]["max"]


def test_resy_needs_a_key_and_a_user_agent(client: TestClient) -> None:
    body = {"slot_filter": {"day": DAY, "party_size": 2}}
    r = client.post("/3/venuesearch/search", json=body, headers={"User-Agent": "x"})
    assert r.status_code == 419
    bad = {"User-Agent": "x", "Authorization": 'ResyAPI api_key="nope"'}
    assert client.post("/3/venuesearch/search", json=body, headers=bad).status_code == 419
    no_ua = {"Authorization": HEADERS["Authorization"], "User-Agent": ""}
    assert client.post("/3/venuesearch/search", json=body, headers=no_ua).status_code == 500
    r = client.post("/3/venuesearch/search", json={"page": 1}, headers=HEADERS)
    assert r.status_code == 400 and "slot_filter" in r.json()["message"]


def test_find_lists_the_whole_day_of_one_venue(client: TestClient) -> None:
    r = client.get(
        "/4/find",
        params={"lat": 0, "long": 0, "day": DAY, "party_size": 2, "venue_id": 1005},
        headers=HEADERS,
    )
    assert r.status_code == 200
    venues = r.json()["results"]["venues"]
    assert len(venues) == 1 and venues[0]["venue"]["id"]["resy"] == 1005
    missing = client.get("/4/find", params={"day": DAY, "venue_id": 99}, headers=HEADERS)
    assert missing.status_code == 404


def test_opentable_availability_shape_and_nearby_restaurants(client: TestClient) -> None:
    body = {
        "operationName": "RestaurantsAvailability",
        "variables": {
            "restaurantIds": [200001, 200002],
            "date": DAY,
            "time": "19:00",
            "partySize": 2,
            "backwardMinutes": 150,
            "forwardMinutes": 150,
        },
    }
    r = client.post(
        "/dapi/fe/gql?optype=query&opname=RestaurantsAvailability",
        json=body,
        headers={"User-Agent": "Mozilla/5.0"},
    )
    assert r.status_code == 200
    rows = r.json()["data"]["availability"]
    assert [row["restaurantId"] for row in rows] == [200001, 200002, 200003]  # + one nearby
    slots = [s for row in rows for d in row["availabilityDays"] for s in d["slots"]]
    assert any(s["isAvailable"] for s in slots) and any(not s["isAvailable"] for s in slots)
    for s in slots:
        assert -150 <= s["timeOffsetMinutes"] <= 150
        if s["isAvailable"]:
            assert s["slotHash"] and s["slotAvailabilityToken"] and s["type"]


def test_reference_slots_match_what_the_search_serves_in_the_window(client: TestClient) -> None:
    ref = client.get("/_control/slots", params={"date": DAY, "time_slot": "19:00"}).json()
    resy_ref = {(s["venue_id"], s["actual_time"]) for s in ref["slots"] if s["provider"] == "resy"}
    served = set()
    for p in (1, 2, 3):
        for h in search(client, p)["search"]["hits"]:
            for s in h["availability"]["slots"]:
                start = s["date"]["start"]
                if "17:00:00" <= start[11:] < "21:30:00":
                    served.add((str(h["id"]["resy"]), start))
    assert resy_ref == served and served
    assert {s["provider"] for s in ref["slots"]} == {"resy", "opentable"}


def test_scripted_open_close_and_frozen_churn(client: TestClient) -> None:
    def ref() -> set[tuple[str, str]]:
        doc = client.get(
            "/_control/slots", params={"date": DAY, "time_slot": "19:00", "provider": "resy"}
        ).json()
        return {(s["venue_id"], s["actual_time"]) for s in doc["slots"]}

    before = ref()
    client.post("/_control/clock", json={"advance_ms": 600_000})  # frozen: advances model too
    moved = ref()
    client.post("/_control/freeze", json={"at_ms": T0})
    assert ref() == before != moved
    r = client.post(
        "/_control/open",
        json={"provider": "resy", "venue_id": 1002, "actual_time": f"{DAY} 19:10:00"},
    )
    assert r.status_code == 200 and len(r.json()["slot_id"]) == 16
    gone = sorted(before)[0]
    client.post(
        "/_control/close", json={"provider": "resy", "venue_id": gone[0], "actual_time": gone[1]}
    )
    assert ref() == (before | {("1002", f"{DAY} 19:10:00")}) - {gone}
    bad = client.post(
        "/_control/open", json={"provider": "resy", "venue_id": 5, "actual_time": "x"}
    )
    assert bad.status_code == 400
    client.post("/_control/reset")
    client.post("/_control/freeze", json={"at_ms": T0})
    assert ref() == before


def test_faults_by_count(client: TestClient) -> None:
    client.post("/_control/faults", json={"kind": "5xx", "count": 2, "provider": "resy"})
    client.post("/_control/faults", json={"kind": "429", "count": 1, "retry_after": 3})
    client.post("/_control/faults", json={"kind": "malformed", "count": 1})
    client.post("/_control/faults", json={"kind": "truncated", "count": 1})
    body = {"slot_filter": {"day": DAY, "party_size": 2}, "page": 1, "per_page": 100}
    codes = [client.post("/3/venuesearch/search", json=body, headers=HEADERS) for _ in range(6)]
    assert [r.status_code for r in codes[:3]] == [503, 503, 429]
    assert codes[2].headers["Retry-After"] == "3"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(codes[3].content)
    assert len(codes[4].json()["search"]["hits"]) == 50  # truncated: half a page, same nbHits
    assert codes[4].json()["search"]["nbHits"] == 230
    assert len(codes[5].json()["search"]["hits"]) == 100
    listed = client.get("/_control/faults").json()["faults"]
    assert [f["applied"] for f in listed] == [2, 1, 1, 1]
    assert client.post("/_control/faults", json={"kind": "boom"}).status_code == 400
    client.delete("/_control/faults")
    assert client.get("/_control/faults").json()["faults"] == []
    stats = client.get("/_control/stats").json()["counts"]
    assert stats["resy_requests"] == 6 and stats["fault_5xx"] == 2


def test_fault_rate_is_seeded() -> None:
    def run() -> list[int]:
        app = create_app(Market(seed=1, venues=10), api_key="k", fault_rate=0.5,
                         fault_kinds=("5xx",), fault_seed=3)  # fmt: skip
        c = TestClient(app)
        body = {"slot_filter": {"day": DAY, "party_size": 2}}
        return [
            c.post("/3/venuesearch/search", json=body, headers=HEADERS).status_code
            for _ in range(40)
        ]

    a = run()
    assert a == run()
    assert 8 < a.count(503) < 32


def test_search_pages_are_cached_only_while_the_market_is_unchanged(client: TestClient) -> None:
    first = search(client, 1)
    assert search(client, 1) == first
    hit = first["search"]["hits"][0]
    vid = hit["id"]["resy"]
    known = {s["date"]["start"] for s in hit["availability"]["slots"]}
    new = next(f"{DAY} {h:02d}:{m:02d}:00" for h in (18, 19, 20) for m in (5, 10, 20)
               if f"{DAY} {h:02d}:{m:02d}:00" not in known)  # fmt: skip
    client.post("/_control/open", json={"provider": "resy", "venue_id": vid, "actual_time": new})
    after = search(client, 1)["search"]["hits"][0]
    assert new in {s["date"]["start"] for s in after["availability"]["slots"]}
    client.post("/_control/reset")
    client.post("/_control/freeze", json={"at_ms": T0})
    assert search(client, 1) == first
    client.post("/_control/freeze", json={"at_ms": T0 + 3_600_000})  # an hour of churn later
    assert search(client, 1) != first


REACHES = [((120, 120), (17 * 60, 21 * 60)), ((90, 150), (17 * 60 + 30, 21 * 60 + 30))]


@pytest.mark.parametrize(("reach", "span"), REACHES)
def test_the_search_reach_is_a_setting(reach: tuple[int, int], span: tuple[int, int]) -> None:
    c = TestClient(create_app(Market(seed=4, venues=230, reach=reach), api_key="k", scripted=True))
    c.post("/_control/freeze", json={"at_ms": T0})
    starts = {
        int(s["date"]["start"][11:13]) * 60 + int(s["date"]["start"][14:16])
        for p in (1, 2, 3)
        for h in search(c, p)["search"]["hits"]
        for s in h["availability"]["slots"]
    }
    assert (min(starts), max(starts)) == span  # the market has a slot at both ends
    body = {  # OpenTable: never more than the reach, never more than asked
        "variables": {"restaurantIds": [200001 + i for i in range(40)], "date": DAY,
                      "time": "19:00", "partySize": 2, "backwardMinutes": 150,
                      "forwardMinutes": 60},
    }  # fmt: skip
    r = c.post("/dapi/fe/gql?optype=query&opname=RestaurantsAvailability", json=body,
               headers={"User-Agent": "x"})  # fmt: skip
    offsets = {
        s["timeOffsetMinutes"]
        for row in r.json()["data"]["availability"]
        for d in row["availabilityDays"]
        for s in d["slots"]
    }
    assert min(offsets) == -reach[0] and max(offsets) == 60


def test_sim_reach_setting_reads_one_or_two_numbers() -> None:
    from drops.settings import Settings

    assert Settings(sim_reach="120").simulator.reach == (120, 120)
    assert Settings(sim_reach="90, 150").simulator.reach == (90, 150)
    with pytest.raises(ValueError, match=r"simulator\.reach"):
        _ = Settings(sim_reach="1,2,3")


def test_a_fault_can_hit_one_endpoint_only(client: TestClient) -> None:
    r = client.post("/_control/faults", json={"kind": "5xx", "rate": 1.0, "endpoint": "search"})
    assert r.json()["fault"]["endpoint"] == "search"
    body = {"slot_filter": {"day": DAY, "party_size": 2, "time_filter": "19:00"}}
    assert client.post("/3/venuesearch/search", json=body, headers=HEADERS).status_code == 503
    params = {"day": DAY, "party_size": 2, "venue_id": 1005}
    assert client.get("/4/find", params=params, headers=HEADERS).status_code == 200
    counts = client.get("/_control/stats").json()["counts"]
    assert counts["search_requests"] == 1 and counts["find_requests"] == 1
    bad = client.post("/_control/faults", json={"kind": "5xx", "endpoint": "nowhere"})
    assert bad.status_code == 400 and "endpoint" in bad.json()["error"]


def test_the_reference_set_is_what_the_search_reaches() -> None:
    c = TestClient(create_app(Market(seed=4, venues=230, reach=(120, 120)), api_key="k",
                              scripted=True))  # fmt: skip
    c.post("/_control/freeze", json={"at_ms": T0})
    ref = c.get("/_control/slots", params={"date": DAY, "time_slot": "19:00"}).json()["slots"]
    starts = {s["actual_time"][11:16] for s in ref}
    assert max(starts) == "21:00" and min(starts) == "17:00"  # not the window's 21:29
