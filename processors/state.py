"""One stream's :class:`domain.rule.BucketState` in a key-value store (Quix RocksDB state).

Layout, under each message key (the stream key ``<bucket_id>/<provider>``); every value is
raw bytes (``get_bytes``/``set_bytes``: no JSON of Python sets), no per-write TTL:

=============  ===============================================================================
``m``          meta, orjson: layout version, a random write token, flags, counters, the parts
               lists below (``base``, ``prev``, ``acc``, ``acc_venues``: names of ``x/<k>`` and
               ``v/<k>`` objects), ``deltas`` (name -> base name of the arrays written as a
               change) and how many chunks each stored value has
``x/<k>/<i>``  id array ``k`` written whole: packed little-endian uint64, sorted; chunk ``i``
               of 65,536 ids
``x/<k>+/<i>`` id array ``k`` written as a change of its base (``deltas``): the ids it adds
``x/<k>-/<i>`` ... and the ids of the base it drops (same encoding)
``v/<k>/<i>``  venue set ``k``: the venues of one part of the snapshot being assembled (of a
               poll: only those the baseline has not seen), orjson list
``s/<i>``      seen ids (same encoding as ``x``); ``t/<i>`` the matching reported-at times
``o/<i>``      ids of the reported slots still open; ``O/<slot_id>`` the payload of one, orjson
``V/<name>``   a venue set (``base``, ``unknown``, ``failed``), orjson list, chunked
=============  ===============================================================================

The baseline is the union of the arrays in ``base``, prev of those in ``prev``
(:attr:`BucketState.baseline_parts`, :attr:`BucketState.prev_parts`); ``acc`` are the parts
of the snapshot being assembled. An array is written once, when it first appears (a part as
it arrives, absorbed ids, a compacted prev), never rewritten; when its snapshot ends
complete, prev becomes a reference to the parts already stored (a meta write, not 1.6 MB of
ids again). A new part is written as a change of the same part of the snapshot before (same
venues in the same order: a few hundred ids instead of 25,000) when the change is under 1/8
of it and the chain of changes is at most ``MAX_DEPTH`` long; otherwise whole. An array is
deleted when no list references it and no stored array is a change of it.

A chunk is at most 512 KB, so no changelog record nears Kafka's 1 MB default, whatever the
bucket's size. A key is written only when its bytes changed; chunks past the new end are
deleted. Seen expiry lives inside the seen arrays (the rule prunes them), never in a store TTL.

A decoded state is cached per key with the meta bytes it was loaded from; the cache is used
only when the store's meta still has the same bytes (the random token makes every save's meta
unique), so a rolled-back transaction or a state rebuilt from the changelog is always re-read.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from domain.rule import BucketState, OpenSlot
from domain.slotsets import EMPTY, IdArray, minus, union, union_all

LAYOUT = 2
CHUNK = 65_536  # values per chunk: 512 KB of uint64 / int64
BLOB_CHUNK = 512 * 1024
_VENUES = ("base", "unknown", "failed")
MAX_DEPTH = 6  # changes on changes before an array is written whole again
DELTA_RATIO = 8  # written as a change when it adds and removes under 1/8 of its ids
MIN_DELTA = 1024  # smaller arrays are written whole


class ByteStore(Protocol):
    """What we need of Quix's ``State`` (scoped to one message key)."""

    def get_bytes(self, key: Any, default: Any = None) -> Any: ...

    def set_bytes(self, key: Any, value: bytes) -> None: ...

    def delete(self, key: Any) -> None: ...


@dataclass(slots=True)
class _Saved:
    """What the store holds for one key, as this process last wrote or read it."""

    meta: bytes = b""
    arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)  # s, t, o
    blobs: dict[str, bytes] = field(default_factory=dict)
    chunks: dict[str, int] = field(default_factory=dict)  # key prefix -> chunks written
    # the stored immutable objects (id arrays ``x/<k>``, venue sets ``v/<k>``) by identity:
    # id(obj) -> (name, obj); holding obj keeps its id from being reused
    objs: dict[int, tuple[str, Any]] = field(default_factory=dict)
    next: int = 0  # the next object number
    # stored id arrays written as a change of another (name -> its base's name); a base stays
    # stored while anything stored depends on it, even when the state no longer holds it
    deltas: dict[str, str] = field(default_factory=dict)
    stored: set[str] = field(default_factory=set)  # every stored object name
    last_prev: list[Any] = field(default_factory=list)  # prev's parts at the last save
    open_ids: set[str] = field(default_factory=set)
    venue_refs: dict[str, tuple[set[str], int]] = field(default_factory=dict)


@dataclass(slots=True)
class Stats:
    writes: int = 0
    bytes_written: int = 0
    deletes: int = 0
    loads: int = 0  # states read from the store (cache misses)


