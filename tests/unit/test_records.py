"""Each record's fields are declared once, in its dataclass; every other form of the record is
generated from it or checked here against it: the JSON Schema files, the ClickHouse columns,
the feed item and the OpenAPI schema."""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, dataclass, field
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest

from api.openapi import ITEM
from schemas import BucketStats, DropEvent, SchemaError, Snapshot, encode, records
from schemas.records import WIRE_DEFAULT, _decode_fields, field_rules
from schemas.shapes import fields, json_type, properties
from sinks.testdata import make_drop, make_stats
from store import tables
from store.rows import DROP_COLUMNS, ITEM_KEYS, STATS_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
AS_DATETIME = {
    "opened_at_ms": "opened_at",
    "closed_at_ms": "closed_at",
    "opened_after_ms": "opened_after",
    "polled_at_ms": "polled_at",
}


def schema_file(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((ROOT / "schemas" / "json" / name).read_text())
    return doc


def same_shape(declared: dict[str, Any], derived: dict[str, Any]) -> bool:
    """A schema file's property matches the dataclass field (the file may add a pattern, a
    format, a description or a const)."""
    if "$ref" in declared:
        return derived["type"] == "object"
    if "const" in declared:
        return derived["type"] == "integer" and isinstance(declared["const"], int)
    if "enum" in declared:
        return declared["enum"] == derived.get("enum")
    if declared.get("type") != derived["type"]:
        return False
    if "items" in declared:
        return same_shape(declared["items"], derived["items"])
    return True


@pytest.mark.parametrize(
    ("file", "record", "exclude"),
    [
        ("drop.v2.json", DropEvent, ("extra",)),
        (
            "drop.v1.json",
            DropEvent,
            ("extra", "opened_after_ms", "read_via", "venue_slug", "venue_city", "booking_url"),
        ),
        ("snapshot.v2.header.json", Snapshot, ("slots",)),
        ("snapshot.v1.json", Snapshot, ()),
    ],
)
def test_json_schema_files_declare_the_dataclass_fields(
    file: str, record: type, exclude: tuple[str, ...]
) -> None:
    declared = schema_file(file)["properties"]
    derived = properties(record, exclude)
    assert set(declared) == set(derived), f"{file}: add or remove these fields"
    wrong = {
        k: (declared[k], derived[k]) for k in derived if not same_shape(declared[k], derived[k])
    }
    assert wrong == {}


def test_the_openapi_item_is_the_drop_record_and_its_log_position() -> None:
    props = ITEM["properties"]
    assert list(props) == list(ITEM_KEYS)
    derived = properties(DropEvent)
    assert {k: props[k]["type"] for k in derived} == {k: v["type"] for k, v in derived.items()}
    # every key but those that items stored from older drop records lack
    optional = ("opened_after_ms", "read_via", "venue_slug", "venue_city", "booking_url")
    assert ITEM["required"] == [k for k in ITEM_KEYS if k not in optional]


def _columns(table: str) -> dict[str, str]:
    """The columns the migrations give ``table``: name -> ClickHouse type."""
    out: dict[str, str] = {}
    for m in tables.MIGRATIONS:
        for stmt in m.statements:
            create = re.search(rf"CREATE TABLE IF NOT EXISTS {table} \((.*)\) ENGINE", stmt, re.S)
            if create:
                for line in create.group(1).splitlines():
                    line = line.strip().rstrip(",")
                    if line and not line.startswith("INDEX"):
                        name, typ = line.split(" ", 1)
                        out[name] = typ.split(" DEFAULT")[0]
            add = re.search(
                rf"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS (\w+) (.+?)(?: DEFAULT| AFTER|$)",
                stmt,
                re.S,
            )
            if add:
                out[add.group(1)] = add.group(2)
    return out


def _fits(annotation: Any, name: str, ch_type: str) -> bool:
    shape = json_type(annotation)
    typ = shape["type"]
    if isinstance(typ, list):  # X | None
        inner = ch_type.removeprefix("Nullable(").removesuffix(")")
        return ch_type.startswith("Nullable(") and _fits(annotation.__args__[0], name, inner)
    if name in AS_DATETIME:
        return ch_type.startswith("DateTime64")
    if name == "date":
        return ch_type == "Date"
    base = ch_type.removeprefix("LowCardinality(").removesuffix(")")
    return {
        "string": base == "String",
        "integer": bool(re.fullmatch(r"U?Int(8|16|32|64)", base)),
        "number": base.startswith("Float"),
        "boolean": base == "Bool",
        "array": ch_type.startswith("Array("),
    }[typ]


@pytest.mark.parametrize(
    ("table", "record", "columns", "ours"),
    [
        ("drop_events", DropEvent, DROP_COLUMNS, {"extra", "item", "ingested_at"}),
        ("discovery_buckets", BucketStats, STATS_COLUMNS, {"ingested_at"}),
    ],
)
def test_clickhouse_columns_are_the_record_fields(
    table: str, record: type, columns: tuple[str, ...], ours: set[str]
) -> None:
    stored = _columns(table)
    assert set(stored) == set(columns) | {"ingested_at"}
    kept = {n: a for n, a in fields(record).items() if n != "v" or n in stored}
    for name, annotation in kept.items():
        col = AS_DATETIME.get(name, name)
        assert col in stored, f"{table} has no column for {record.__name__}.{name}"
        assert _fits(annotation, name, stored[col]), (name, stored[col])
    extra = (
        set(stored) - {AS_DATETIME.get(n, n) for n in kept} - {"kafka_partition", "kafka_offset"}
    )
    assert extra == ours


def test_the_snapshot_schema_declares_the_slot_fields() -> None:
    declared = schema_file("snapshot.v1.json")["$defs"]["slot"]["properties"]
    derived = properties(records.Slot)
    assert set(declared) == set(derived), "snapshot.v1.json $defs.slot: add or remove these"
    assert {k for k in derived if not same_shape(declared[k], derived[k])} == set()


def _valid_doc(record: type) -> dict[str, Any]:
    value = make_drop(1) if record is DropEvent else make_stats()
    doc: dict[str, Any] = orjson.loads(encode(value))
    return doc


@pytest.mark.parametrize(
    ("record", "decode", "fixed"),
    [
        (DropEvent, "drop_from_dict", ("v", "event", "extra")),
        (BucketStats, "stats_from_dict", ("v", "kind")),
    ],
)
def test_the_decoders_read_every_declared_field_by_its_declaration(
    record: type, decode: str, fixed: tuple[str, ...]
) -> None:
    """Each field is read as its declaration says, with no list of fields in the decoder: a
    missing field is an error naming it, or its declared (wire) default; a value of the
    wrong JSON type is an error naming it."""
    read = getattr(records, decode)
    for f in dc_fields(record):
        if f.name in fixed:
            continue
        doc = _valid_doc(record)
        doc.pop(f.name, None)
        wire = f.metadata.get(WIRE_DEFAULT, f.default)
        if wire is MISSING:
            with pytest.raises(SchemaError, match=f"missing field '{f.name}'"):
                read(doc)
        else:
            assert getattr(read(doc), f.name) == wire, f.name
        with pytest.raises(SchemaError, match=f"field '{f.name}'"):
            read({**_valid_doc(record), f.name: {"not": "a value"}})


def test_a_field_added_to_a_record_is_decoded_with_no_other_change() -> None:
    @dataclass(frozen=True)
    class Later:
        name: str
        tags: tuple[str, ...] = field(metadata={WIRE_DEFAULT: ()})
        via: Literal["search", "fallback"] = "search"
        score: float | None = None

    rules = {r.name: r for r in field_rules(Later)}
    assert list(rules) == ["name", "tags", "via", "score"]
    assert rules["name"].required and not rules["tags"].required and rules["tags"].as_tuple
    assert rules["via"].choices == ("search", "fallback")
    assert rules["score"].types == (int, float) and rules["score"].default is None
    assert _decode_fields({"name": "x", "tags": ["a"], "score": 2}, tuple(rules.values()), "l") == {
        "name": "x",
        "tags": ("a",),
        "via": "search",
        "score": 2,
    }
    with pytest.raises(SchemaError, match="field 'via' is 'x'"):
        _decode_fields({"name": "x", "via": "x"}, tuple(rules.values()), "l")
