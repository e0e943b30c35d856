"""One stream's :class:`domain.rule.BucketState` in a key-value store (Quix RocksDB state).

Layout, under each message key (the stream key ``<bucket_id>/<provider>``); every value is
raw bytes (``get_bytes``/``set_bytes``: no JSON of Python sets), no per-write TTL:

=============  ===============================================================================
``m``          meta, orjson: layout version, a random write token, flags, counters, and how many
               chunks each array below has
``b/<i>``      baseline ids, packed little-endian uint64, sorted; chunk ``i`` of 65,536 ids
``p/<i>``      prev ids (same encoding)
``s/<i>``      seen ids (same encoding); ``t/<i>`` the matching reported-at times (int64 ms)
``a/<n>/<i>``  ids of part ``n`` of the snapshot being assembled
``o/<i>``      ids of the reported slots still open; ``O/<slot_id>`` the payload of one, orjson
``V/<name>``   a venue set (``base``, ``unknown``, ``acc``, ``failed``), orjson list, chunked
=============  ===============================================================================

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
from domain.slotsets import EMPTY, IdArray

LAYOUT = 1
CHUNK = 65_536  # values per chunk: 512 KB of uint64 / int64
BLOB_CHUNK = 512 * 1024
_VENUES = ("base", "unknown", "acc", "failed")


class ByteStore(Protocol):
    """What we need of Quix's ``State`` (scoped to one message key)."""

    def get_bytes(self, key: Any, default: Any = None) -> Any: ...

    def set_bytes(self, key: Any, value: bytes) -> None: ...

    def delete(self, key: Any) -> None: ...


@dataclass(slots=True)
class _Saved:
    """What the store holds for one key, as this process last wrote or read it."""

    meta: bytes = b""
    arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    chunks: dict[str, int] = field(default_factory=dict)  # key prefix -> chunks written
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
        arrays: dict[str, npt.NDArray[Any]] = {
            "b": state.baseline if state.baseline is not None else EMPTY,
            "p": state.prev,
            "s": state.seen_ids,
            "t": state.seen_at,
        }
        for n, part in enumerate(state.acc):
            arrays[f"a/{n}"] = part
        open_ids = set(state.open)
        if open_ids == saved.open_ids and "o" in saved.arrays:
            arrays["o"] = saved.arrays["o"]
        else:
            arrays["o"] = np.array(sorted(int(k, 16) for k in open_ids), dtype=np.uint64)
        for name, arr in arrays.items():
            changed |= self._put_array(store, saved, name, arr)
        for name in [n for n in saved.arrays if n not in arrays]:  # acc parts of a past snapshot
            self._drop_chunks(store, saved, name, 0)
            del saved.arrays[name]
            changed = True
        venues = {
            "base": state.baseline_venues,
            "unknown": state.unknown_venues,
            "acc": state.acc_venues,
            "failed": state.acc_failed_venues,
        }
        for name, values in venues.items():
            # the rule only adds to or only removes from one venue set between two saves (or
            # replaces it): the same object with the same size is the same set, no need to
            # serialize 20,000 venue ids again (the reference keeps the object alive)
            ref = saved.venue_refs.get(name)
            if ref is not None and ref[0] is values and ref[1] == len(values):
                continue
            changed |= self._put_blob(store, saved, f"V/{name}", orjson.dumps(list(values)))
            saved.venue_refs[name] = (values, len(values))
        for sid in open_ids - saved.open_ids:
            o = state.open[sid]
            self._set(store, f"O/{sid}", orjson.dumps([o.slot, o.opened_at_ms]))
        for sid in saved.open_ids - open_ids:
            store.delete(f"O/{sid}")
            self.stats.deletes += 1
        changed |= open_ids != saved.open_ids
        saved.open_ids = open_ids
        body = _meta(state, saved)
        if changed or body != saved.meta[: len(body)]:
            saved.meta = body + secrets.token_hex(8).encode() + b'"}'
            self._set(store, "m", saved.meta)

    def delete(self, key: Any, store: ByteStore) -> None:
        """Remove every key of this stream (the bucket left the window)."""
        state = self.load(key, store)
        saved = self._cache.pop(key)[0]
        for name in list(saved.arrays):
            self._drop_chunks(store, saved, name, 0)
        for name in _VENUES:
            self._drop_chunks(store, saved, f"V/{name}", 0)
        for sid in state.open:
            store.delete(f"O/{sid}")
        store.delete("m")

    # ------------------------------------------------------------------ helpers

    def _set(self, store: ByteStore, key: str, value: bytes) -> None:
        store.set_bytes(key, value)
        self.stats.writes += 1
        self.stats.bytes_written += len(value)

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
            self._set(
                store, f"{name}/{i}", new_chunk.astype(new_chunk.dtype.newbyteorder("<")).tobytes()
            )
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