def _chunks(n: int, size: int) -> int:
    return (n + size - 1) // size


def _le(arr: npt.NDArray[Any]) -> bytes:
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


class StateStore:
    """Loads and saves bucket states; keeps the last decoded state of each key."""

    def __init__(self, max_cached: int = 4096) -> None:
        self._cache: dict[Any, tuple[_Saved, BucketState]] = {}
        self.max_cached = max_cached
        self.stats = Stats()

    def forget(self) -> None:
        self._cache.clear()

    # ------------------------------------------------------------------ load

    def load(self, key: Any, store: ByteStore) -> BucketState:
        meta_bytes = store.get_bytes("m")
        cached = self._cache.get(key)
        if cached is not None and meta_bytes is not None and cached[0].meta == meta_bytes:
            return cached[1]
        self._cache.pop(key, None)
        if meta_bytes is None:
            saved, state = _Saved(), BucketState()
        else:
            self.stats.loads += 1
            saved, state = _decode(store, meta_bytes)
        if len(self._cache) >= self.max_cached:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (saved, state)
        return state

    # ------------------------------------------------------------------ save

    def save(self, key: Any, store: ByteStore, state: BucketState) -> None:
        cached = self._cache.get(key)
        if cached is None or cached[1] is not state:
            raise RuntimeError("save() of a state that load() did not return")
        saved = cached[0]
        changed = False
        used: set[str] = set()

        def ref(obj: Any, kind: str, like: Any = None) -> str:
            nonlocal changed
            hit = saved.objs.get(id(obj))
            if hit is None:
                name = f"{kind}/{saved.next}"
                saved.next += 1
                if kind == "v":
                    self._put_blob(store, saved, name, orjson.dumps(list(obj)))
                elif not self._write_delta(store, saved, name, obj, like):
                    self._write_array(store, saved, name, obj)
                saved.stored.add(name)
                hit = saved.objs[id(obj)] = (name, obj)
                changed = True
            used.add(hit[0])
            return hit[0]

        # a part is most like the same part of the snapshot before (same venues, in order):
        # a new part of the snapshot being assembled is written as a change of that one, and
        # so is the last part (new when its snapshot ends) of the prev it becomes
        prev_parts, last = state.prev_parts, saved.last_prev
        refs = {
            "base": None if state.baseline is None else [ref(a, "x") for a in state.baseline_parts],
            "prev": [
                ref(a, "x", last[n] if n < len(last) else None) for n, a in enumerate(prev_parts)
            ],
            "acc": [
                ref(a, "x", prev_parts[n] if n < len(prev_parts) else None)
                for n, a in enumerate(state.acc)
            ],
            "acc_venues": [ref(v, "v") for v in state.acc_venues],
        }
        saved.last_prev = list(prev_parts)
        for oid, (name, _) in list(saved.objs.items()):
            if name not in used:  # the state no longer holds it (it may stay stored as a base)
                del saved.objs[oid]
        keep = set(used)
        for name in used:
            while name in saved.deltas:
                name = saved.deltas[name]
                keep.add(name)
        for name in saved.stored - keep:  # no longer part of anything: its keys go
            for key in (name, f"{name}+", f"{name}-"):
                self._drop_chunks(store, saved, key, 0)
            saved.blobs.pop(name, None)
            saved.deltas.pop(name, None)
            saved.stored.discard(name)
            changed = True
        arrays: dict[str, npt.NDArray[Any]] = {"s": state.seen_ids, "t": state.seen_at}
        open_ids = set(state.open)
        if open_ids == saved.open_ids and "o" in saved.arrays:
            arrays["o"] = saved.arrays["o"]
        else:
            arrays["o"] = np.array(sorted(int(k, 16) for k in open_ids), dtype=np.uint64)
        for name, arr in arrays.items():
            changed |= self._put_array(store, saved, name, arr)
        venues = {
            "base": state.baseline_venues,
            "unknown": state.unknown_venues,
            "failed": state.acc_failed_venues,
        }
        for name, values in venues.items():
            # the rule only adds to or only removes from one venue set between two saves (or
            # replaces it): the same object with the same size is the same set, no need to
            # serialize 20,000 venue ids again (the reference keeps the object alive)
            vref = saved.venue_refs.get(name)
            if vref is not None and vref[0] is values and vref[1] == len(values):
                continue
            changed |= self._put_blob(store, saved, f"V/{name}", orjson.dumps(list(values)))
            saved.venue_refs[name] = (values, len(values))
        for sid in open_ids - saved.open_ids:
            o = state.open[sid]
            self._set(store, f"O/{sid}", orjson.dumps([o.slot, o.opened_at_ms, o.opened_after_ms]))
        for sid in saved.open_ids - open_ids:
            store.delete(f"O/{sid}")
            self.stats.deletes += 1
        changed |= open_ids != saved.open_ids
        saved.open_ids = open_ids
        body = _meta(state, saved, refs)
        if changed or body != saved.meta[: len(body)]:
            saved.meta = body + secrets.token_hex(8).encode() + b'"}'
            self._set(store, "m", saved.meta)

    def delete(self, key: Any, store: ByteStore) -> None:
        """Remove every key of this stream (the bucket left the window)."""
        state = self.load(key, store)
        saved = self._cache.pop(key)[0]
        for name in list(saved.chunks):
            self._drop_chunks(store, saved, name, 0)
        for sid in state.open:
            store.delete(f"O/{sid}")
        store.delete("m")

    # ------------------------------------------------------------------ helpers

    def _set(self, store: ByteStore, key: str, value: bytes) -> None:
        store.set_bytes(key, value)
        self.stats.writes += 1
        self.stats.bytes_written += len(value)

    def _write_array(
        self, store: ByteStore, saved: _Saved, name: str, arr: npt.NDArray[Any]
    ) -> None:
        n = _chunks(len(arr), CHUNK)
        for i in range(n):
            self._set(store, f"{name}/{i}", _le(arr[i * CHUNK : (i + 1) * CHUNK]))
        if n:
            saved.chunks[name] = n

    def _write_delta(
        self, store: ByteStore, saved: _Saved, name: str, arr: IdArray, like: Any
    ) -> bool:
        """Write ``arr`` as the ids it adds to and removes from ``like`` (a stored array), when
        that is much smaller than ``arr`` and the chain of changes is short."""
        hit = None if like is None else saved.objs.get(id(like))
        if hit is None or len(arr) < MIN_DELTA:
            return False
        base, depth = hit[0], 1
        b = base
        while b in saved.deltas:
            b, depth = saved.deltas[b], depth + 1
        if depth > MAX_DEPTH:
            return False
        limit = len(arr) // DELTA_RATIO
        if not len(like) or abs(len(arr) - len(like)) > limit:
            return False
        # one binary search of the (sorted) part in its base gives both sides of the change
        at = np.searchsorted(like, arr)
        at[at >= len(like)] = 0
        found = like[at] == arr
        added = arr[~found]
        kept = np.zeros(len(like), dtype=bool)
        kept[at[found]] = True
        removed = like[~kept]
        if len(added) + len(removed) > limit:
            return False
        self._write_array(store, saved, f"{name}+", added)
        self._write_array(store, saved, f"{name}-", removed)
        saved.deltas[name] = base
        return True

    def _put_array(self, store: ByteStore, saved: _Saved, name: str, arr: npt.NDArray[Any]) -> bool:
        old = saved.arrays.get(name)
        if old is arr:
            return False
        n = _chunks(len(arr), CHUNK)
        changed = old is None or len(old) != len(arr)
        for i in range(n):
            new_chunk = arr[i * CHUNK : (i + 1) * CHUNK]
            if old is not None and np.array_equal(new_chunk, old[i * CHUNK : (i + 1) * CHUNK]):
                continue
            self._set(store, f"{name}/{i}", _le(new_chunk))
            changed = True
        self._drop_chunks(store, saved, name, n)
        saved.arrays[name] = arr
        return changed

    def _put_blob(self, store: ByteStore, saved: _Saved, name: str, data: bytes) -> bool:
        old = saved.blobs.get(name, b"[]")
        if old == data:
            return False
        n = _chunks(len(data), BLOB_CHUNK)
        for i in range(n):
            piece = data[i * BLOB_CHUNK : (i + 1) * BLOB_CHUNK]
            if piece != old[i * BLOB_CHUNK : (i + 1) * BLOB_CHUNK]:
                self._set(store, f"{name}/{i}", piece)
        self._drop_chunks(store, saved, name, n)
        saved.blobs[name] = data
        return True

    def _drop_chunks(self, store: ByteStore, saved: _Saved, name: str, keep: int) -> None:
        for i in range(keep, saved.chunks.get(name, 0)):
            store.delete(f"{name}/{i}")
            self.stats.deletes += 1
        if keep:
            saved.chunks[name] = keep
        else:
            saved.chunks.pop(name, None)


