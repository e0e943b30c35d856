"""The OpenAPI 3.1 document of the read-only API (hand-written; fuzzed by schemathesis).

Every parameter carries the constraints the parsers in :mod:`api.params` enforce, and every
response its JSON Schema, so a request the document allows is answered 200 (or a documented
status) and a response always matches its schema.
"""

from __future__ import annotations

from typing import Any

from api.params import KNOWN_PROVIDERS
from api.watches import openapi_part
from drops.markets import configured_markets
from drops.stages import ApiSettings
from schemas import DropEvent
from schemas.shapes import properties

ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
CURSOR_PATTERN = r"^[A-Za-z0-9_\-]{1,20000}$"

STR = {"type": "string"}
INT = {"type": "integer"}
INT_OR_NULL = {"type": ["integer", "null"]}
NUM_OR_NULL = {"type": ["number", "null"]}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        "additionalProperties": False,
    }


ITEM = _obj(
    {
        # the drop record's fields, from its dataclass (schemas.shapes), then the log position
        **properties(DropEvent),
        "date": {"type": "string", "format": "date"},
        "kafka_partition": INT,
        "kafka_offset": INT,
    }
)
# optional: items stored before the fields existed lack them
for _key in ("opened_after_ms", "read_via", "venue_slug", "venue_city", "booking_url"):
    ITEM["required"].remove(_key)
ITEM["properties"]["booking_url"]["description"] = (
    "The provider's booking page for this venue, date, time and party size (https; '' when "
    "the provider's answer did not give what it needs)"
)

ERROR = _obj(
    {
        "error": {"type": "string", "description": "bad_request, not_found, unauthorized, ..."},
        "param": {"type": "string", "description": "The parameter at fault ('' if none)"},
        "message": STR,
    }
)

BUCKET = _obj(
    {
        "bucket_id": STR,
        "provider": STR,
        "date": {"type": "string", "format": "date"},
        "time_slot": STR,
        "baseline_slots": INT_OR_NULL,
        "baseline_at_ms": INT_OR_NULL,
        "last_poll_at_ms": INT_OR_NULL,
        "last_poll_slots": INT_OR_NULL,
        "last_poll_ms": INT_OR_NULL,
        "lag_seconds": NUM_OR_NULL,
        "polls": INT,
        "status": {
            "type": "string",
            "enum": ["ok", "partial", "stale", "baseline_only", "unknown"],
        },
    }
)

VENUE = _obj(
    {
        "venue": _obj(
            {
                "market": STR,
                "provider": STR,
                "venue_id": STR,
                "venue_name": STR,
                "neighborhood": STR,
                "time_zone": STR,
                "last_seen": INT,
            }
        ),
        "providers": {"type": "array", "items": STR},
        "stats": _obj(
            {
                "drops": INT,
                "closes": INT,
                "days_with_drop": INT,
                "days_watched": INT,
                "drop_day_ratio": NUM_OR_NULL,
                "median_open_seconds": NUM_OR_NULL,
                "first_drop_at_ms": INT_OR_NULL,
                "last_drop_at_ms": INT_OR_NULL,
            }
        ),
        "drops_per_day": {
            "type": "array",
            "items": _obj({"day": {"type": "string", "format": "date"}, "drops": INT}),
        },
        "history": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
    }
)


