"""The drop rule (``domain.rule``) against a plain reference model, plus one example per clause.

``Reference`` is written from the rule's text alone, with Python sets and dicts: it shares no
code with ``domain.rule`` (the integration tests reuse it to predict the drops topic).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import rule, slotsets
from schemas import Failure, Slot, Snapshot, bucket_id, decode_snapshot, encode

TTL = 7_200_000
BUCKET = bucket_id("nyc", "2026-12-01", "19:00")

Open = tuple[str, int]  # (slot_id, opened_at_ms)
Close = tuple[str, int, int]  # (slot_id, opened_at_ms, closed_at_ms)


# ---------------------------------------------------------------------------- reference


@dataclass
class _Fetch:
    """The snapshot being assembled."""

    sid: str
    baseline: bool
    polled: int
    next_part: int = 0
    done: bool = False
    all_parts: bool = True
    says_complete: bool = True
    ids: set[str] = field(default_factory=set)
    venues: set[str] = field(default_factory=set)
    failed_venues: set[str] = field(default_factory=set)
    wide_failure: bool = False


class Reference:
    """One stream's drop rule, the plain way (ids are hex strings)."""

    def __init__(self, ttl_ms: int = TTL) -> None:
        self.ttl = ttl_ms
        self.reset()

    def reset(self) -> None:
        self.baseline: set[str] | None = None
        self.base_venues: set[str] = set()
        self.coverage_unknown = False
        self.unknown_venues: set[str] = set()
        self.prev: set[str] = set()
        self.seen: dict[str, int] = {}  # slot -> when reported
        self.open: dict[str, int] = {}  # slot -> opened_at
        self.last_polled = -1
        self.last_complete: int | None = None  # polled_at of the last complete fetch
        self.rebaseline = False  # an operator asked for a new baseline
        self.opened_after: dict[str, int | None] = {}  # reported slot -> its opened_after
        self.fetch: _Fetch | None = None

    def step(self, snap: Snapshot) -> tuple[list[Open], list[Close], bool]:
        """Apply one part: (opens, closes, delete)."""
        opens: list[Open] = []
        closes: list[Close] = []
        if snap.kind == "close":
            self.reset()
            return opens, closes, True
        if snap.kind == "rebaseline":
            self.rebaseline = True
            return opens, closes, False
        f = self.fetch
        if f is not None and f.sid == snap.snapshot_id:
            if f.done or snap.part < f.next_part:
                return opens, closes, False  # a part seen before
        elif snap.polled_at_ms < self.last_polled:
            return opens, closes, False  # an older fetch, late
        else:
            if f is not None and not f.done:
                self._end(f, last_part_arrived=False, closes=closes)
            # a baseline build never replaces a baseline: only an operator's rebaseline does
            f = self.fetch = _Fetch(
                snap.snapshot_id, self.baseline is None or self.rebaseline, snap.polled_at_ms
            )
            self.rebaseline = False
            self.last_polled = snap.polled_at_ms
            if f.baseline:
                self.baseline = set()
            self.seen = {s: t for s, t in self.seen.items() if f.polled - t < self.ttl}
        if snap.part != f.next_part:
            f.all_parts = False
        f.next_part = snap.part + 1
        if not snap.complete:
            f.says_complete = False
        for fail in snap.failures:
            if fail.scope == "venue":
                f.failed_venues.add(fail.ref)
            else:
                f.wide_failure = True
        venue_of = {s.slot_id: s.venue_id for s in snap.slots}
        curr = set(venue_of)
        assert self.baseline is not None
        if f.baseline:
            self.baseline |= curr
        else:
            for sid in sorted(curr):
                if sid in self.prev or sid in self.baseline or sid in self.seen:
                    continue
                venue = venue_of[sid]
                first_sight = venue in self.unknown_venues or (
                    self.coverage_unknown and venue not in self.base_venues
                )
                if first_sight:
                    self.baseline.add(sid)
                else:
                    opens.append((sid, f.polled))
                    self.seen[sid] = f.polled
                    self.open[sid] = f.polled
                    self.opened_after[sid] = self.last_complete
        f.ids |= curr
        f.venues |= set(venue_of.values())
        self.prev |= curr
        if snap.part == snap.parts - 1:
            self._end(f, last_part_arrived=True, closes=closes)
        return opens, closes, False

    def _end(self, f: _Fetch, last_part_arrived: bool, closes: list[Close]) -> None:
        f.done = True
        every_part = last_part_arrived and f.all_parts
        complete = every_part and f.says_complete
        if f.baseline:
            self.base_venues = set(f.venues)
            self.unknown_venues = f.failed_venues - f.venues
            only_venues_failed = every_part and not f.wide_failure and bool(f.failed_venues)
            self.coverage_unknown = not complete and not only_venues_failed
        else:
            self.base_venues |= f.venues
            self.unknown_venues -= f.venues
        if complete:
            self.last_complete = f.polled
            self.coverage_unknown = False
            self.unknown_venues = set()
            for sid in list(self.open):
                if sid not in f.ids:
                    closes.append((sid, self.open.pop(sid), f.polled))
            self.prev = set(f.ids)


