"""Seeded snapshot histories and what the reference model of the drop rule
(``tests.unit.test_rule.Reference``) says the drops topic must hold for them."""

from __future__ import annotations

from collections.abc import Iterable

from bench.processor_harness import Event
from schemas import Snapshot


def reference_events(history: Iterable[Snapshot], ttl_ms: int) -> list[Event]:
    """What the drops topic must hold: the reference model per stream, in topic order."""
    from tests.unit.test_rule import Reference

    models: dict[str, Reference] = {}
    out: list[Event] = []
    for snap in history:
        ref = models.setdefault(snap.key, Reference(ttl_ms))
        opens, closes, _ = ref.step(snap)
        after = ref.opened_after
        out += [("open", snap.bucket_id, s, at, None, after[s]) for s, at in opens]
        out += [("close", snap.bucket_id, s, at, c, after[s]) for s, at, c in closes]
    return sorted(out)


def random_history(
    seed: int, streams: int, polls: int, start_ms: int = 1_000_000
) -> list[Snapshot]:
    """A long, seeded history of several streams: flapping slots, failures, parts."""
    import random

    from schemas import Failure
    from tests.unit.test_rule import UNIVERSE, snapshot

    rng = random.Random(seed)
    markers = random.Random(seed + 1)  # operators' rebaselines, now and then
    keys = sorted(UNIVERSE)
    out: list[Snapshot] = []
    present = [set(rng.sample(keys, 10)) for _ in range(streams)]
    for i in range(polls):
        for b in range(streams):
            polled = start_ms + i * 30_000 + b
            for k in rng.sample(keys, rng.randint(0, 3)):
                present[b] ^= {k}
            seen = sorted(present[b])
            failures: tuple[Failure, ...] = ()
            if rng.random() < 0.1:
                v = rng.randrange(5)
                failures = (Failure("venue", f"v{v}", "timeout"),)
                seen = [k for k in seen if k[0] != v]
            elif rng.random() < 0.05:
                failures = (Failure("page", "2", "429"),)
                seen = [k for k in seen if rng.random() < 0.5]
            kind = "baseline" if i == 0 or rng.random() < 0.02 else "poll"
            parts = rng.randint(1, 3)
            size = max(1, -(-len(seen) // parts))
            for p in range(parts):
                snap = snapshot(
                    f"s{b}-{i}",
                    polled,
                    [UNIVERSE[k] for k in seen[p * size : (p + 1) * size]],
                    kind=kind,
                    complete=not failures,
                    failures=failures,
                    part=p,
                    parts=parts,
                )
                out.append(_restream(snap, b))
            if markers.random() < 0.02:
                out.append(_restream(snapshot(f"r{b}-{i}", polled, [], kind="rebaseline"), b))
    return out


def _restream(snap: Snapshot, b: int) -> Snapshot:
    import dataclasses

    date = f"2026-12-{1 + b // 2:02d}"
    slot = "19:00" if b % 2 else "15:00"
    from schemas import bucket_id

    return dataclasses.replace(
        snap, bucket_id=bucket_id("nyc", date, slot), date=date, time_slot=slot
    )