def _q(name: str, desc: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": desc, "schema": schema}


def _list(name: str, desc: str, items: dict[str, Any]) -> dict[str, Any]:
    """A comma-separated list (``style: form, explode: false``), 1 to 50 values."""
    p = _q(name, desc, {"type": "array", "items": items, "minItems": 1, "maxItems": 50})
    p["style"] = "form"
    p["explode"] = False
    return p


def _json(schema: dict[str, Any], desc: str = "OK") -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def openapi(s: ApiSettings) -> dict[str, Any]:
    markets = [m.name for m in configured_markets(s)]
    market_item: dict[str, Any] = {"type": "string", "enum": markets}
    one_market = _q("market", f"Market (default: {markets[0]}, the first configured)", market_item)
    providers = sorted(KNOWN_PROVIDERS | frozenset(s.market.providers))
    slots = sorted(set(s.producer.time_slots) | {t.replace(":", "") for t in s.producer.time_slots})
    date = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
    filters = [
        _list("market", "Market(s)", market_item),
        _list("provider", "Provider(s)", {"type": "string", "enum": providers}),
        _list("venue", "Venue id(s)", {"type": "string", "pattern": ID_PATTERN}),
        _list(
            "neighborhood",
            "Neighborhood(s)",
            {"type": "string", "pattern": r"^[^,]*\S[^,]*$", "maxLength": 100},
        ),
        _q("date_from", "First reservation date (not after date_to)", date),
        _q("date_to", "Last reservation date (not before date_from)", date),
        _list("time_slot", "Bucket time(s), HH:MM or HHMM", {"type": "string", "enum": slots}),
        _q(
            "party_size",
            "Party size the slot must seat",
            {"type": "integer", "minimum": 1, "maximum": 50},
        ),
        _list(
            "event", "open or close (default both)", {"type": "string", "enum": ["open", "close"]}
        ),
    ]
    since = _q(
        "since",
        "Opaque cursor from a previous `next` or SSE event id (a malformed one is a 400)",
        {"type": "string", "pattern": CURSOR_PATTERN},
    )

    def limit(default: int) -> dict[str, Any]:
        return _q(
            "limit",
            "Page size",
            {"type": "integer", "minimum": 1, "maximum": s.api.feed_max_limit, "default": default},
        )

    err = _json(_ref("Error"), "Bad input: names the parameter")
    auth: dict[str, Any] = {}
    if s.api.keys:
        auth = {"401": _json(_ref("Error"), "API key missing or wrong")}

    def get(
        summary: str,
        params: list[dict[str, Any]],
        ok: dict[str, Any],
        extra: dict[str, Any] | None = None,
        open_path: bool = False,
    ) -> dict[str, Any]:
        responses: dict[str, Any] = {"200": ok}
        if params:
            responses["400"] = err
        if not open_path:
            responses.update(auth)
        responses.update(extra or {})
        op: dict[str, Any] = {"summary": summary, "parameters": params, "responses": responses}
        if open_path and s.api.keys:
            op["security"] = []
        return {"get": op}

    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Discovery Drops API", "version": "1"},
        "paths": {
            "/feed": get(
                "Drop and close events after a cursor, in log order",
                [since, limit(100), *filters],
                _json(
                    _obj(
                        {
                            "items": {"type": "array", "items": _ref("Item")},
                            "next": {"type": "string", "pattern": CURSOR_PATTERN},
                            "more": {
                                "type": "boolean",
                                "description": "the read stopped before the newest stored "
                                "event (a page may end early, even empty): ask again from next",
                            },
                        }
                    )
                ),
            ),
            "/feed/stream": get(
                "SSE live feed (event `drop`, id = cursor); resumes from Last-Event-ID or since",
                [
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "Cursor to resume from (wins over since)",
                        "schema": {"type": "string", "pattern": CURSOR_PATTERN},
                    },
                    since,
                    *filters,
                ],
                {
                    "description": "An endless text/event-stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                {"503": _json(_ref("Error"), "Live tail not ready: retry")},
            ),
            "/just-opened": get(
                f"Drops of the last {s.api.just_opened_minutes} minutes still open, newest first",
                [limit(200), *filters],
                _json(
                    _obj(
                        {
                            "items": {"type": "array", "items": _ref("Item")},
                            "minutes": INT,
                            "as_of_ms": INT,
                        }
                    )
                ),
            ),
            "/markets": get(
                "The configured markets, each with its time zone and its local date today",
                [],
                _json(
                    _obj(
                        {
                            "markets": {
                                "type": "array",
                                "items": _obj(
                                    {
                                        "name": market_item,
                                        "time_zone": STR,
                                        "today": {"type": "string", "format": "date"},
                                    }
                                ),
                            }
                        }
                    )
                ),
                {"400": err},
            ),
            "/buckets": get(
                "A market's buckets: baseline size, last poll, lag, status",
                [one_market],
                _json(
                    _obj(
                        {
                            "buckets": {"type": "array", "items": _ref("Bucket")},
                            "market": market_item,
                            "time_zone": STR,
                            "today": {"type": "string", "format": "date"},
                        }
                    )
                ),
                {"400": err},
            ),
            "/venues/{venue_id}": get(
                "A venue's drop history and statistics",
                [
                    {
                        "name": "venue_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": ID_PATTERN},
                    },
                    _q(
                        "provider",
                        "Provider of the venue id",
                        {"type": "string", "enum": providers},
                    ),
                    _q(
                        "history",
                        "Recent events returned",
                        {"type": "integer", "minimum": 0, "maximum": 1000, "default": 50},
                    ),
                ],
                _json(_ref("Venue")),
                {"404": _json(_ref("Error"), "No such venue")},
            ),
            "/stats/by-hour": get(
                "A market's open events per clock hour of its time zone over the last N hours",
                [
                    _q(
                        "hours",
                        "Hours back",
                        {"type": "integer", "minimum": 1, "maximum": 336, "default": 24},
                    ),
                    one_market,
                ],
                _json(
                    _obj(
                        {
                            "hours": {
                                "type": "array",
                                "items": _obj({"hour_ms": INT, "drops": INT}),
                            },
                            "market": market_item,
                            "time_zone": STR,
                            "as_of_ms": INT,
                        }
                    )
                ),
            ),
            "/healthz": get(
                "Process is alive", [], _json(_obj({"status": {"const": "ok"}})), open_path=True
            ),
            "/readyz": get(
                "Kafka, ClickHouse (and the in-process sink) reachable",
                [],
                _json(_ref("Ready")),
                {"503": _json(_ref("Ready"), "Not ready")},
                open_path=True,
            ),
            "/metrics": get(
                "Prometheus metrics (text exposition format)",
                [],
                {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}},
            ),
            "/openapi.json": get("This document", [], _json({"type": "object"}), open_path=True),
        },
        "components": {
            "schemas": {
                "Item": ITEM,
                "Error": ERROR,
                "Bucket": BUCKET,
                "Venue": VENUE,
                "Ready": _obj(
                    {
                        "ready": {"type": "boolean"},
                        "checks": {
                            "type": "object",
                            "additionalProperties": {"type": "boolean"},
                        },
                        "retention_gaps": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "times records were deleted by retention before "
                            "the in-process sink read them (with --with-sink)",
                        },
                    },
                    ["ready", "checks"],
                ),
            }
        },
    }
    watch_paths, watch_schemas = openapi_part(err, auth)
    doc["paths"].update(watch_paths)
    doc["components"]["schemas"].update(watch_schemas)
    if s.api.keys:
        doc["components"]["securitySchemes"] = {
            "header": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "query": {"type": "apiKey", "in": "query", "name": "api_key"},
        }
        doc["security"] = [{"header": []}, {"query": []}]
    return doc