# ---------------------------------------------------------------------------- helpers


def slot(venue: int, minute: int) -> Slot:
    return Slot(
        provider="resy",
        venue_id=f"v{venue}",
        venue_name=f"Venue {venue}",
        actual_time=f"2026-12-01 {18 + minute // 4}:{(minute % 4) * 15:02d}:00",
        time_zone="EST5EDT",
        neighborhood="Soho",
        seating_types=("Dining Room",),
        party_min=2,
        party_max=4,
        booking=f"https://resy.example/v{venue}/{minute}",
    )


VENUES, MINUTES = 5, 6
UNIVERSE = {(v, m): slot(v, m) for v in range(VENUES) for m in range(MINUTES)}


def snapshot(
    sid: str,
    polled: int,
    slots: list[Slot],
    *,
    kind: str = "poll",
    complete: bool = True,
    failures: tuple[Failure, ...] = (),
    part: int = 0,
    parts: int = 1,
) -> Snapshot:
    return Snapshot(
        snapshot_id=sid,
        kind=kind,  # type: ignore[arg-type]
        market="nyc",
        provider="resy",
        bucket_id=BUCKET,
        date="2026-12-01",
        time_slot="19:00",
        polled_at_ms=polled,
        complete=complete,
        part=part,
        parts=parts,
        failures=failures,
        slots=tuple(slots),
    )


class Pair:
    """The implementation and the reference side by side."""

    def __init__(self, ttl_ms: int = TTL) -> None:
        self.ttl = ttl_ms
        self.state = rule.BucketState()
        self.ref = Reference(ttl_ms)

    def step(self, snap: Snapshot) -> tuple[list[Open], list[Close], bool]:
        # the rule sees what the processor sees: the part through the wire format (v2)
        out = rule.apply(self.state, decode_snapshot(encode(snap)), self.ttl)
        opens = [(s.slot_id, at) for s, at in out.opened]
        closes = [(o.slot["slot_id"], o.opened_at_ms, at) for o, at in out.closed]
        if out.delete:
            self.state = rule.BucketState()
        expected = self.ref.step(snap)
        assert (sorted(opens), sorted(closes), out.delete) == (
            sorted(expected[0]),
            sorted(expected[1]),
            expected[2],
        ), f"part {snap.snapshot_id}#{snap.part}"
        assert len(set(opens)) == len(opens)
        # the parts the store keeps instead of the merged arrays say the same
        bs = self.state
        assert slotsets.union_all(bs.prev_parts).tolist() == bs.prev.tolist()
        if bs.baseline is not None:
            assert slotsets.union_all(bs.baseline_parts).tolist() == bs.baseline.tolist()
        events = rule.events(snap, out)
        assert [e.event for e in events] == ["open"] * len(opens) + ["close"] * len(closes)
        # every open and close says when the slot was last known absent
        for e in events:
            assert e.opened_after_ms == self.ref.opened_after[e.slot_id], e.slot_id
        return opens, closes, out.delete


# ---------------------------------------------------------------------------- property


