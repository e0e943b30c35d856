"""Watches, alerts and deliveries: the records of the alerting stages, declared once.

- :class:`WatchSpec`: what a user asks for (criteria, channels, closes), the body of
  ``POST /watches``; unknown fields are refused so a typo is a 400 naming it.
- :class:`Watch`: a stored watch (topic ``drops.watches``, compacted, key = watch id, an empty
  value deletes it): the spec plus its id, owner, webhook secret and times.
- :class:`Alert`: one (watch, drop) match (topic ``drops.alerts``, key = watch id).
- :class:`Delivery`: the outcome of one alert on one channel (topic ``drops.deliveries``, the
  delivery log; ClickHouse ``alert_deliveries``).

The JSON Schema files ``json/watch.v1.json``, ``json/alert.v1.json`` and
``json/delivery.v1.json`` are generated from these models (``python -m schemas.watches``);
a unit test checks that they are current. Records decode with :func:`decode_watch`,
:func:`decode_alert` and :func:`decode_delivery`, which raise :class:`SchemaError` naming the
field; extra fields in a stored record are tolerated (a newer writer may add some).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.records import SchemaError

WATCH_VERSION: Literal[1] = 1
ALERT_VERSION: Literal[1] = 1
DELIVERY_VERSION: Literal[1] = 1

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Criteria(_Input):
    """Which drops a watch wants. An empty list means any; every given criterion must hold."""

    markets: list[str] = Field(default_factory=list, max_length=50)
    providers: list[str] = Field(default_factory=list, max_length=10)
    venue_ids: list[str] = Field(
        default_factory=list, max_length=500, description="only these venues"
    )
    exclude_venue_ids: list[str] = Field(
        default_factory=list, max_length=500, description="never these venues"
    )
    neighborhoods: list[str] = Field(
        default_factory=list, max_length=100, description="case-insensitive"
    )
    date_from: dt.date | None = Field(None, description="first date, venue-local")
    date_to: dt.date | None = Field(None, description="last date, venue-local, inclusive")
    weekdays: list[Weekday] = Field(default_factory=list, max_length=7)
    time_slots: list[str] = Field(
        default_factory=list,
        max_length=10,
        description="bucket times (HH:MM) the slot belongs to, as in the feed's time_slot",
    )
    time_from: str | None = Field(None, pattern=HHMM, description="earliest start, HH:MM local")
    time_to: str | None = Field(
        None, pattern=HHMM, description="latest start, HH:MM local, inclusive"
    )
    party_size: int | None = Field(None, ge=1, le=50, description="the slot must seat it")
    seating_types: list[str] = Field(
        default_factory=list, max_length=20, description="any of these (case-insensitive)"
    )

    @model_validator(mode="after")
    def _ranges(self) -> Criteria:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_to is before date_from")
        if self.time_from and self.time_to and self.time_from > self.time_to:
            raise ValueError("time_to is before time_from")
        return self


class Channel(_Input):
    """Where alerts go: a signed webhook of ours, or any Apprise URL (ntfy://, discord://,
    tgram://, mailto://, json://, ...)."""

    type: Literal["webhook", "apprise"]
    url: str = Field(min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _url(self) -> Channel:
        if self.type == "webhook" and not self.url.startswith(("http://", "https://")):
            raise ValueError("a webhook url starts with http:// or https://")
        if "://" not in self.url:
            raise ValueError("not a URL")
        return self


class WatchSpec(_Input):
    """The part of a watch its owner writes (``POST /watches``; ``PATCH`` replaces fields)."""

    name: str = Field("", max_length=200)
    criteria: Criteria = Field(default_factory=Criteria)
    channels: list[Channel] = Field(min_length=1, max_length=5)
    closes: bool = Field(False, description="also tell when a reported slot is gone again")


class Watch(WatchSpec):
    """A stored watch (the value on the watches topic)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = WATCH_VERSION
    watch_id: str = Field(min_length=1, max_length=100)
    owner: str = Field(min_length=1, max_length=200)
    secret: str = Field(min_length=16, description="HMAC-SHA256 key of its webhooks")
    created_at_ms: int
    updated_at_ms: int


class Alert(BaseModel):
    """One match of a watch and a drop (or a close), for the delivery worker."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = ALERT_VERSION
    alert_id: str = Field(description="hash of watch id and the drop's dedupe key: stable")
    kind: Literal["open", "close"]
    watch_id: str
    owner: str
    watch_name: str = ""
    channels: list[Channel]
    secret: str
    drop: dict[str, Any] = Field(description="the drop record (schemas/json/drop.v1.json)")
    title: str
    body: str
    local_time: str = Field(description="the slot's start in the venue's zone, for people")
    booking_url: str = Field(
        "",
        description="the provider's booking page for the venue, date, time and party size (the "
        "watch's party size when it names one); '' when the provider's answer did not give "
        "what it needs",
    )
    matched_at_ms: int


class Delivery(BaseModel):
    """One line of the delivery log: an alert on one channel, delivered or dead."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = DELIVERY_VERSION
    alert_id: str
    watch_id: str
    channel: int = Field(description="index in the alert's channels")
    channel_type: Literal["webhook", "apprise"]
    target: str = Field(description="the channel's scheme and host (never its secrets)")
    status: Literal["delivered", "dead"]
    attempts: int
    latency_ms: int = Field(description="from the alert's match to the last attempt's end")
    error: str = ""
    at_ms: int


# ------------------------------------------------------------------------------ decoding


def field_of(exc: ValidationError) -> str:
    """The dotted name of the first field an error is about (``criteria.time_from``)."""
    err = exc.errors()[0]
    return ".".join(str(p) for p in err["loc"])


def _decode(model: type[BaseModel], raw: bytes | str, what: str) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SchemaError(f"{what}: field {field_of(exc)!r}: {err['msg']}") from None


def decode_watch(raw: bytes | str) -> Watch:
    w: Watch = _decode(Watch, raw, "watch")
    return w


def decode_alert(raw: bytes | str) -> Alert:
    a: Alert = _decode(Alert, raw, "alert")
    return a


def decode_delivery(raw: bytes | str) -> Delivery:
    d: Delivery = _decode(Delivery, raw, "delivery")
    return d


def encode_record(record: BaseModel) -> bytes:
    return record.model_dump_json().encode()


# ------------------------------------------------------------------------------ JSON Schema

SCHEMA_FILES: dict[str, tuple[type[BaseModel], str]] = {
    "watch.v1.json": (Watch, "Watch record (topic drops.watches, compacted, key = watch_id)"),
    "alert.v1.json": (Alert, "Alert record (topic drops.alerts, key = watch_id)"),
    "delivery.v1.json": (Delivery, "Delivery log record (topic drops.deliveries)"),
}


def json_schema(name: str) -> dict[str, Any]:
    model, title = SCHEMA_FILES[name]
    doc = model.model_json_schema()
    stem = name.removesuffix(".json").replace(".", ":")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:discovery-drops:{stem}",
        **doc,
        "title": title,
    }


def write_schema_files(folder: Path) -> None:
    for name in SCHEMA_FILES:
        text = json.dumps(json_schema(name), indent=2, sort_keys=True) + "\n"
        (folder / name).write_text(text)


if __name__ == "__main__":
    write_schema_files(Path(__file__).resolve().parent / "json")
