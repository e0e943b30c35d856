"""The chaos run's storm makes every kill it scheduled, even when a slow disruption (a broker
restart takes seconds) carries the storm past its end before a scheduled moment came."""

from __future__ import annotations

import random
import time
from typing import Any

from bench import chaos


class _Sim:
    def fault(self, kind: str, rate: float, **extra: Any) -> None:
        pass

    def faults(self) -> list[dict[str, Any]]:
        return []

    def clear_faults(self) -> None:
        pass


class _Pipeline:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def start(self, name: str, *args: str) -> None:
        self.events.append(("start", name))

    def kill(self, name: str) -> None:
        self.events.append(("kill", name))


class _Storm(chaos.Chaos):
    """Only the storm's schedule: no simulator, no stages; every disruption outlasts it."""

    def __init__(self, cfg: chaos.Config) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.report = chaos.Report()
        self.producer_down = False
        self.producer_back = 0.0
        self.fake_pipeline = _Pipeline()
        self.pipeline = self.fake_pipeline  # type: ignore[assignment]
        self.sim = _Sim()  # type: ignore[assignment]

    def open_one(self) -> None:
        pass

    def revive(self) -> None:
        pass

    def disrupt(self) -> None:
        time.sleep(self.cfg.seconds + 0.2)  # a broker restart longer than the storm's rest


def test_kills_scheduled_past_a_slow_disruption_are_still_made() -> None:
    cfg = chaos.Config(seconds=0.6, seed=3, disrupt_every=0.001, producer_down=(0.05, 0.1))
    storm = _Storm(cfg)
    storm.storm()
    kills = storm.report.disruptions
    assert kills["kill producer"] == 1
    assert kills["kill matcher"] == 1 and kills["kill delivery"] == 1
    events = storm.fake_pipeline.events
    for name in ("producer", "matcher", "delivery"):
        killed = events.index(("kill", name))
        assert ("start", name) in events[killed:]  # and each one started again
    assert not storm.producer_down