@st.composite
def fetches(draw: st.DrawFn) -> list[Snapshot]:
    """A history of one stream: fetches (in parts, some failing) and bucket closes."""
    n = draw(st.integers(1, 14))
    out: list[Snapshot] = []
    now = 1_000_000
    present: set[tuple[int, int]] = set(
        draw(st.sets(st.sampled_from(sorted(UNIVERSE)), max_size=12))
    )
    for i in range(n):
        what = draw(st.sampled_from(["poll"] * 6 + ["baseline", "close", "stale", "rebaseline"]))
        if what in ("close", "rebaseline"):
            out.append(snapshot(f"c{i}", now, [], kind=what))
            continue
        step = draw(st.sampled_from([0, 30_000, 60_000, TTL // 2, TTL - 1, TTL, TTL + 30_000]))
        polled = now - 45_000 if what == "stale" else now + step
        now = max(now, polled)
        # flapping: toggle a few slots
        for key in draw(st.lists(st.sampled_from(sorted(UNIVERSE)), max_size=6)):
            present ^= {key}
        seen = set(present)
        failures: list[Failure] = []
        for v in draw(st.sets(st.integers(0, VENUES - 1), max_size=2)):
            failures.append(Failure("venue", f"v{v}", "timeout"))
            seen -= {k for k in seen if k[0] == v}
        if draw(st.integers(0, 5)) == 0:
            failures.append(Failure(draw(st.sampled_from(["page", "provider"])), "2", "429"))
            seen = {k for k in seen if draw(st.booleans())}
        complete = not failures if draw(st.integers(0, 9)) else draw(st.booleans())
        slots = [UNIVERSE[k] for k in sorted(seen)]
        parts = draw(st.integers(1, 3))
        split = sorted(draw(st.lists(st.integers(0, len(slots)), min_size=parts - 1,
                                     max_size=parts - 1)))  # fmt: skip
        bounds = [0, *split, len(slots)]
        kind = "baseline" if what == "baseline" else "poll"
        chunks = [
            snapshot(
                f"s{i}",
                polled,
                slots[bounds[p] : bounds[p + 1]],
                kind=kind,
                complete=complete,
                failures=tuple(failures) if p == parts - 1 or draw(st.booleans()) else (),
                part=p,
                parts=parts,
            )
            for p in range(parts)
        ]
        delivery = draw(st.sampled_from(["all"] * 5 + ["truncated", "gap", "duplicate"]))
        if delivery == "truncated" and parts > 1:
            chunks = chunks[: draw(st.integers(1, parts - 1))]
        elif delivery == "gap" and parts > 2:
            del chunks[1]
        elif delivery == "duplicate":
            chunks.insert(draw(st.integers(1, len(chunks))), chunks[0])
        out.extend(chunks)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fetches())
def test_rule_equals_reference(history: list[Snapshot]) -> None:
    pair = Pair()
    for snap in history:
        pair.step(snap)


# ---------------------------------------------------------------------------- clauses


def S(*keys: tuple[int, int]) -> list[Slot]:
    return [UNIVERSE[k] for k in keys]


def test_first_snapshot_is_the_baseline_and_emits_nothing() -> None:
    p = Pair()
    assert p.step(snapshot("a", 1, S((0, 0), (0, 1)), kind="poll")) == ([], [], False)
    opens, _, _ = p.step(snapshot("b", 2, S((0, 0), (0, 1), (1, 1))))
    assert opens == [(UNIVERSE[1, 1].slot_id, 2)]


def test_drop_is_new_since_prev_and_not_in_baseline() -> None:
    p = Pair()
    p.step(snapshot("a", 1, S((0, 0)), kind="baseline"))
    p.step(snapshot("b", 2, S()))  # (0,0) closes
    opens, _, _ = p.step(snapshot("c", 3, S((0, 0))))
    assert opens == []  # back, but it is in the baseline
    opens, _, _ = p.step(snapshot("d", 4, S((0, 0), (2, 2))))
    assert opens == [(UNIVERSE[2, 2].slot_id, 4)]
    opens, _, _ = p.step(snapshot("e", 5, S((0, 0), (2, 2))))
    assert opens == []  # still there: in prev


def test_seen_suppresses_a_flapping_slot_until_it_expires() -> None:
    p = Pair()
    p.step(snapshot("a", 0, S(), kind="baseline"))
    sid = UNIVERSE[1, 1].slot_id
    assert p.step(snapshot("b", 1000, S((1, 1))))[0] == [(sid, 1000)]
    assert p.step(snapshot("c", 2000, S()))[1] == [(sid, 1000, 2000)]
    assert p.step(snapshot("d", 3000, S((1, 1))))[0] == []  # flapped back: seen
    p.step(snapshot("e", 4000, S()))
    assert p.step(snapshot("f", 1000 + TTL - 1, S((1, 1))))[0] == []  # still seen
    p.step(snapshot("g", 1000 + TTL, S()))
    assert p.step(snapshot("h", 1000 + TTL + 1, S((1, 1))))[0] == [(sid, 1000 + TTL + 1)]


def test_prev_never_expires_by_time() -> None:
    p = Pair()
    p.step(snapshot("a", 0, S(), kind="baseline"))
    p.step(snapshot("b", 1, S((1, 1))))
    assert p.step(snapshot("c", 10 * TTL, S((1, 1))))[0] == []  # after an outage


def test_incomplete_snapshot_only_adds_to_prev() -> None:
    p = Pair()
    p.step(snapshot("a", 0, S(), kind="baseline"))
    p.step(snapshot("b", 1, S((1, 1), (2, 2))))
    fail = (Failure("page", "2", "429"),)
    opens, closes, _ = p.step(snapshot("c", 2, S((1, 1)), complete=False, failures=fail))
    assert (opens, closes) == ([], [])  # (2,2) is unknown, not closed
    assert p.step(snapshot("d", 3, S((1, 1), (2, 2))))[0] == []  # nor reopened


def test_a_failed_venue_gets_its_first_sighting_as_baseline() -> None:
    p = Pair()
    fail = (Failure("venue", "v3", "timeout"),)
    p.step(snapshot("a", 0, S((1, 1)), kind="baseline", complete=False, failures=fail))
    opens, _, _ = p.step(snapshot("b", 1, S((1, 1), (3, 0), (3, 1), (2, 0))))
    assert opens == [(UNIVERSE[2, 0].slot_id, 1)]  # v2 was seen (empty); v3 was unknown
    opens, _, _ = p.step(snapshot("c", 2, S((1, 1), (3, 0), (3, 1), (3, 2), (2, 0))))
    assert opens == [(UNIVERSE[3, 2].slot_id, 2)]


def test_a_failed_page_makes_every_unseen_venue_first_sighting() -> None:
    p = Pair()
    fail = (Failure("page", "2", "timeout"),)
    p.step(snapshot("a", 0, S((1, 1)), kind="baseline", complete=False, failures=fail))
    # an incomplete poll: v2 seen for the first time (absorbed), v1 new slot drops
    opens, _, _ = p.step(snapshot("b", 1, S((1, 1), (1, 2), (2, 0)), complete=False))
    assert opens == [(UNIVERSE[1, 2].slot_id, 1)]
    # a complete poll: v3's first sighting absorbed, then coverage is known
    opens, _, _ = p.step(snapshot("c", 2, S((1, 1), (1, 2), (2, 0), (3, 0))))
    assert opens == []
    opens, _, _ = p.step(snapshot("d", 3, S((1, 1), (1, 2), (2, 0), (3, 0), (4, 0))))
    assert opens == [(UNIVERSE[4, 0].slot_id, 3)]


def test_close_reports_how_long_the_slot_was_open() -> None:
    p = Pair()
    p.step(snapshot("a", 0, S(), kind="baseline"))
    p.step(snapshot("b", 60_000, S((1, 1))))
    _, closes, _ = p.step(snapshot("c", 240_000, S()))
    assert closes == [(UNIVERSE[1, 1].slot_id, 60_000, 240_000)]
    out = rule.Outcome(closed=[(rule.OpenSlot(UNIVERSE[1, 1].to_dict(), 60_000), 240_000)])
    (event,) = rule.events(snapshot("c", 240_000, S()), out)
    assert (event.event, event.open_seconds, event.closed_at_ms) == ("close", 180.0, 240_000)
    assert event.venue_name == "Venue 1" and event.dedupe_key.endswith("|close")


def test_parts_decide_drops_part_by_part_and_replace_prev_at_the_last() -> None:
    p = Pair()
    p.step(snapshot("a", 0, S((1, 1), (2, 2)), kind="baseline"))
    p.step(snapshot("b", 1, S((3, 3))))
    opens, _, _ = p.step(snapshot("c", 2, S((1, 1), (4, 4)), part=0, parts=2))
    assert opens == [(UNIVERSE[4, 4].slot_id, 2)]  # out before the last part
    opens, closes, _ = p.step(snapshot("c", 2, S((2, 2)), part=1, parts=2))
    assert opens == [] and closes == [(UNIVERSE[3, 3].slot_id, 1, 2)]


def test_missing_part_makes_the_snapshot_incomplete() -> None:
    p = Pair()
    p.step(snapshot("a", 0, S((1, 1)), kind="baseline"))
    p.step(snapshot("b", 1, S((3, 3))))
    p.step(snapshot("c", 2, S((1, 1)), part=0, parts=3))
    _, closes, _ = p.step(snapshot("c", 2, S(), part=2, parts=3))
    assert closes == []  # part 1 never came: (3,3) is unknown


def test_abandoned_partial_baseline_does_not_burst() -> None:
    p = Pair()
    p.step(snapshot("a", 0, S((1, 1)), kind="baseline", part=0, parts=2))  # part 1 never comes
    opens, _, _ = p.step(snapshot("b", 1, S((1, 1), (2, 0), (2, 1))))
    assert opens == []  # v2 was on the lost part: its first sighting is its baseline


def test_stale_and_duplicate_parts_are_ignored() -> None:
    p = Pair()
    p.step(snapshot("a", 0, S(), kind="baseline"))
    p.step(snapshot("b", 100, S((1, 1))))
    assert p.step(snapshot("old", 50, S()))[1] == []  # an older fetch arriving late
    assert p.step(snapshot("b", 100, S((1, 1))))[0] == []
    out = rule.apply(p.state, snapshot("old", 50, S()), TTL)
    assert out.ignored == "stale"


def test_a_baseline_build_never_replaces_the_baseline() -> None:
    # a producer restarted right after the slide, or a duplicated build: the stream keeps the
    # baseline of its entry into the window, and the build is diffed as a poll
    p = Pair()
    p.step(snapshot("a", 0, S((1, 1)), kind="baseline"))
    p.step(snapshot("b", 1, S()))  # (1,1), of the baseline, is closed
    opens, _, _ = p.step(snapshot("c", 2, S((2, 2)), kind="baseline"))
    assert opens == [(UNIVERSE[2, 2].slot_id, 2)]  # opened since b: a drop, not baseline
    opens, _, _ = p.step(snapshot("d", 3, S((1, 1), (2, 2))))
    assert opens == []  # (1,1) came back: it is in the baseline


def test_an_operator_rebaseline_makes_the_next_snapshot_the_baseline() -> None:
    p = Pair()
    p.step(snapshot("a", 0, S((1, 1)), kind="baseline"))
    p.step(snapshot("b", 1, S()))
    assert p.step(snapshot("r", 1, S(), kind="rebaseline")) == ([], [], False)
    assert p.state.rebaseline
    opens, _, _ = p.step(snapshot("c", 2, S((2, 2))))
    assert opens == []  # the new baseline
    assert not p.state.rebaseline
    opens, _, _ = p.step(snapshot("d", 3, S((1, 1), (2, 2))))
    assert opens == [(UNIVERSE[1, 1].slot_id, 3)]  # no longer in the baseline


def test_a_rebaseline_during_a_snapshot_applies_to_the_next() -> None:
    p = Pair()
    p.step(snapshot("a", 0, S(), kind="baseline"))
    p.step(snapshot("b", 1, S((1, 1)), part=0, parts=2))
    p.step(snapshot("r", 1, S(), kind="rebaseline"))
    opens, _, _ = p.step(snapshot("b", 1, S((2, 2)), part=1, parts=2))
    assert opens == [(UNIVERSE[2, 2].slot_id, 1)]  # b is still a poll
    assert p.step(snapshot("c", 2, S((1, 1), (2, 2), (3, 3))))[0] == []  # c: the baseline


def test_opened_after_is_the_last_complete_poll() -> None:
    p = Pair()
    first = snapshot("a", 1000, S((1, 1)))  # a stream never seen: its first poll is its baseline
    p.step(first)
    fail = (Failure("page", "2", "timeout"),)
    p.step(snapshot("b", 31_000, S((1, 1)), complete=False, failures=fail))
    # the producer was down from 31 s to 200 s: the first poll after the gap reports what
    # opened meanwhile, after the last complete poll (a, at 1 s)
    snap = snapshot("c", 200_000, S((1, 1), (2, 2)))
    out = rule.apply(p.state, snap, TTL)
    (event,) = rule.events(snap, out)
    assert (event.opened_at_ms, event.opened_after_ms) == (200_000, 1000)
    snap = snapshot("d", 230_000, S((1, 1), (3, 3)))
    out = rule.apply(p.state, snap, TTL)
    opened, closed = rule.events(snap, out)
    assert (opened.slot_id, opened.opened_after_ms) == (UNIVERSE[3, 3].slot_id, 200_000)
    assert (closed.event, closed.opened_after_ms) == ("close", 1000)  # as when it opened


def test_opened_after_is_unknown_before_a_complete_snapshot() -> None:
    p = Pair()
    fail = (Failure("page", "2", "timeout"),)
    p.step(snapshot("a", 0, S((1, 1)), complete=False, failures=fail))
    snap = snapshot("b", 1, S((1, 1), (1, 2)), complete=False, failures=fail)
    out = rule.apply(p.state, snap, TTL)
    (event,) = rule.events(snap, out)
    assert event.opened_after_ms is None


def test_close_record_deletes_the_state() -> None:
    p = Pair()
    p.step(snapshot("a", 0, S((1, 1)), kind="baseline"))
    assert p.step(snapshot("z", 1, S(), kind="close"))[2] is True
    assert p.step(snapshot("b", 2, S((2, 2))))[0] == []  # a fresh bucket: baseline again


def test_events_carry_the_payload() -> None:
    p = Pair()
    p.step(snapshot("a", 0, S(), kind="baseline"))
    snap = snapshot("b", 120_000, S((1, 1)))
    out = rule.apply(p.state, snap, TTL)
    (event,) = rule.events(snap, out)
    s = UNIVERSE[1, 1]
    expect: dict[str, Any] = {
        "event": "open",
        "bucket_id": BUCKET,
        "slot_id": s.slot_id,
        "venue_name": "Venue 1",
        "neighborhood": "Soho",
        "time_zone": "EST5EDT",
        "booking": s.booking,
        "opened_at_ms": 120_000,
        "dedupe_key": f"{BUCKET}|{s.slot_id}|2",
    }
    assert {k: event.to_dict()[k] for k in expect} == expect


def test_open_and_close_say_how_the_slot_was_read() -> None:
    p = Pair()
    p.step(snapshot("a", 0, S(), kind="baseline"))
    found = replace(UNIVERSE[1, 1], read_via="fallback")
    snap = decode_snapshot(encode(snapshot("b", 120_000, [found, UNIVERSE[2, 1]])))
    out = rule.apply(p.state, snap, TTL)
    opened = {e.venue_id: e.read_via for e in rule.events(snap, out)}
    assert opened == {found.venue_id: "fallback", UNIVERSE[2, 1].venue_id: "search"}
    gone = snapshot("c", 240_000, [])
    closes = rule.events(gone, rule.apply(p.state, gone, TTL))
    assert {e.venue_id: e.read_via for e in closes} == opened  # the payload kept at the open
