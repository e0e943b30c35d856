"""The control helper against a simulator served on a real port (28001)."""

from __future__ import annotations

import httpx

from simulator.control import SimControl, serve
from simulator.market import Market
from simulator.server import create_app

PORT = 28001


def test_control_helper_round_trip() -> None:
    app = create_app(Market(seed=2, venues=30), api_key="k", scripted=True)
    with serve(app, port=PORT) as url, SimControl(url) as sim:
        sim.wait_ready()
        sim.freeze(1_772_470_800_000)  # 2026-03-02 12:00 New York
        before = {s["slot_id"] for s in sim.slots("2026-03-04", "19:00", provider="resy")}
        sid = sim.open("resy", 1003, "2026-03-04 19:05:00")
        after = {s["slot_id"] for s in sim.slots("2026-03-04", "19:00", provider="resy")}
        assert after == before | {sid}
        assert sim.close("resy", 1003, "2026-03-04 19:05:00") == sid
        assert {s["slot_id"] for s in sim.slots("2026-03-04", "19:00", party_size=2)} >= before
        fault = sim.fault("5xx", count=1, provider="resy")
        assert fault["remaining"] == 1
        r = httpx.post(
            f"{url}/3/venuesearch/search",
            json={"slot_filter": {"day": "2026-03-04", "party_size": 2}},
            headers={"Authorization": 'ResyAPI api_key="k"', "User-Agent": "t"},
        )
        assert r.status_code == 503
        assert sim.faults()[0]["applied"] == 1
        assert len(sim.venues("opentable")) == 30
        sim.reset()
        assert sim.faults() == [] and sim.stats()["scripted"] is True