def _meta(state: BucketState, saved: _Saved, refs: dict[str, list[str] | None]) -> bytes:
    """The meta record without its closing token (``...,"token":"`` is the end)."""
    doc = {
        "layout": LAYOUT,
        "baseline_partial": state.baseline_partial,
        "last_polled_ms": state.last_polled_ms,
        "last_complete_ms": state.last_complete_ms,
        "rebaseline": state.rebaseline,
        "acc_id": state.acc_id,
        "acc_mode": state.acc_mode,
        "acc_complete": state.acc_complete,
        "acc_gap": state.acc_gap,
        "acc_next": state.acc_next,
        "acc_done": state.acc_done,
        "acc_wide_failure": state.acc_wide_failure,
        "chunks": saved.chunks,
        "next": saved.next,
        "deltas": saved.deltas,
        **refs,
    }
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)[:-1] + b',"token":"'


def _decode(store: ByteStore, meta_bytes: bytes) -> tuple[_Saved, BucketState]:
    doc = orjson.loads(meta_bytes)
    if doc.get("layout") != LAYOUT:
        raise ValueError(f"state layout {doc.get('layout')} is not {LAYOUT}")
    chunks: dict[str, int] = doc["chunks"]
    deltas: dict[str, str] = doc["deltas"]
    saved = _Saved(meta=meta_bytes, chunks=dict(chunks), next=doc["next"], deltas=dict(deltas))

    def raw(name: str) -> bytes:
        parts = [store.get_bytes(f"{name}/{i}") for i in range(chunks.get(name, 0))]
        if any(p is None for p in parts):
            raise ValueError(f"state chunk of {name!r} missing")
        return b"".join(parts)

    def array(name: str, dtype: str) -> npt.NDArray[Any]:
        data = raw(name)
        arr = np.frombuffer(data, dtype=dtype).astype(dtype[1:], copy=False) if data else None
        if arr is None:
            arr = EMPTY if dtype == "<u8" else np.zeros(0, dtype=np.int64)
        return arr

    def blob(name: str) -> list[str]:
        data = raw(name) or b"[]"
        saved.blobs[name] = data
        values: list[str] = orjson.loads(data)
        return values

    resolved: dict[str, Any] = {}

    def resolve(name: str) -> Any:
        if name not in resolved:
            if name[0] == "v":
                resolved[name] = set(blob(name))
            elif name in deltas:
                base = resolve(deltas[name])
                arr = union(minus(base, array(f"{name}-", "<u8")), array(f"{name}+", "<u8"))
                resolved[name] = arr.copy() if arr is base else arr  # one object, one name
            else:
                resolved[name] = array(name, "<u8")
        return resolved[name]

    def obj(name: str) -> Any:  # an object the state holds
        value = resolve(name)
        saved.objs[id(value)] = (name, value)
        return value

    for name in ("base", "prev", "acc", "acc_venues"):
        saved.stored.update(doc[name] or ())
    for name, base_name in deltas.items():
        saved.stored.update((name, base_name))
    base = None if doc["base"] is None else [obj(n) for n in doc["base"]]
    prev = [obj(n) for n in doc["prev"]]
    saved.last_prev = list(prev)
    for name in ("s", "t", "o"):
        saved.arrays[name] = array(name, "<i8" if name == "t" else "<u8")
    state = BucketState(
        baseline=None if base is None else union_all(base),
        baseline_parts=base or [],
        baseline_venues=set(blob("V/base")),
        baseline_partial=doc["baseline_partial"],
        unknown_venues=set(blob("V/unknown")),
        prev=union_all(prev),
        prev_parts=prev,
        seen_ids=saved.arrays["s"],
        seen_at=saved.arrays["t"],
        last_polled_ms=doc["last_polled_ms"],
        # (absent from states written before opened_after_ms and rebaseline: unknown, none)
        last_complete_ms=doc.get("last_complete_ms", -1),
        rebaseline=doc.get("rebaseline", False),
        acc_id=doc["acc_id"],
        acc_mode=doc["acc_mode"],
        acc=[obj(n) for n in doc["acc"]],
        acc_venues=[obj(n) for n in doc["acc_venues"]],
        acc_complete=doc["acc_complete"],
        acc_gap=doc["acc_gap"],
        acc_next=doc["acc_next"],
        acc_done=doc["acc_done"],
        acc_failed_venues=set(blob("V/failed")),
        acc_wide_failure=doc["acc_wide_failure"],
    )
    for name, values in (
        ("base", state.baseline_venues),
        ("unknown", state.unknown_venues),
        ("failed", state.acc_failed_venues),
    ):
        saved.venue_refs[name] = (values, len(values))
    for sid_int in saved.arrays["o"].tolist():
        sid = f"{sid_int:016x}"
        raw_slot = store.get_bytes(f"O/{sid}")
        if raw_slot is None:
            raise ValueError(f"state of open slot {sid} missing")
        slot, opened_at, *after = orjson.loads(raw_slot)  # (no opened_after before v2 drops)
        state.open[sid] = OpenSlot(slot, opened_at, after[0] if after else None)
    saved.open_ids = set(state.open)
    return saved, state


__all__ = ["CHUNK", "ByteStore", "IdArray", "StateStore", "Stats"]
