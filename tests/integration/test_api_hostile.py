"""Hostile requests against the real API (broker and chDB)."""

from __future__ import annotations

import httpx
import pytest

from api import cursor as C
from drops.settings import Settings
from tests.integration.test_api_feed import Server

pytestmark = pytest.mark.kafka


def test_an_oversized_cursor_is_refused(kafka_settings: Settings) -> None:
    """A 4,096-partition cursor against a one-partition topic: 400 on /feed and on the stream
    (before: 200, and each event for such a stream copied the 4,096-entry cursor)."""
    huge = C.encode(dict.fromkeys(range(4096), 0))  # 16,000 characters
    with Server(kafka_settings, with_sink=True) as srv:
        feed = httpx.get(srv.url + "/feed", params={"since": huge}, timeout=10)
        assert feed.status_code == 400 and feed.json()["param"] == "since"
        stream = httpx.get(srv.url + "/feed/stream", headers={"Last-Event-ID": huge}, timeout=10)
        assert stream.status_code == 400 and stream.json()["param"] == "Last-Event-ID"
        ok = httpx.get(srv.url + "/feed", params={"since": C.encode({0: 3})}, timeout=10)
        assert ok.status_code == 200
