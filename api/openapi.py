"""The OpenAPI document of the read-only API (hand-written, small)."""

from __future__ import annotations

from typing import Any

from drops.settings import Settings


def _p(name: str, desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": desc,
        "schema": schema or {"type": "string"},
    }


def openapi(s: Settings) -> dict[str, Any]:
    filters = [
        _p("market", "Market(s), comma separated"),
        _p("provider", "Provider(s): resy, opentable"),
        _p("venue", "Venue id(s), comma separated"),
        _p("neighborhood", "Neighborhood(s), comma separated"),
        _p("date_from", "First reservation date, YYYY-MM-DD", {"type": "string", "format": "date"}),
        _p("date_to", "Last reservation date, YYYY-MM-DD", {"type": "string", "format": "date"}),
        _p("time_slot", f"Bucket time(s): {', '.join(s.slot_times)}"),
        _p("party_size", "Party size the slot must seat", {"type": "integer", "minimum": 1}),
        _p("event", "open or close (default both)"),
    ]
    err = {"description": "Bad input: JSON {error, param, message}"}
    since = _p("since", "Opaque cursor from a previous `next` or SSE event id")
    limit = _p(
        "limit",
        "Page size",
        {"type": "integer", "minimum": 1, "maximum": s.feed_max_limit, "default": 100},
    )

    def get(
        summary: str, params: list[dict[str, Any]], extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        responses: dict[str, Any] = {"200": {"description": "OK"}, "400": err}
        responses.update(extra or {})
        return {"get": {"summary": summary, "parameters": params, "responses": responses}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "Discovery Drops API", "version": "1"},
        "paths": {
            "/feed": get(
                "Drop and close events after a cursor, in log order: {items, next}",
                [since, limit, *filters],
            ),
            "/feed/stream": get(
                "SSE live feed (event `drop`, id = cursor); resumes from Last-Event-ID or since",
                [since, *filters],
            ),
            "/just-opened": get(
                f"Drops of the last {s.just_opened_minutes} minutes still open", [limit, *filters]
            ),
            "/buckets": get("Each bucket: baseline size, last poll, lag, status", []),
            "/venues/{venue_id}": get(
                "A venue's drop history and statistics",
                [
                    {
                        "name": "venue_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    _p("provider", "Provider of the venue id"),
                    _p("history", "Recent events returned", {"type": "integer", "maximum": 1000}),
                ],
                {"404": {"description": "No such venue"}},
            ),
            "/stats/by-hour": get(
                "Drops per clock hour over the last N hours",
                [_p("hours", "1-336", {"type": "integer"})],
            ),
            "/healthz": get("Process is alive", []),
            "/readyz": get(
                "Kafka and ClickHouse reachable", [], {"503": {"description": "Not ready"}}
            ),
            "/metrics": get("Prometheus metrics", []),
        },
    }
