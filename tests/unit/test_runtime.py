"""The shared runtime helpers: one restart-with-backoff, one GC tuning."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from drops.runtime import Backoff, full_jitter

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = (
    "drops",
    "schemas",
    "domain",
    "store",
    "producers",
    "processors",
    "sinks",
    "api",
    "delivery",
)


def reference(first: float, most: float, calm: float | None, runs: list[float]) -> list[float]:
    """The loop the sink thread had: a delay that doubles after each wait, back to ``first``
    after a run longer than ``calm``."""
    out: list[float] = []
    delay = first
    for ran in runs:
        if calm is not None and ran > calm:
            delay = first
        out.append(delay)
        delay = min(delay * 2, most)
    return out


@given(
    first=st.floats(0.01, 5.0),
    factor=st.integers(1, 200),
    calm=st.one_of(st.none(), st.floats(1.0, 600.0)),
    runs=st.lists(st.floats(0.0, 1000.0), max_size=60),
)
def test_backoff_matches_the_doubling_loop(
    first: float, factor: int, calm: float | None, runs: list[float]
) -> None:
    most = first * factor
    backoff = Backoff(first, most, calm=calm)
    got = [backoff.next(ran) for ran in runs]
    want = reference(first, most, calm, runs)
    assert got == [min(w, most) for w in want]
    assert all(first <= d <= most for d in got)


@given(
    attempt=st.integers(0, 80),
    first=st.floats(0.001, 10.0),
    factor=st.integers(1, 1000),
    seed=st.integers(0, 2**32),
)
def test_full_jitter_is_uniform_under_the_doubling_cap(
    attempt: int, first: float, factor: int, seed: int
) -> None:
    most = first * factor
    cap = first  # the plain model: double until the cap
    for _ in range(attempt):
        cap = min(cap * 2, most)
    cap = min(cap, most)
    got = full_jitter(attempt, first, most, random.Random(seed))
    assert got == random.Random(seed).uniform(0.0, cap)
    assert 0.0 <= got <= most


def test_the_stages_use_the_one_gc_tuning_and_the_one_backoff() -> None:
    tuning, loops, jitter = [], [], []
    for pkg in (*PRODUCT, "shell", "simulator"):
        for path in (ROOT / pkg).rglob("*.py"):
            text = path.read_text()
            rel = str(path.relative_to(ROOT))
            if "gc.freeze(" in text or "gc.set_threshold(" in text or "def tune_gc" in text:
                tuning.append(rel)
            if "delay * 2" in text or "2**streak" in text or "2.0**" in text:
                loops.append(rel)
            if ".uniform(0" in text or "** (attempt" in text or "2**attempt" in text:
                jitter.append(rel)
    assert tuning == ["drops/runtime.py"]
    assert loops == []
    assert jitter == ["drops/runtime.py"]  # one full-jitter helper (full_jitter)


def test_one_quix_application_set_up() -> None:
    """The processor and the matcher build their exactly-once application in one helper."""
    builders = [
        str(path.relative_to(ROOT))
        for pkg in PRODUCT
        for path in (ROOT / pkg).rglob("*.py")
        if "Application(" in path.read_text()
    ]
    assert builders == ["processors/quix.py"]
