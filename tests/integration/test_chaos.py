"""A short chaos run: faults on every kind of provider failure, kill -9 of the processor, of
the API with its sink, of the matcher and of the delivery worker, broker restarts, kill -9 of
the producer kept down for tens of seconds while slots open; the feed must equal the
reference exactly, and the alert receivers (a signed webhook, Apprise json://) must have
accepted every expected (watch, drop) alert, none for a false drop, and a repeat only
within the documented limit of a kill of the delivery worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import chaos

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.mark.timeout(600)  # ~3 min here: a 70 s storm, the stages' starts, the settling
def test_short_chaos_run_serves_exactly_the_reference(tmp_path: Path) -> None:
    cfg = chaos.Config(
        seconds=70, seed=3, disrupt_every=12, open_every=1.0, days=2, producer_down=(15, 25)
    )
    # its own broker (it restarts it), on ports of its own (DROPS_TEST_CHAOS_PORT moves them)
    port = int(os.environ.get("DROPS_TEST_CHAOS_PORT", "19592"))
    report = chaos.run(cfg, tmp_path / "chaos", f"127.0.0.1:{port}", port + 1)
    print("\n".join(report.lines()))
    assert report.opens_expected > 10
    assert sum(report.disruptions.values()) >= 2
    assert report.disruptions["kill producer"] == 1
    assert report.opened_while_producer_down > 3
    assert report.faults_applied > 0
    assert report.missing == 0
    assert report.duplicated == 0
    assert report.false == 0
    assert report.closes_missing == report.closes_duplicated == report.closes_false == 0
    assert report.topic_duplicates == 0
    assert report.disruptions["kill matcher"] >= 1 and report.disruptions["kill delivery"] >= 1
    assert report.alerts_expected > report.opens_expected  # both watches got alerts
    assert report.alerts_missing == 0
    assert report.alerts_false == 0
    assert report.alerts_repeated <= report.repeat_limit
    assert report.alert_send_retries > 0
