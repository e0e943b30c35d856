"""A short chaos run: faults on every kind of provider failure, kill -9 of the processor and
of the API with its sink, broker restarts; the feed must equal the reference exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import chaos

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_short_chaos_run_serves_exactly_the_reference(tmp_path: Path) -> None:
    cfg = chaos.Config(seconds=50, seed=3, disrupt_every=12, open_every=1.0, days=2)
    # its own broker (it restarts it), on ports of its own
    report = chaos.run(cfg, tmp_path / "chaos", "127.0.0.1:19592", 19593)
    print("\n".join(report.lines()))
    assert report.opens_expected > 10
    assert sum(report.disruptions.values()) >= 1
    assert report.faults_applied > 0
    assert report.missing == 0
    assert report.duplicated == 0
    assert report.false == 0
    assert report.closes_missing == report.closes_duplicated == report.closes_false == 0
    assert report.topic_duplicates == 0
