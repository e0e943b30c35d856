"""The state layout (``processors.state``): round trips, chunking, writes only of changes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from domain import rule
from processors import state as state_mod
from processors.state import StateStore
from schemas import Failure, Snapshot, decode_snapshot, encode
from tests.unit.test_rule import TTL, UNIVERSE, fetches, snapshot


class Recorder:
    """A key-value store that records writes (the byte-level contract of Quix's State)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.writes: list[str] = []

    def get_bytes(self, key: Any, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set_bytes(self, key: Any, value: bytes) -> None:
        assert isinstance(value, bytes)
        self.data[key] = value
        self.writes.append(key)

    def delete(self, key: Any) -> None:
        self.data.pop(key, None)


def same(a: rule.BucketState, b: rule.BucketState) -> None:
    for name in rule.BucketState.__slots__:
        x, y = getattr(a, name), getattr(b, name)
        if name in ("acc", "prev_parts", "baseline_parts"):
            assert [p.tolist() for p in x] == [p.tolist() for p in y], name
        elif hasattr(x, "tolist"):
            assert x.tolist() == y.tolist(), name
        elif name == "open":
            assert {k: (v.slot, v.opened_at_ms, v.opened_after_ms) for k, v in x.items()} == {
                k: (v.slot, v.opened_at_ms, v.opened_after_ms) for k, v in y.items()
            }
        else:
            assert x == y, name


def test_round_trip_through_a_cold_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_mod, "CHUNK", 4)
    monkeypatch.setattr(state_mod, "BLOB_CHUNK", 8)
    store, states = Recorder(), StateStore()
    all_slots = list(UNIVERSE.values())
    fail = (Failure("venue", "v4", "timeout"),)
    history = [
        snapshot("a", 0, all_slots[:10], kind="baseline", complete=False, failures=fail),
        snapshot("b", 1000, all_slots[:14]),
        snapshot("c", 2000, all_slots[2:16], part=0, parts=2),
    ]
    for snap in history:
        st = states.load(b"k", store)
        rule.apply(st, snap, TTL)
        states.save(b"k", store, st)
        fresh = StateStore().load(b"k", store)  # read back from bytes only
        same(st, fresh)
    assert st.open and len(st.acc) == 1
    assert max(len(v) for k, v in store.data.items() if k[0] in "xsto") <= 4 * 8
    assert all(len(v) <= 8 for k, v in store.data.items() if k.startswith("V/"))


def test_unchanged_parts_write_only_the_meta() -> None:
    store, states = Recorder(), StateStore()
    slots = list(UNIVERSE.values())
    for snap in [snapshot("a", 0, slots, kind="baseline"), snapshot("b", 1, slots)]:
        st = states.load(b"k", store)
        rule.apply(st, snap, TTL)
        states.save(b"k", store, st)
    store.writes.clear()
    st = states.load(b"k", store)
    rule.apply(st, snapshot("c", 2, slots[:5], part=0, parts=2), TTL)
    states.save(b"k", store, st)
    assert [w.split("/")[0] for w in sorted(store.writes)] == ["m", "x"]  # no new venue
    store.writes.clear()
    st = states.load(b"k", store)
    rule.apply(st, snapshot("c", 2, slots[:5], part=0, parts=2), TTL)  # a duplicate
    states.save(b"k", store, st)
    assert store.writes == []


def test_delete_removes_every_key() -> None:
    store, states = Recorder(), StateStore()
    st = states.load(b"k", store)
    rule.apply(st, snapshot("a", 0, [], kind="baseline"), TTL)
    states.save(b"k", store, st)
    st = states.load(b"k", store)
    rule.apply(st, snapshot("b", 1, list(UNIVERSE.values())[:3], part=0, parts=2), TTL)
    states.save(b"k", store, st)
    assert any(k.startswith("O/") for k in store.data)
    states.delete(b"k", store)
    assert store.data == {}


def test_a_changed_store_is_read_again() -> None:
    store, states = Recorder(), StateStore()
    st = states.load(b"k", store)
    rule.apply(st, snapshot("a", 0, [], kind="baseline"), TTL)
    states.save(b"k", store, st)
    other = StateStore()  # another process, after a rebalance, writes the key
    st2 = other.load(b"k", store)
    rule.apply(st2, snapshot("b", 1, [UNIVERSE[1, 1]]), TTL)
    other.save(b"k", store, st2)
    again = states.load(b"k", store)
    assert again is not st and list(again.open) == [UNIVERSE[1, 1].slot_id]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fetches())
def test_every_state_reads_back_the_same(history: list[Snapshot]) -> None:
    """Random histories (parts, failures, gaps, duplicates, baselines, closes): after every
    part, a cold read of the bytes gives the state the rule holds; the warm path agrees."""
    replay(history)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fetches())
def test_every_state_reads_back_the_same_with_parts_as_changes(history: list[Snapshot]) -> None:
    """The same, with every part that can be written as a change of another so written (short
    chains), and arrays split into chunks of 2 ids."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(state_mod, "MIN_DELTA", 0)
        mp.setattr(state_mod, "DELTA_RATIO", 1)
        mp.setattr(state_mod, "MAX_DEPTH", 2)
        mp.setattr(state_mod, "CHUNK", 2)
        replay(history)


def replay(history: list[Snapshot]) -> None:
    store, states = Recorder(), StateStore()
    for snap in history:
        view = decode_snapshot(encode(snap))
        st = states.load(b"k", store)
        out = rule.apply(st, view, TTL)
        if out.delete:
            states.delete(b"k", store)
            assert store.data == {}
            continue
        if not out.ignored:
            states.save(b"k", store, st)
        same(st, StateStore().load(b"k", store))
        referenced = set(store.data)
        meta = orjson.loads(store.data["m"])
        names = {n for k in ("prev", "acc", "acc_venues") for n in meta[k]}
        names |= set(meta["base"] or [])
        for name in list(names):  # and the arrays they are written as changes of
            while name in meta["deltas"]:
                name = meta["deltas"][name]
                names.add(name)
        stored = {k.rsplit("/", 1)[0].rstrip("+-") for k in referenced if k[0] in "xv"}
        assert stored <= names  # nothing left behind that no list references


def test_a_complete_snapshot_ends_without_rewriting_prev() -> None:
    """prev by reference: the last part writes its own ids and the meta; the old prev's
    arrays are deleted, nothing is written twice."""
    store, states = Recorder(), StateStore()
    slots = list(UNIVERSE.values())
    for snap in [snapshot("a", 0, slots, kind="baseline"), snapshot("b", 1, slots[:20])]:
        st = states.load(b"k", store)
        rule.apply(st, snap, TTL)
        states.save(b"k", store, st)
    before = {k for k in store.data if k[0] == "x"}
    written = []
    for p in range(2):
        store.writes.clear()
        st = states.load(b"k", store)
        rule.apply(st, snapshot("c", 2, slots[p * 10 : p * 10 + 10], part=p, parts=2), TTL)
        states.save(b"k", store, st)
        ids = [w for w in store.writes if w[0] == "x"]
        assert len(ids) == 1  # this part's ids, once
        written += ids
    meta = orjson.loads(store.data["m"])
    assert [f"{n}/0" for n in meta["prev"]] == written and meta["acc"] == []
    base = {f"{n}/0" for n in meta["base"]}
    assert base < before and not (before - base) & set(store.data)  # b's parts went
