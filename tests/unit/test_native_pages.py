"""The native reading of Resy search pages (``native/``, Rust) against the Python typed reading
(``resy.decode_page`` + ``take_hits`` + ``Collector.table``), the reference: on every page it
takes it gives the same record columns, byte for byte; what it does not take (any shape or
text it does not read plainly, any JSON that is not valid) it gives back as ``None``, so the
Python readings decide; and a fetch reads the same with and without it."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from producers.providers import resy
from producers.providers.base import BucketQuery, Collector, SlotIds, SlotTable
from producers.providers.native import READER, lib
from tests.unit.test_resy_decode import PROP, QUERIES, client_for, pages


def test_the_native_reader_is_built() -> None:
    """``scripts/setup.sh`` builds it; without it the producer reads every page in Python."""
    assert lib is not None, "drops_native is not installed: run scripts/setup.sh"
    assert READER == "native"


def native_table(body: bytes, query: BucketQuery) -> tuple[Any, SlotTable] | None:
    assert lib is not None
    page = lib.read_search_page(body, query.date, *query.window)
    if page is None:
        return None
    gathered = lib.Collector()
    ids = page.venue_ids()
    gathered.take(page)
    return (page.hits, page.total, ids), SlotTable("resy", *gathered.table("resy"))


def typed_table(body: bytes, query: BucketQuery) -> tuple[Any, SlotTable] | None:
    page = resy.decode_page(body)
    if page is None:
        return None
    acc, seen = Collector("resy", SlotIds("resy")), set[str]()
    resy.take_hits(page.search.hits, query, acc, seen)
    hits = page.search.hits
    ids = [h.id.resy if isinstance(h.id.resy, str) else str(h.id.resy) for h in hits]
    return (len(hits), resy._total(page), ids), acc.table()


@PROP
@given(pages())
def test_plain_pages_read_as_the_typed_reading_reads_them(doc: dict[str, Any]) -> None:
    body = orjson.dumps(doc)
    for query in QUERIES:
        got = native_table(body, query)
        assert got is not None  # a plain page is taken
        assert got == typed_table(body, query)


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=16)


@PROP
@given(TEXT, TEXT, TEXT, st.lists(TEXT, max_size=3), st.booleans())
def test_any_text_is_written_as_orjson_writes_it(
    name: str, token: str, hood: str, seats: list[str], indent: bool
) -> None:
    """Quotes, backslashes, control characters, characters past the BMP: the rows are orjson's
    bytes, the venue details the same text (and an indented page reads the same)."""
    slots = [
        {"config": {"type": seat, "token": token}, "date": {"start": "2026-03-04 15:30:00"},
         "size": {"min": 1, "max": 4}}
        for seat in seats or [""]
    ]  # fmt: skip
    hit = {"id": {"resy": name or "v"}, "name": name, "url_slug": token,
           "location": {"neighborhood": hood, "time_zone": "EST5EDT", "code": hood},
           "availability": {"slots": slots}}  # fmt: skip
    body = orjson.dumps({"search": {"hits": [hit]}}, option=orjson.OPT_INDENT_2 if indent else 0)
    got, want = native_table(body, QUERIES[0]), typed_table(body, QUERIES[0])
    assert got is not None and got == want
    assert len(got[1]) == 1


def _hit(**fields: Any) -> dict[str, Any]:
    hit: dict[str, Any] = {
        "id": {"resy": 7},
        "name": "A",
        "availability": {
            "slots": [
                {"config": {"type": "Bar", "token": "t"}, "date": {"start": "2026-03-04 15:30:00"},
                 "size": {"min": 1, "max": 2}, "template": {"x": [1, 2.5, -3e2, True, None]}}
            ]
        },
    }  # fmt: skip
    hit.update(fields)
    return hit


def _page(*hits: dict[str, Any]) -> bytes:
    return orjson.dumps({"search": {"hits": list(hits), "nbHits": len(hits)}})


PLAIN = _page(_hit())
LEFT_TO_PYTHON = {  # each is valid JSON the native reader does not read plainly: None
    "an escape in a key": PLAIN.replace(b'"type"', b'"t\\u0079pe"'),
    "a repeated field": PLAIN.replace(b'"name":"A"', b'"name":"A","name":"B"'),
    "a repeated search": orjson.dumps({"search": {"hits": []}})[:-1] + b',"search":{"hits":[]}}',
    "a float party size": PLAIN.replace(b'"min":1', b'"min":1.0'),
    "an exponent party size": PLAIN.replace(b'"min":1', b'"min":1e0'),
    "an id past 64 bits": PLAIN.replace(b'"resy":7', b'"resy":18446744073709551616'),
    "an id past i64": PLAIN.replace(b'"resy":7', b'"resy":9223372036854775808'),
    "a float id": PLAIN.replace(b'"resy":7', b'"resy":7.5'),
    "a boolean id": PLAIN.replace(b'"resy":7', b'"resy":true'),
    "a name that is a number": PLAIN.replace(b'"name":"A"', b'"name":5'),
    "a location that is text": _page(_hit(location="NoHo")),
    "a time zone that is a number": _page(_hit(location={"time_zone": 5})),
    "a non-ASCII start": PLAIN.replace(b"2026-03-04 15:30:00", "2026-03-04é15:30".encode()),
    "a start that is a number": PLAIN.replace(b'"2026-03-04 15:30:00"', b"5"),
    "a slot without a date": PLAIN.replace(b'"date":{"start":"2026-03-04 15:30:00"},', b""),
    "a size of null party": PLAIN.replace(b'"min":1', b'"min":null'),
    "no hits": orjson.dumps({"search": {"nbHits": 0}}),
    "no search": orjson.dumps({"meta": {"total": 0}}),
}
INVALID = {  # not JSON at all: None here, malformed for the Python readings
    "truncated": PLAIN[:-1],
    "trailing bytes": PLAIN + b"x",
    "two documents": PLAIN + PLAIN,
    "a lone surrogate": PLAIN.replace(b'"t"', b'"\\ud800"'),
    "a lone low surrogate in a skipped text": PLAIN.replace(b'"x"', b'"\\udc00"'),
    "a raw control byte": PLAIN.replace(b'"t"', b'"\x01"'),
    "a raw newline in a skipped text": PLAIN.replace(b'"x"', b'"a\nb"'),
    "a bad escape": PLAIN.replace(b'"x"', b'"\\q"'),
    "a short unicode escape": PLAIN.replace(b'"x"', b'"\\u12"'),
    "a bad literal in a skipped value": PLAIN.replace(b"true", b"tru"),
    "a leading zero in a skipped number": PLAIN.replace(b"2.5", b"02.5"),
    "a bare minus": PLAIN.replace(b"-300.0", b"-"),
    "an exponent without digits": PLAIN.replace(b"-300.0", b"-3e"),
    "a fraction without digits": PLAIN.replace(b"2.5", b"2."),
    "a missing comma": PLAIN.replace(b"[1,", b"[1 "),
    "a trailing comma": PLAIN.replace(b"null]", b"null,]"),
    "a missing colon": PLAIN.replace(b'"x":', b'"x"'),
    "a key that is not text": PLAIN.replace(b'"x":', b"5:"),
    "invalid UTF-8": PLAIN.replace(b'"A"', b'"\xff"'),
    "nesting past the limit": PLAIN.replace(b"[1,", b"[" * 200 + b"1" + b"]" * 200 + b",["),
    "empty": b"",
}


@pytest.mark.parametrize(
    "body",
    [PLAIN, PLAIN.replace(b"-300.0", b"-3E+2"), PLAIN.replace(b"2.5", b"0.25e-1"),
     PLAIN.replace(b'"t"', b'"\\u00e9\\ud83d\\ude00\\/\\n"'),
     PLAIN.replace(b"true", b'"\\u00e9\\\\ \\""'), PLAIN.replace(b",", b" ,\r\n\t"),
     PLAIN.replace(b'"x"', b'"\\u00e9"')],  # a key of a skipped object may be any text
)  # fmt: skip
def test_plain_json_in_any_spelling_is_taken(body: bytes) -> None:
    orjson.loads(body)
    got = native_table(body, QUERIES[0])
    assert got is not None and got == typed_table(body, QUERIES[0]) and len(got[1]) == 1


@pytest.mark.parametrize("case", sorted(LEFT_TO_PYTHON))
def test_what_it_does_not_read_plainly_is_left_to_python(case: str) -> None:
    body = LEFT_TO_PYTHON[case]
    orjson.loads(body)  # valid JSON
    assert native_table(body, QUERIES[0]) is None


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_json_is_never_taken(case: str) -> None:
    body = INVALID[case]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    assert native_table(body, QUERIES[0]) is None
    assert resy.decode_page(body) is None  # and the Python readings call it malformed


@PROP
@given(pages(), st.data())
def test_a_corrupted_page_is_taken_only_as_the_typed_reading_takes_it(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    """Bytes changed, dropped or added anywhere: when the native reader still takes the page,
    it is JSON the typed reading takes too, and both read the same columns."""
    body = bytearray(orjson.dumps(doc))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(body)))
        how = data.draw(st.sampled_from(["set", "drop", "add"]))
        byte = data.draw(st.sampled_from(b'"\\{}[],:0123456789.-eE tfnul\x00\x1f\xc3\xa9 ax'))
        if how == "set" and at < len(body):
            body[at] = byte
        elif how == "drop" and at < len(body):
            del body[at]
        else:
            body.insert(at, byte)
    got = native_table(bytes(body), QUERIES[0])
    if got is not None:
        assert got == typed_table(bytes(body), QUERIES[0])


@PROP
@given(pages())
def test_a_fetch_reads_the_same_with_and_without_the_native_reader(doc: dict[str, Any]) -> None:
    body = orjson.dumps(doc)
    query = QUERIES[1]
    with_native = asyncio.run(client_for(body).fetch(query))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(resy, "native", None)
        without = asyncio.run(client_for(body).fetch(query))
    assert with_native == without