def _meta(state: BucketState, saved: _Saved) -> bytes:
    """The meta record without its closing token (``...,"token":"`` is the end)."""
    doc = {
        "layout": LAYOUT,
        "has_baseline": state.baseline is not None,
        "baseline_partial": state.baseline_partial,
        "last_polled_ms": state.last_polled_ms,
        "acc_id": state.acc_id,
        "acc_mode": state.acc_mode,
        "acc_complete": state.acc_complete,
        "acc_gap": state.acc_gap,
        "acc_next": state.acc_next,
        "acc_done": state.acc_done,
        "acc_wide_failure": state.acc_wide_failure,
        "acc_parts": len(state.acc),
        "chunks": saved.chunks,
    }
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)[:-1] + b',"token":"'


def _decode(store: ByteStore, meta_bytes: bytes) -> tuple[_Saved, BucketState]:
    doc = orjson.loads(meta_bytes)
    if doc.get("layout") != LAYOUT:
        raise ValueError(f"state layout {doc.get('layout')} is not {LAYOUT}")
    chunks: dict[str, int] = doc["chunks"]
    saved = _Saved(meta=meta_bytes, chunks=dict(chunks))

    def array(name: str, dtype: str) -> npt.NDArray[Any]:
        parts = [store.get_bytes(f"{name}/{i}") for i in range(chunks.get(name, 0))]
        if any(p is None for p in parts):
            raise ValueError(f"state chunk of {name!r} missing")
        data = b"".join(parts)
        arr = np.frombuffer(data, dtype=dtype).astype(dtype[1:], copy=False) if data else None
        if arr is None:
            arr = EMPTY if dtype == "<u8" else np.zeros(0, dtype=np.int64)
        saved.arrays[name] = arr
        return arr

    def blob(name: str) -> list[str]:
        n = chunks.get(name, 0)
        data = b"".join(store.get_bytes(f"{name}/{i}") or b"" for i in range(n)) or b"[]"
        saved.blobs[name] = data
        values: list[str] = orjson.loads(data)
        return values

    baseline = array("b", "<u8")
    state = BucketState(
        baseline=baseline if doc["has_baseline"] else None,
        baseline_venues=set(blob("V/base")),
        baseline_partial=doc["baseline_partial"],
        unknown_venues=set(blob("V/unknown")),
        prev=array("p", "<u8"),
        seen_ids=array("s", "<u8"),
        seen_at=array("t", "<i8"),
        last_polled_ms=doc["last_polled_ms"],
        acc_id=doc["acc_id"],
        acc_mode=doc["acc_mode"],
        acc=[array(f"a/{n}", "<u8") for n in range(doc["acc_parts"])],
        acc_venues=set(blob("V/acc")),
        acc_complete=doc["acc_complete"],
        acc_gap=doc["acc_gap"],
        acc_next=doc["acc_next"],
        acc_done=doc["acc_done"],
        acc_failed_venues=set(blob("V/failed")),
        acc_wide_failure=doc["acc_wide_failure"],
    )
    for sid_int in array("o", "<u8").tolist():
        sid = f"{sid_int:016x}"
        raw = store.get_bytes(f"O/{sid}")
        if raw is None:
            raise ValueError(f"state of open slot {sid} missing")
        slot, opened_at = orjson.loads(raw)
        state.open[sid] = OpenSlot(slot, opened_at)
    saved.open_ids = set(state.open)
    return saved, state


__all__ = ["CHUNK", "ByteStore", "IdArray", "StateStore", "Stats"]
