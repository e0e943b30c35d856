"""The drop rule, as one pure function over one bucket's state.

For one stream (a bucket as seen by one provider), with ``curr`` the slots of a snapshot:

    drops = (curr − prev) ∩ (curr − baseline) − seen

- A bucket emits nothing until it has a baseline. Its first snapshot (normally the baseline
  build, ``kind="baseline"``) becomes the baseline; a later baseline build replaces it.
- ``seen`` keeps each reported slot for ``seen_ttl_ms`` (event time: the snapshot's
  ``polled_at_ms``), so a flapping slot is reported once. ``prev`` never expires by time.
- Unknown is never empty: a complete snapshot replaces ``prev``; an incomplete one only adds
  to it, so a failed page or venue never makes slots look closed (and reopen as drops).
- A venue the baseline could not see (its fetch failed, or a page failed) gets its first
  successful sighting as its baseline instead of a burst of drops.
- A reported slot missing from a later complete snapshot is closed, with how long it was open.
- A snapshot arrives in parts (Kafka's record limit); drops are decided part by part, and
  ``prev`` is replaced when the last part of a complete snapshot arrives. A part older than
  the last snapshot (a slower, earlier fetch) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from domain import slotsets
from domain.slotsets import EMPTY, IdArray
from schemas import DropEvent, Slot, Snapshot, dedupe_key

Mode = Literal["baseline", "poll"]


@dataclass(slots=True)
class OpenSlot:
    """A reported slot that is still open: enough to describe its close."""

    slot: dict[str, Any]
    opened_at_ms: int


@dataclass(slots=True)
class BucketState:
    baseline: IdArray | None = None
    baseline_venues: set[str] = field(default_factory=set)
    baseline_partial: bool = False
    unknown_venues: set[str] = field(default_factory=set)
    prev: IdArray = EMPTY
    seen_ids: IdArray = EMPTY  # sorted; seen_at is aligned with it
    seen_at: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    open: dict[str, OpenSlot] = field(default_factory=dict)
    last_polled_ms: int = -1
    # the snapshot being assembled from its parts
    acc_id: str = ""
    acc_mode: Mode = "poll"
    acc: IdArray = EMPTY
    acc_venues: set[str] = field(default_factory=set)
    acc_complete: bool = True
    acc_parts: int = 0
    acc_done: bool = True


@dataclass(slots=True)
class Outcome:
    opened: list[tuple[Slot, int]] = field(default_factory=list)  # (slot, opened_at_ms)
    closed: list[tuple[OpenSlot, int]] = field(default_factory=list)  # (open slot, closed_at)
    delete: bool = False  # the bucket left the window: drop its state
    ignored: str = ""  # why the part changed nothing ("stale", "duplicate")
    absorbed: int = 0  # slots of unseen venues taken into the baseline


def apply(state: BucketState, snap: Snapshot, seen_ttl_ms: int) -> Outcome:
    """Apply one snapshot part to ``state`` (mutated in place) and say what happened."""
    out = Outcome()
    if snap.kind == "close":
        out.delete = True
        return out
    if snap.snapshot_id == state.acc_id:
        if state.acc_done or snap.part < state.acc_parts:
            out.ignored = "duplicate"
            return out
    elif snap.polled_at_ms < state.last_polled_ms:
        out.ignored = "stale"
        return out
    else:
        _start(state, snap, seen_ttl_ms)

    now = snap.polled_at_ms
    by_id = {int(s.slot_id, 16): s for s in snap.slots}
    curr = slotsets.from_ints(by_id)
    venues = {s.venue_id for s in snap.slots}
    state.acc = slotsets.union(state.acc, curr)
    state.acc_venues |= venues
    state.acc_parts += 1
    state.acc_complete = state.acc_complete and snap.complete

    if state.acc_mode == "baseline":
        state.baseline = slotsets.union(
            state.baseline if state.baseline is not None else EMPTY, curr
        )
    else:
        assert state.baseline is not None
        new = slotsets.minus(slotsets.minus(curr, state.prev), state.baseline)
        live_seen = state.seen_ids[state.seen_at > now - seen_ttl_ms]
        new = slotsets.minus(new, live_seen)
        absorbed: list[int] = []
        reported: list[int] = []
        for sid in new.tolist():
            slot = by_id[sid]
            if slot.venue_id in state.unknown_venues or (
                state.baseline_partial and slot.venue_id not in state.baseline_venues
            ):
                absorbed.append(sid)
                continue
            reported.append(sid)
            out.opened.append((slot, now))
            state.open[slot.slot_id] = OpenSlot(slot.to_dict(), now)
        if absorbed:
            state.baseline = slotsets.union(state.baseline, slotsets.from_ints(absorbed))
            out.absorbed = len(absorbed)
        if reported:
            _remember_seen(state, slotsets.from_ints(reported), now)
    state.prev = slotsets.union(state.prev, curr)

    if snap.is_last_part:
        _finish(state, snap, out)
    return out


def _start(state: BucketState, snap: Snapshot, seen_ttl_ms: int) -> None:
    state.acc_id = snap.snapshot_id
    state.acc_mode = "baseline" if snap.kind == "baseline" or state.baseline is None else "poll"
    state.acc = EMPTY
    state.acc_venues = set()
    state.acc_complete = True
    state.acc_parts = 0
    state.acc_done = False
    state.last_polled_ms = snap.polled_at_ms
    if state.acc_mode == "baseline":
        state.baseline = EMPTY
    keep = state.seen_at > snap.polled_at_ms - seen_ttl_ms
    if not keep.all():
        state.seen_ids, state.seen_at = state.seen_ids[keep], state.seen_at[keep]


def _remember_seen(state: BucketState, ids: IdArray, now: int) -> None:
    keep = ~slotsets.contains(ids, state.seen_ids)  # renewals replace their old entry
    merged = np.concatenate([state.seen_ids[keep], ids])
    times = np.concatenate([state.seen_at[keep], np.full(len(ids), now, dtype=np.int64)])
    order = np.argsort(merged, kind="stable")
    state.seen_ids, state.seen_at = merged[order], times[order]


def _finish(state: BucketState, snap: Snapshot, out: Outcome) -> None:
    state.acc_done = True
    complete = state.acc_complete and state.acc_parts == snap.parts
    failed_venues = {f.ref for f in snap.failures if f.scope == "venue"}
    if state.acc_mode == "baseline":
        state.baseline_venues = set(state.acc_venues)
        state.baseline_partial = not complete and any(f.scope != "venue" for f in snap.failures)
        state.unknown_venues = failed_venues - state.acc_venues
        if not complete and not snap.failures:
            state.baseline_partial = True  # parts missing: coverage unknown
    else:
        state.baseline_venues |= state.acc_venues
        state.unknown_venues -= state.acc_venues
    if complete:
        state.baseline_partial = False
        state.unknown_venues = set()
        keys = list(state.open)
        present = slotsets.contains(state.acc, np.array([int(k, 16) for k in keys], np.uint64))
        for sid, here in zip(keys, present.tolist(), strict=True):
            if not here:
                out.closed.append((state.open.pop(sid), snap.polled_at_ms))
        state.prev = state.acc
    state.acc = EMPTY
    state.acc_venues = set()


def events(snap: Snapshot, out: Outcome) -> list[DropEvent]:
    """The drop records of one outcome, in a stable order (opens, then closes)."""
    records = [_event("open", snap, s.to_dict(), at, None) for s, at in out.opened]
    records += [_event("close", snap, o.slot, o.opened_at_ms, closed) for o, closed in out.closed]
    return records


def _event(
    kind: Literal["open", "close"],
    snap: Snapshot,
    slot: dict[str, Any],
    opened_at_ms: int,
    closed_at_ms: int | None,
) -> DropEvent:
    return DropEvent(
        event=kind,
        dedupe_key=dedupe_key(snap.bucket_id, slot["slot_id"], opened_at_ms, kind),
        bucket_id=snap.bucket_id,
        market=snap.market,
        provider=snap.provider,
        date=snap.date,
        time_slot=snap.time_slot,
        slot_id=slot["slot_id"],
        venue_id=slot["venue_id"],
        venue_name=slot["venue_name"],
        neighborhood=slot["neighborhood"],
        actual_time=slot["actual_time"],
        time_zone=slot["time_zone"],
        seating_types=tuple(slot["seating_types"]),
        party_min=slot["party_min"],
        party_max=slot["party_max"],
        booking=slot["booking"],
        opened_at_ms=opened_at_ms,
        snapshot_id=snap.snapshot_id,
        closed_at_ms=closed_at_ms,
        open_seconds=None if closed_at_ms is None else (closed_at_ms - opened_at_ms) / 1000,
    )
