"""Runtime helpers every long-running process shares: restart with backoff, GC tuning."""

from __future__ import annotations

import gc
import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Waits between restarts of something that failed: ``first``, twice that, four times,
    ... at most ``most`` seconds. A run of more than ``calm`` seconds before it failed was a
    fresh failure, not a crash loop: the waits start over."""

    first: float
    most: float
    calm: float | None = None
    failures: int = 0  # in a row, since the waits last started over

    def next(self, ran_s: float = 0.0) -> float:
        """The wait after a failure of a run that lasted ``ran_s`` seconds."""
        if self.calm is not None and ran_s > self.calm:
            self.failures = 0
        delay = float(min(self.most, self.first * 2 ** min(self.failures, 32)))
        self.failures += 1
        return delay


def full_jitter(attempt: int, first: float, most: float, rng: random.Random) -> float:
    """The pause before retry number ``attempt + 1`` of a call that failed ``attempt + 1``
    times in a row ("full jitter"): uniform in ``[0, min(most, first · 2^attempt)]``, so
    clients that failed together do not retry together."""
    return rng.uniform(0.0, min(most, first * 2.0 ** min(attempt, 64)))


def tune_gc(young: int, middle: int = 10, old: int = 10) -> None:
    """Fewer and shorter garbage collections for a long-running process (call once, after its
    imports and start-up objects): what exists now is frozen out of every collection, and
    collections run after ``young`` allocations instead of CPython's 700. Each process kind
    keeps its own measured thresholds next to its ``run()``."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, middle, old)
