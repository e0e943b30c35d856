"""The live tail's fan-out by filter group (``api.hub``), against a plain reference model: the
hub as it was, every client matching and rendering every batch with its own filter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api import app as A
from api import cursor as C
from api.hub import (
    CHUNK_BYTES,
    PLAIN,
    Client,
    Hub,
    LiveBatch,
    LiveEvent,
    chunked,
    render,
    render_parts,
)
from api.items import item_bytes, item_from_event, sse_raw
from api.params import Filters
from drops.settings import Settings
from sinks.testdata import make_drop

BASE = item_from_event(make_drop(1), 0, 0)
MARKETS = ("nyc", "sf", "la")
PROVIDERS = ("resy", "opentable")
# a small pool, so that clients share filters (some written in another order: one group)
FILTERS = (
    Filters(),
    Filters(market=("nyc",)),
    Filters(market=("sf", "nyc")),
    Filters(market=("nyc", "sf")),
    Filters(provider=("resy",), event=("open",)),
    Filters(event=("close",)),
    Filters(market=("la",), party_size=4),
    Filters(market=("nowhere",)),
)


def _item(market: str, provider: str, event: str, party: int) -> dict[str, Any]:
    return {**BASE, "market": market, "provider": provider, "event": event,
            "party_min": party, "party_max": party + 2}  # fmt: skip


class Consumer:
    """Batches as the live tail makes them: positions only grow, consecutive batches meet."""

    def __init__(self, partitions: int = 3) -> None:
        self.pos: C.Cursor = dict.fromkeys(range(partitions), -1)

    def batch(self, events: list[tuple[int, dict[str, Any]]], marker: int | None) -> LiveBatch:
        before = dict(self.pos)
        out = []
        for p, item in events:
            self.pos[p] += 1
            o = self.pos[p]
            it = {**item, "kafka_partition": p, "kafka_offset": o}
            js = item_bytes(it)
            after = dict(self.pos)
            out.append(LiveEvent(p, o, it, js, after, sse_raw(js, after), 0.0))
        if marker is not None:  # a transaction marker: the position moves past it
            self.pos[marker] += 1
        return LiveBatch(tuple(out), before, dict(self.pos), b"".join(e.data for e in out), 0.0)


def _hub() -> Hub:
    return Hub(Settings(sse_queue=100_000))


def _drain(c: Client, pos: C.Cursor) -> tuple[bytes, C.Cursor]:
    """What ``api.app._events`` does when the client wakes (the grouped hub)."""
    parts, pos, _ = render_parts(c.drain(), pos, PLAIN)
    assert c.group is not None
    return b"".join(parts), C.merge(pos, c.group.position)


def test_two_hundred_clients_with_one_filter_match_each_event_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = [0]
    plain_matches = Filters.matches

    def counting(self: Filters, item: Any) -> bool:
        calls[0] += 1
        return plain_matches(self, item)

    monkeypatch.setattr(Filters, "matches", counting)
    hub = _hub()
    # one filter written three ways: one group
    spellings = [("nyc", "sf"), ("sf", "nyc"), ("sf", "nyc", "sf")]
    clients = [hub.subscribe(Filters(market=spellings[i % 3])) for i in range(200)]
    others = [hub.subscribe(Filters(market=("la",))) for _ in range(50)]
    assert len(hub.groups) == 2
    cons = Consumer()
    events = [(i % 3, _item(MARKETS[i % 2], "resy", "open", 2)) for i in range(40)]
    batch = cons.batch(events, None)
    hub._publish(batch)
    assert calls[0] == 2 * len(events)  # once per event per distinct filter, not per client
    assert hub.matched == 2 * len(events)
    shared = clients[0].queue[0]
    assert all(len(c.queue) == 1 and c.queue[0] is shared for c in clients)  # rendered once
    assert len(shared.events) == len(events)
    # no event for "la": those clients are neither woken nor given anything
    assert all(not c.wake.is_set() and not c.queue for c in others)
    assert all(c.wake.is_set() for c in clients)
    assert hub.fanout == 200  # the batch interval counts the clients woken, not connected


def test_a_group_goes_when_its_last_client_does() -> None:
    hub = _hub()
    a = hub.subscribe(Filters(event=("open",)))
    b = hub.subscribe(Filters(event=("open", "open")))
    assert a.group is b.group and len(hub.groups) == 1
    hub.unsubscribe(a)
    assert len(hub.groups) == 1
    hub.unsubscribe(b)
    hub.unsubscribe(b)  # twice (the stream's finally and the response's background task)
    assert not hub.groups and not hub.clients


def test_a_filtered_client_selection_keeps_ids_of_the_full_stream() -> None:
    """A client sent only some events gets, for each, the id just after it in the full stream
    (a reconnect with it skips the unmatched events before it, not the ones after)."""
    hub = _hub()
    c = hub.subscribe(Filters(event=("close",)))
    cons = Consumer(1)
    batch = cons.batch([(0, _item("nyc", "resy", e, 2)) for e in ("open", "close", "open")], 0)
    hub._publish(batch)
    data, pos = _drain(c, {0: -1})
    assert data == batch.events[1].data and pos == {0: 3}


event = st.tuples(
    st.integers(0, 2),
    st.sampled_from(MARKETS),
    st.sampled_from(PROVIDERS),
    st.sampled_from(("open", "close")),
    st.integers(1, 6),
)
step = st.one_of(
    # a batch from the consumer (a few events, maybe a transaction marker after them)
    st.tuples(st.just("batch"), st.lists(event, max_size=6), st.none() | st.integers(0, 2)),
    st.tuples(st.just("join"), st.sampled_from(FILTERS), st.none()),
    st.tuples(st.just("wake"), st.integers(0, 30), st.none()),
    st.tuples(st.just("leave"), st.integers(0, 30), st.none()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=60))
def test_grouped_fan_out_sends_what_per_client_matching_sends(steps: list[Any]) -> None:
    """N clients with mixed filters, joining, waking and leaving at any point: each gets
    byte for byte what the reference model (own filter on every batch) sends it, and ends at
    the same position."""
    hub = _hub()
    cons = Consumer()
    # per client: grouped state (client, pos, bytes) and the reference's (batches, pos, bytes)
    live: list[dict[str, Any]] = []
    for kind, a, b in steps:
        if kind == "batch":
            batch = cons.batch([(p, _item(m, pr, e, n)) for p, m, pr, e, n in a], b)
            hub._publish(batch)
            for r in live:
                if batch.events:  # the hub as it was offered every batch with events
                    r["ref_queue"].append(batch)
                if not r["c"].queue:
                    assert not r["c"].wake.is_set()  # nothing for its filter: not woken
        elif kind == "join":
            c = hub.subscribe(a)
            start = dict(hub.position)
            live.append({"c": c, "f": a, "pos": start, "out": b"", "ref_pos": start,
                         "ref_out": b"", "ref_queue": []})  # fmt: skip
        elif live:
            r = live[a % len(live)]
            if kind == "wake" and r["c"].queue:  # the stream runs only when woken
                data, r["pos"] = _drain(r["c"], r["pos"])
                r["out"] += data
                data, r["ref_pos"], _ = render(r["ref_queue"], r["ref_pos"], r["f"])
                r["ref_queue"] = []
                r["ref_out"] += data
            elif kind == "leave":
                hub.unsubscribe(r["c"])
                live.remove(r)
    for r in live:
        if r["c"].queue:
            data, r["pos"] = _drain(r["c"], r["pos"])
            r["out"] += data
        data, r["ref_pos"], _ = render(r["ref_queue"], r["ref_pos"], r["f"])
        r["ref_out"] += data
        assert r["out"] == r["ref_out"]
        # where it would resume (its next wake merges the group's position)
        assert r["c"].group is not None
        assert C.merge(r["pos"], r["c"].group.position) == C.merge(r["ref_pos"], hub.position)
    assert set(hub.groups) == {r["f"].normalized() for r in live}
    assert sum(len(g.clients) for g in hub.groups.values()) == len(live) == len(hub.clients)


@given(st.lists(st.integers(0, 3 * CHUNK_BYTES // 2), max_size=40))
def test_chunks_are_bounded_and_in_order(sizes: list[int]) -> None:
    parts = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    chunks = list(chunked(parts))
    assert b"".join(chunks) == b"".join(parts)
    # a chunk is at most CHUNK_BYTES, or a single part longer than that
    for ch in chunks:
        assert len(ch) <= CHUNK_BYTES or any(ch is p for p in parts)
    assert all(ch for ch in chunks) or not any(parts)


class _NoRows:
    """ClickHouse with nothing newer than the client: the catch-up goes straight to the ring."""

    def head(self) -> C.Cursor:
        return {}

    def feed_window(self, *args: Any) -> tuple[list[Any], C.Cursor]:
        return [], {}


def _replay(hub: Hub, client: Client, pos: C.Cursor, filters: Filters) -> list[bytes]:
    limits = SimpleNamespace(api=SimpleNamespace(feed_max_limit=500))
    st = SimpleNamespace(db=lambda: _NoRows(), closing=False, s=limits)

    async def run() -> list[bytes]:
        return [chunk async for chunk, _ in A._catch_up(st, hub, client, pos, filters)]  # type: ignore[arg-type]

    return asyncio.run(run())


def _ring(hub: Hub, n: int) -> Iterator[LiveBatch]:
    cons = Consumer()
    for k in range(0, n, 500):
        events = [(i % 3, _item(MARKETS[i % 3], "resy", "open", 2)) for i in range(k, k + 500)]
        batch = cons.batch(events, None)
        hub._publish(batch)
        yield batch


@pytest.mark.parametrize("filters", [Filters(), Filters(market=("nyc",))])
def test_a_long_ring_catch_up_is_sent_in_bounded_chunks(filters: Filters) -> None:
    """5,000 events (~2 MB) for a client that reconnects at the ring's start: before, one
    chunk of the whole backlog, built in one go on the event loop; now chunks of at most
    CHUNK_BYTES (and one event), the same bytes in the same order."""
    hub = _hub()
    hub.base = {0: -1, 1: -1, 2: -1}
    batches = list(_ring(hub, 5000))
    client = hub.subscribe(filters)
    chunks = _replay(hub, client, dict(hub.base), filters)
    expected, _, n = render(batches, dict(hub.base), filters)
    assert n > 1000 and b"".join(chunks) == expected
    biggest = max(len(e.data) for b in batches for e in b.events)
    assert max(len(ch) for ch in chunks) <= CHUNK_BYTES + biggest
    assert len([ch for ch in chunks if ch]) >= len(expected) // (CHUNK_BYTES + biggest)


def test_the_batch_interval_grows_with_the_clients_past_the_send_budget() -> None:
    from api.hub import flush_interval

    assert Settings().sse.sends_per_s == 5_000
    assert flush_interval(100, 0, 10_000) == 0.1
    assert flush_interval(100, 1000, 10_000) == 0.1  # 10,000 sends a second: the budget
    assert flush_interval(100, 5000, 10_000) == 0.5  # not 50,000 a second
    assert flush_interval(250, 100, 10_000) == 0.25


def test_a_batch_reaches_a_big_group_in_slices_in_order() -> None:
    """1,200 clients of one filter: each pass of the event loop hands the batch to at most
    OFFER_SLICE of them (the loop polls its sockets between passes); every client gets both
    batches in order, and the group's position moves only once all of them have a batch."""
    from api.hub import OFFER_SLICE

    async def run() -> None:
        hub = _hub()
        hub._loop = asyncio.get_running_loop()
        clients = [hub.subscribe(Filters()) for _ in range(1200)]
        cons = Consumer()
        b1 = cons.batch([(0, _item("nyc", "resy", "open", 2))], None)
        b2 = cons.batch([(1, _item("nyc", "resy", "open", 2))], None)
        group = clients[0].group
        assert group is not None
        hub._publish(b1)
        hub._publish(b2)
        assert sum(len(c.queue) for c in clients) == OFFER_SLICE
        assert not C.covers(group.position, b1.after)
        for _ in range(10):
            await asyncio.sleep(0)
        assert all(list(c.queue) == [b1, b2] for c in clients)
        assert C.covers(group.position, b2.after)

    asyncio.run(run())
