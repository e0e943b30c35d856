"""The watches API on the real broker: CRUD, owners per API key, 400s naming the field, and
the compacted watches topic as the record (a tombstone on delete)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from drops import kafka
from drops.settings import Settings
from schemas.watches import decode_watch
from tests.integration.test_api_feed import Server, wait_for

pytestmark = pytest.mark.kafka

HOOK = {"type": "webhook", "url": "http://127.0.0.1:9/hook"}
SPEC: dict[str, Any] = {
    "name": "Lilia Fridays",
    "criteria": {"venue_ids": ["1505"], "weekdays": ["fri"], "time_from": "18:00"},
    "channels": [HOOK, {"type": "apprise", "url": "json://127.0.0.1:9/x"}],
    "closes": True,
}


def topic_records(s: Settings) -> list[tuple[str, bytes | None]]:
    c = kafka.consumer(s, {"group.id": "t", "enable.partition.eof": True})
    c.assign([TopicPartition(s.topics.watches, 0, OFFSET_BEGINNING)])
    out: list[tuple[str, bytes | None]] = []
    while True:
        m = c.poll(10)
        assert m is not None
        if m.error():
            break
        out.append((m.key().decode(), m.value()))
    c.close()
    return out


@pytest.fixture
def api(kafka_settings: Settings) -> Iterator[Server]:
    with Server(kafka_settings, with_sink=True) as srv:
        yield srv


def test_create_read_patch_delete(api: Server, kafka_settings: Settings) -> None:
    r = httpx.post(api.url + "/watches", json=SPEC)
    assert r.status_code == 201, r.text
    w = r.json()
    assert r.headers["location"] == f"/watches/{w['watch_id']}"
    assert w["owner"] == "local" and len(w["secret"]) == 64 and w["closes"] is True
    assert w["criteria"]["weekdays"] == ["fri"] and w["criteria"]["party_size"] is None
    # read your write at once
    assert httpx.get(api.url + "/watches").json()["watches"] == [w]
    assert httpx.get(api.url + f"/watches/{w['watch_id']}").json() == w

    r = httpx.patch(api.url + f"/watches/{w['watch_id']}", json={"criteria": {"markets": ["nyc"]}})
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["criteria"]["markets"] == ["nyc"] and p["criteria"]["venue_ids"] == []
    assert p["channels"] == w["channels"] and p["secret"] == w["secret"]
    assert p["created_at_ms"] == w["created_at_ms"] <= p["updated_at_ms"]
    assert httpx.get(api.url + f"/watches/{w['watch_id']}").json() == p

    assert httpx.delete(api.url + f"/watches/{w['watch_id']}").status_code == 204
    assert httpx.get(api.url + f"/watches/{w['watch_id']}").status_code == 404
    assert httpx.delete(api.url + f"/watches/{w['watch_id']}").status_code == 404
    assert httpx.get(api.url + "/watches").json() == {"watches": []}

    records = topic_records(kafka_settings)
    assert [k for k, _ in records] == [w["watch_id"]] * 3
    assert decode_watch(records[0][1] or b"").model_dump(mode="json") == w
    assert records[2][1] is None  # the tombstone
    # the ClickHouse copy, for analysts: the last record of the watch, a deletion
    ch = api.app.state.drops.ch
    sql = "SELECT watch_id, deleted, owner, closes FROM watches FINAL"
    row = wait_for(lambda: (lambda rows: rows if rows and rows[0][1] == 1 else None)(ch.query(sql)))
    assert row == [(w["watch_id"], 1, "", 0)]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**SPEC, "criteria": {"time_from": "7pm"}}, "criteria.time_from"),
        ({**SPEC, "channels": [{"type": "apprise", "url": "nonsense://x"}]}, "channels.0.url"),
        ({**SPEC, "channels": []}, "channels"),
        ({**SPEC, "owner": "someone else"}, "owner"),
        ({**SPEC, "criteria": {"party_size": "two"}}, "criteria.party_size"),
        ([1, 2], "body"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(api: Server, body: Any, param: str) -> None:
    r = httpx.post(api.url + "/watches", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["param"] == param
    assert httpx.post(api.url + "/watches", content=b"{nope").json()["param"] == "body"


def test_each_api_key_is_an_owner(kafka_settings: Settings) -> None:
    s = kafka_settings.model_copy(update={"api_keys": "ka,kb"})
    with Server(s, with_sink=True) as api:
        a = httpx.post(api.url + "/watches", json=SPEC, headers={"X-API-Key": "ka"}).json()
        b = httpx.post(api.url + "/watches", json=SPEC, headers={"X-API-Key": "kb"}).json()
        assert a["owner"] != b["owner"] and "ka" not in a["owner"]
        mine = httpx.get(api.url + "/watches", headers={"X-API-Key": "ka"}).json()["watches"]
        assert [w["watch_id"] for w in mine] == [a["watch_id"]]
        other = api.url + f"/watches/{b['watch_id']}"
        assert httpx.get(other, headers={"X-API-Key": "ka"}).status_code == 404
        assert httpx.delete(other, headers={"X-API-Key": "ka"}).status_code == 404
        assert httpx.get(other, headers={"X-API-Key": "kb"}).status_code == 200
        assert httpx.get(api.url + "/watches").status_code == 401
    # a restarted API rebuilds every watch from the topic
    with Server(s, with_sink=True) as api:
        mine = httpx.get(api.url + "/watches", headers={"X-API-Key": "kb"}).json()["watches"]
        assert [w["watch_id"] for w in mine] == [b["watch_id"]]
