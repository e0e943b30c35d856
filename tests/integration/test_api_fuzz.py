"""schemathesis against ``/openapi.json`` of a running API with data (real broker, chDB):
no 500, every status documented, every response matching its schema. Bounded: a few dozen
examples per operation (positive and negative)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from drops.settings import Settings
from shell import broker
from sinks.testdata import DropWriter, close_of, make_drop, make_stats
from tests.conftest import isolated_settings, now_under_test
from tests.integration.test_api_feed import Server, read_all, wait_for

pytestmark = pytest.mark.kafka

Operation = Any  # schemathesis.APIOperation (generic, four type parameters)
Case = Any  # schemathesis.Case

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_api(kafka_broker: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = isolated_settings(tmp_path_factory.mktemp("fuzz"), f"f{uuid.uuid4().hex[:8]}")
    broker.ensure_topics(s)
    w = DropWriter(s)
    drops = [make_drop(i, provider="resy" if i % 2 else "opentable") for i in range(30)]
    w.write(drops)
    w.write([close_of(d, d.opened_at_ms + 9000) for d in drops[:5]])
    # a day inside /buckets' window (today .. today + 13 in the market's zone) on any date:
    # tomorrow stays inside it if the market's midnight passes while the test runs (the
    # stats' default day is a fixed date, which left the window once that date was past)
    zone = ZoneInfo(s.markets[0].time_zone)
    day = (now_under_test().astimezone(zone).date() + timedelta(days=1)).isoformat()
    w.write_stats([make_stats(day, kind="baseline"), make_stats(day), make_stats(day, "15:00")])
    with Server(s, with_sink=True) as srv:
        wait_for(lambda: len(read_all(srv.url, None, 100)[0]) == 35)
        wait_for(lambda: httpx.get(srv.url + "/buckets").json()["buckets"])
        yield srv
    w.close()


def _operations(url: str) -> list[Operation]:
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    results: list[Any] = list(schema.get_all_operations())
    return [r.ok() for r in results]


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_every_response_is_documented_and_matches_its_schema(
    fuzz_api: Server, mode: schemathesis.GenerationMode
) -> None:
    ops = _operations(fuzz_api.url)
    assert {op.path for op in ops} >= {"/feed", "/feed/stream", "/venues/{venue_id}"}
    for op in ops:
        if mode is schemathesis.GenerationMode.NEGATIVE and not list(op.iter_parameters()):
            continue  # nothing to make invalid
        _fuzz(op, mode, _check_stream if op.path == "/feed/stream" else _check, fuzz_api.url)


def _fuzz(
    op: Operation,
    mode: schemathesis.GenerationMode,
    check: Callable[[Case, str], None],
    url: str,
) -> None:
    @given(case=op.as_strategy(generation_mode=mode))
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    def run(case: Case) -> None:
        check(case, url)

    run()


def _check(case: Case, url: str) -> None:
    case.call_and_validate(base_url=url, checks=CHECKS, timeout=20)


def _check_stream(case: Case, url: str) -> None:
    """The stream never ends by itself: its status and headers, and whole error bodies."""
    kw = case.as_transport_kwargs(base_url=url)
    with httpx.stream(
        kw["method"], kw["url"], params=kw.get("params"), headers=kw.get("headers"), timeout=20
    ) as r:
        assert r.status_code in (200, 400, 503), r.status_code
        if r.status_code == 200:
            assert r.headers["content-type"].startswith("text/event-stream")
            return
        r.read()
        doc = r.json()
        assert set(doc) == {"error", "param", "message"}
        assert all(isinstance(v, str) for v in doc.values())
