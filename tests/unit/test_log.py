from __future__ import annotations

import logging

import orjson
import pytest

from drops.log import Heartbeat, JsonFormatter, get_log


def test_fields_become_json_keys_even_reserved_names(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    get_log("t").info("migration_applied", name="drop_events", version=3)
    record = caplog.records[-1]
    doc = orjson.loads(JsonFormatter().format(record))
    assert doc["event"] == "migration_applied"
    assert doc["name_"] == "drop_events" and doc["version"] == 3
    assert doc["logger"] == "drops.t"


def test_heartbeat_reports_counters_then_resets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    hb = Heartbeat(get_log("t"), every=0.0)
    hb.add(polled=28, failed=1)
    hb.add(polled=28)
    assert hb.tick(lag=0)
    doc = orjson.loads(JsonFormatter().format(caplog.records[-1]))
    assert (doc["event"], doc["polled"], doc["failed"], doc["lag"]) == ("heartbeat", 56, 1, 0)
    assert hb.counters == {}


def test_non_string_keys_and_odd_values_still_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    get_log("t").info("live_tail_started", start={0: 12}, where=object())
    doc = orjson.loads(JsonFormatter().format(caplog.records[-1]))
    assert doc["start"] == {"0": 12}
