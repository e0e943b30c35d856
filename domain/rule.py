"""The drop rule, as one pure function over one bucket's state.

For one stream (a bucket as seen by one provider), with ``curr`` the slots of a snapshot:

    drops = (curr − prev) ∩ (curr − baseline) − seen

- A bucket emits nothing until it has a baseline. Its first snapshot, of any kind, becomes
  the baseline (the baseline build of a bucket entering the window, or the first poll of a
  stream the state has never seen). A baseline is never replaced by the producer: a later
  ``kind="baseline"`` snapshot (a producer restarted right after the slide, a duplicate) is
  diffed as a poll. Only an operator's ``kind="rebaseline"`` marker (``drops rebaseline``)
  makes the stream's next snapshot its new baseline.
- Each drop carries ``opened_after_ms``: the event time of the stream's last complete
  snapshot, which did not have the slot (prev holds all it had); after an outage of the
  producer it is the last poll before the gap. None while the stream has had no complete
  snapshot.
- ``seen`` keeps each reported slot for ``seen_ttl_ms`` (event time: the snapshot's
  ``polled_at_ms``), so a flapping slot is reported once. ``prev`` never expires by time.
- Unknown is never empty: a complete snapshot replaces ``prev``; an incomplete one only adds
  to it, so a failed page or venue never makes slots look closed (and reopen as drops).
- A venue the baseline could not see (its fetch failed, or a page failed) gets its first
  successful sighting as its baseline instead of a burst of drops.
- A reported slot missing from a later complete snapshot is closed, with how long it was open.
- A snapshot arrives in parts (Kafka's record limit); drops are decided part by part, and
  ``prev`` is replaced when the last part of a complete snapshot arrives. A part older than
  the last snapshot (a slower, earlier fetch) is ignored, and so is a part seen before.

Precisely (the reference model in ``tests/unit/test_rule.py`` says the same with sets):

- A snapshot is *complete* when every part ``0..parts-1`` arrived, in order, each saying
  ``complete``. Failures are collected over all its parts. A snapshot whose last part never
  arrives ends, incomplete, when the next snapshot of the stream starts.
- ``seen`` entries live while ``polled_at_ms − reported_at < seen_ttl_ms``.
- Baseline coverage: after a complete baseline every venue is known. After a baseline whose
  only failures are named venues (all parts present), those venues are unknown. Otherwise
  (a page or provider failed, a part is missing, or nothing was said) coverage is unknown:
  any venue the baseline did not see is unknown. A new slot of an unknown venue goes into the
  baseline instead of being reported, for the whole of the first snapshot that shows the
  venue; a complete poll makes every venue known.
- Closes come from any complete snapshot (a baseline build too); the close carries the
  payload kept when the slot was reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from domain import booking, slotsets
from domain.slotsets import EMPTY, IdArray
from drops.errors import InvariantError
from schemas import DropEvent, Slot, Snapshot, SnapshotView, dedupe_key
from schemas.records import READ_SEARCH

Mode = Literal["baseline", "poll"]


@dataclass(slots=True)
class OpenSlot:
    """A reported slot that is still open: enough to describe its close."""

    slot: dict[str, Any]
    opened_at_ms: int
    opened_after_ms: int | None = None


@dataclass(slots=True)
class BucketState:
    baseline: IdArray | None = None
    baseline_venues: set[str] = field(default_factory=set)
    baseline_partial: bool = False  # the baseline's coverage is unknown (page/provider failed)
    unknown_venues: set[str] = field(default_factory=set)  # venues the baseline could not see
    prev: IdArray = field(default_factory=lambda: EMPTY)
    # how baseline and prev were built: arrays (snapshot parts, absorbed ids) whose union they
    # are, so a store can keep them as references to parts it already holds instead of
    # writing them again when a snapshot ends (see processors/state.py); never mutated
    baseline_parts: list[IdArray] = field(default_factory=list)
    prev_parts: list[IdArray] = field(default_factory=list)
    seen_ids: IdArray = field(default_factory=lambda: EMPTY)  # sorted; seen_at is aligned with it
    seen_at: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    open: dict[str, OpenSlot] = field(default_factory=dict)
    last_polled_ms: int = -1  # polled_at_ms of the snapshot being (or last) assembled
    last_complete_ms: int = -1  # polled_at_ms of the last snapshot that ended complete
    rebaseline: bool = False  # an operator asked: the next snapshot becomes the baseline
    # the snapshot being assembled from its parts
    acc_id: str = ""
    acc_mode: Mode = "poll"
    acc: list[IdArray] = field(default_factory=list)  # the ids of each part so far
    # the venues of each part so far (in a poll, only those the baseline has not seen)
    acc_venues: list[set[str]] = field(default_factory=list)
    acc_complete: bool = True  # every part so far says complete
    acc_gap: bool = False  # a part is missing
    acc_next: int = 0  # the part expected next
    acc_done: bool = True
    acc_failed_venues: set[str] = field(default_factory=set)
    acc_wide_failure: bool = False  # a page or provider failed: coverage unknown


@dataclass(slots=True)
class Outcome:
    opened: list[tuple[Slot, int]] = field(default_factory=list)  # (slot, opened_at_ms)
    opened_after_ms: int | None = None  # of every slot in ``opened`` (see the module doc)
    closed: list[tuple[OpenSlot, int]] = field(default_factory=list)  # (open slot, closed_at)
    delete: bool = False  # the bucket left the window: drop its state
    ignored: str = ""  # why the part changed nothing ("stale", "duplicate")
    absorbed: int = 0  # slots of unseen venues taken into the baseline


def slot_ints(slots: Sequence[Slot]) -> IdArray:
    """The ids of ``slots`` as uint64, in the order given (not deduplicated)."""
    return np.fromiter((int(s.slot_id, 16) for s in slots), dtype=np.uint64, count=len(slots))


def apply(state: BucketState, snap: SnapshotView | Snapshot, seen_ttl_ms: int) -> Outcome:
    """Apply one snapshot part to ``state`` (mutated in place) and say what happened.

    Works on the part's id array (set algebra only); a slot's payload is decoded only when it
    is reported (:meth:`SnapshotView.slot`, which checks its id). A payload that does not
    decode raises :class:`schemas.SchemaError` with ``state`` half-changed: the caller must
    drop it (the processor reloads the stored state and dead-letters the record).
    """
    if seen_ttl_ms <= 0:
        raise ValueError("seen_ttl_ms must be positive")
    if isinstance(snap, Snapshot):
        snap = SnapshotView.of(snap)
    out = Outcome()
    if snap.kind == "close":
        out.delete = True
        return out
    if snap.kind == "rebaseline":  # the next snapshot started becomes the baseline
        state.rebaseline = True
        return out
    if snap.snapshot_id == state.acc_id:
        if state.acc_done or snap.part < state.acc_next:
            out.ignored = "duplicate"
            return out
    elif snap.polled_at_ms < state.last_polled_ms:
        out.ignored = "stale"
        return out
    else:
        if not state.acc_done:  # the previous snapshot never got its last part
            _finish(state, out, whole=False)
        _start(state, snap, seen_ttl_ms)

    if snap.part != state.acc_next:
        state.acc_gap = True
    state.acc_next = snap.part + 1
    state.acc_complete = state.acc_complete and snap.complete
    for f in snap.failures:
        if f.scope == "venue":
            state.acc_failed_venues.add(f.ref)
        else:
            state.acc_wide_failure = True

    now = state.last_polled_ms
    raw = snap.ids
    curr = slotsets.from_array(raw)
    venues = snap.venue_ids()
    state.acc.append(curr)
    # a poll needs only the venues the baseline has not seen (baseline_venues gains them at the
    # end; unknown_venues, disjoint from baseline_venues, loses those among them): a few, not
    # the thousands of a part, for the store to keep
    state.acc_venues.append(
        venues if state.acc_mode == "baseline" else venues - state.baseline_venues
    )

    # a baseline build: its parts become the baseline when the snapshot ends (_finish)
    if state.acc_mode == "poll":
        if state.baseline is None:
            raise InvariantError("a poll accumulated before the stream's baseline")
        new = slotsets.minus(slotsets.minus(curr, state.prev), state.baseline)
        new = slotsets.minus(new, state.seen_ids)  # expired entries left at _start
        if len(new):
            _report(state, snap, raw, new, now, out)
    # prev takes this part's ids when the snapshot ends; until then a slot repeated in a
    # later part is kept from a second report by seen (reported) or the baseline (absorbed)

    if snap.is_last_part:
        _finish(state, out, whole=True)
    return out


def _report(
    state: BucketState, snap: SnapshotView, raw: IdArray, new: IdArray, now: int, out: Outcome
) -> None:
    # the first row of each new id: rows whose id is new, in row order (few: the drops)
    rows = np.flatnonzero(slotsets.contains(new, raw))
    where: dict[int, int] = {}
    for i, sid in zip(rows.tolist(), raw[rows].tolist(), strict=True):
        where.setdefault(sid, i)
    absorbed: list[int] = []
    reported: list[int] = []
    out.opened_after_ms = state.last_complete_ms if state.last_complete_ms >= 0 else None
    for sid in new.tolist():
        i = where[sid]
        venue = snap.venue_id(i)
        if venue in state.unknown_venues or (
            state.baseline_partial and venue not in state.baseline_venues
        ):
            absorbed.append(sid)
            continue
        slot = snap.slot(i)
        reported.append(sid)
        out.opened.append((slot, now))
        state.open[slot.slot_id] = OpenSlot(slot.to_dict(), now, out.opened_after_ms)
    if absorbed:
        if state.baseline is None:
            raise InvariantError("venues absorbed into a missing baseline")
        extra = slotsets.from_ints(absorbed)
        state.baseline = slotsets.union(state.baseline, extra)
        state.baseline_parts = _parts(state.baseline, [*state.baseline_parts, extra])
        out.absorbed += len(absorbed)
    if reported:
        _remember_seen(state, slotsets.from_ints(reported), now)


def _start(state: BucketState, snap: SnapshotView, seen_ttl_ms: int) -> None:
    state.acc_id = snap.snapshot_id
    # a baseline only for a stream without one, or when an operator asked for a new one
    state.acc_mode = "baseline" if state.baseline is None or state.rebaseline else "poll"
    state.rebaseline = False
    state.acc = []
    state.acc_venues = []
    state.acc_complete = True
    state.acc_gap = False
    state.acc_next = 0
    state.acc_done = False
    state.acc_failed_venues = set()
    state.acc_wide_failure = False
    state.last_polled_ms = snap.polled_at_ms
    if state.acc_mode == "baseline":
        state.baseline = EMPTY
        state.baseline_parts = []
    keep = state.seen_at > snap.polled_at_ms - seen_ttl_ms
    if not keep.all():
        state.seen_ids, state.seen_at = state.seen_ids[keep], state.seen_at[keep]


def _remember_seen(state: BucketState, ids: IdArray, now: int) -> None:
    keep = ~slotsets.contains(ids, state.seen_ids)  # a renewal replaces its old entry
    merged = np.concatenate([state.seen_ids[keep], ids])
    times = np.concatenate([state.seen_at[keep], np.full(len(ids), now, dtype=np.int64)])
    order = np.argsort(merged, kind="stable")
    state.seen_ids, state.seen_at = merged[order], times[order]


def _finish(state: BucketState, out: Outcome, whole: bool) -> None:
    """End the snapshot being assembled; ``whole``: its last part arrived."""
    state.acc_done = True
    ids = slotsets.union_all(state.acc)
    venues: set[str] = set().union(*state.acc_venues)
    all_parts = whole and not state.acc_gap
    complete = all_parts and state.acc_complete
    if state.acc_mode == "baseline":
        state.baseline = ids
        state.baseline_parts = list(state.acc)
        state.baseline_venues = venues
        state.unknown_venues = state.acc_failed_venues - venues
        # every part here and only venues failed: the unseen venues are exactly those
        known = all_parts and not state.acc_wide_failure and bool(state.acc_failed_venues)
        state.baseline_partial = not complete and not known
    else:
        state.baseline_venues |= venues
        state.unknown_venues -= venues
    if complete:
        state.last_complete_ms = state.last_polled_ms
        state.baseline_partial = False
        state.unknown_venues = set()
        if state.open:
            keys = list(state.open)
            opened = np.array([int(k, 16) for k in keys], dtype=np.uint64)
            present = slotsets.contains(ids, opened)
            for sid, here in zip(keys, present.tolist(), strict=True):
                if not here:
                    out.closed.append((state.open.pop(sid), state.last_polled_ms))
        state.prev = ids
        state.prev_parts = list(state.acc)
    else:
        prev = slotsets.union(state.prev, ids)  # unknown is never empty
        if prev is not state.prev:  # (the same object: nothing new)
            state.prev = prev
            state.prev_parts = _parts(prev, [*state.prev_parts, *state.acc])
    state.acc = []
    state.acc_venues = []
    state.acc_failed_venues = set()


MAX_PARTS = 64
DEFAULT_PARTY = 2  # the party size a drop's booking link asks for unless told


def _parts(whole: IdArray, parts: list[IdArray]) -> list[IdArray]:
    """``parts`` (whose union is ``whole``), or ``[whole]`` once they hold too many or too much
    (incomplete snapshots add parts; a complete one starts over)."""
    if len(parts) > MAX_PARTS or sum(len(p) for p in parts) > 2 * len(whole) + 65_536:
        return [whole]
    return parts


def events(
    snap: SnapshotView | Snapshot, out: Outcome, party_size: int = DEFAULT_PARTY
) -> list[DropEvent]:
    """The drop records of one outcome, in a stable order (opens, then closes).
    ``party_size`` is the one their booking links ask for (moved into each slot's range)."""
    after = out.opened_after_ms
    records = [
        _event("open", snap, s.to_dict(), at, None, after, party_size) for s, at in out.opened
    ]
    records += [
        _event("close", snap, o.slot, o.opened_at_ms, closed, o.opened_after_ms, party_size)
        for o, closed in out.closed
    ]
    return records


def _event(
    kind: Literal["open", "close"],
    snap: SnapshotView | Snapshot,
    slot: dict[str, Any],
    opened_at_ms: int,
    closed_at_ms: int | None,
    opened_after_ms: int | None,
    party_size: int,
) -> DropEvent:
    slug = str(slot.get("venue_slug") or "")  # payloads kept before the fields: none
    city = str(slot.get("venue_city") or "")
    link = booking.booking_url(
        snap.provider,
        slot["venue_id"],
        slug,
        city,
        slot["actual_time"],
        booking.link_party_size(slot["party_min"], slot["party_max"], party_size),
    )
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
        opened_after_ms=opened_after_ms,
        read_via=slot.get("read_via", READ_SEARCH),  # payloads kept before the field: search
        venue_slug=slug,
        venue_city=city,
        booking_url=link,
    )
