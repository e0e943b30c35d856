"""A client of the simulator's ``/_control`` endpoints for tests, and a way to serve the
simulator from a thread inside a test process.

    with serve(create_app(Market(venues=50), scripted=True), port=28001) as url:
        sim = SimControl(url)
        sim.open("resy", 1001, "2026-03-01 19:30:00")
        sim.fault("5xx", count=10)
        expected = sim.slots("2026-03-01", "19:00")
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx


class SimControl:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close_client(self) -> None:
        self._http.close()

    def __enter__(self) -> SimControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_client()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._http.request(method, f"/_control/{path}", **kw)
        if resp.status_code >= 400:
            raise RuntimeError(f"simulator {path}: {resp.status_code} {resp.text}")
        return resp.json()

    # slots
    def open(
        self,
        provider: str,
        venue_id: int | str,
        actual_time: str,
        seating_types: tuple[str, ...] = ("Dining Room",),
        party_min: int = 1,
        party_max: int = 8,
    ) -> str:
        """Open a slot; returns its slot id."""
        body = {
            "provider": provider,
            "venue_id": int(venue_id),
            "actual_time": actual_time,
            "seating_types": list(seating_types),
            "party_min": party_min,
            "party_max": party_max,
        }
        return str(self._call("POST", "open", json=body)["slot_id"])

    def close(self, provider: str, venue_id: int | str, actual_time: str) -> str:
        """Close a slot; returns its slot id."""
        body = {"provider": provider, "venue_id": int(venue_id), "actual_time": actual_time}
        return str(self._call("POST", "close", json=body)["slot_id"])

    def slots(
        self, date: str, time_slot: str, party_size: int | None = None, provider: str | None = None
    ) -> list[dict[str, Any]]:
        """The exact open set of one bucket: ``[{provider, venue_id, actual_time, slot_id}]``."""
        params: dict[str, Any] = {"date": date, "time_slot": time_slot}
        if party_size is not None:
            params["party_size"] = party_size
        if provider:
            params["provider"] = provider
        return list(self._call("GET", "slots", params=params)["slots"])

    def venues(self, provider: str = "resy") -> list[dict[str, Any]]:
        return list(self._call("GET", "venues", params={"provider": provider})["venues"])

    # faults
    def fault(
        self,
        kind: str,
        count: int | None = None,
        rate: float | None = None,
        provider: str = "*",
        **extra: Any,
    ) -> dict[str, Any]:
        """Inject a fault for the next ``count`` requests, or for a ``rate`` share of them."""
        body: dict[str, Any] = {"kind": kind, "provider": provider, **extra}
        if count is not None:
            body["count"] = count
        if rate is not None:
            body["rate"] = rate
        return dict(self._call("POST", "faults", json=body)["fault"])

    def faults(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "faults")["faults"])

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    # time and mode
    def freeze(self, at_ms: int | None = None) -> int:
        body = {} if at_ms is None else {"at_ms": at_ms}
        return int(self._call("POST", "freeze", json=body)["model_ms"])

    def unfreeze(self) -> None:
        self._call("POST", "unfreeze", json={})

    def set_clock(self, now_ms: int) -> None:
        self._call("POST", "clock", json={"now_ms": now_ms})

    def advance(self, ms: int) -> None:
        self._call("POST", "clock", json={"advance_ms": ms})

    def wall_clock(self) -> None:
        self._call("POST", "clock", json={"wall": True})

    def reset(self) -> None:
        self._call("POST", "reset", json={})

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "stats"))

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", "health")
                return
            except (httpx.HTTPError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@contextlib.contextmanager
def serve(app: Any, host: str = "127.0.0.1", port: int = 28000) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a daemon thread; yields its base URL."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the simulator did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
