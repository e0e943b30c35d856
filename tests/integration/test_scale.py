"""A short `drops scale` run: 2 producers, 2 processors, 2 API replicas, one of each killed
with kill -9 and restarted; every API replica's feed equals the script."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import scale

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_short_scale_run_serves_the_script_on_every_replica(tmp_path: Path) -> None:
    cfg = scale.ScaleConfig(seconds=45, seed=5, fault_rate=0.0, open_every=1.0, days=2)
    # its own broker, on the test broker's ports plus 50 (DROPS_TEST_SCALE_PORT moves them)
    base = int(os.environ.get("DROPS_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19192").rsplit(":")[1])
    port = int(os.environ.get("DROPS_TEST_SCALE_PORT", str(base + 50)))
    report = scale.run(cfg, tmp_path / "scale", f"127.0.0.1:{port}", port + 1)
    print(report.verdict())
    assert report.verdict().startswith("PASS"), report.verdict()
    assert len(report.feeds) == 2
    assert dict(report.kills) == {"producer": 1, "processor": 1, "api": 1}
    first = next(iter(report.feeds.values()))
    assert first.opens_expected > 10 and first.closes_expected > 3
    assert all(r.ok for r in report.feeds.values())
