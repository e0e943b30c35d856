"""Two processor replicas on one snapshot topic, neither with a hand-set id: they split the
partitions, one is killed with kill -9 mid-run, the survivor takes its partitions, restores
their state from the changelog and goes on exactly-once."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from bench.processor_harness import ProcessorProc, as_events, committed, drops, wait_processed
from bench.replicas_bench import members
from drops.settings import Settings
from tests.integration.reference import random_history, reference_events
from tests.integration.test_processor import write_paced

pytestmark = pytest.mark.kafka


def instance(proc: ProcessorProc) -> str:
    found = re.findall(r"instance[=\"': ]+([0-9a-f]{12})", proc.log())
    assert found, proc.log()[-2000:]
    return str(found[-1])


def test_two_replicas_split_partitions_and_survive_a_kill_9(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = kafka_settings.model_copy(update={"commit_interval": 0.3, "seen_ttl": 600.0})
    assert settings.processor.instance == ""  # no hand-set id
    hist = random_history(seed=14, streams=8, polls=60)
    expected = reference_events(hist, 600_000)
    assert len(expected) > 100

    writer = threading.Thread(target=lambda: write_paced(settings, hist, seconds=20.0))
    writer.start()
    a = ProcessorProc(settings, tmp_path / "a.log")
    b = ProcessorProc(settings, tmp_path / "b.log")
    survivor = b
    try:
        # both replicas hold partitions and both have committed work
        deadline = time.monotonic() + 60
        while True:
            got = members(settings)
            done = committed(settings)
            if len(got) == 2 and all(got.values()) and all(o > 0 for o in done.values()):
                break
            assert a.alive() and b.alive(), a.log()[-2000:] + b.log()[-2000:]
            assert time.monotonic() < deadline, f"no split: {got} {done}"
            time.sleep(0.3)
        ids = {instance(a), instance(b)}
        assert len(ids) == 2, ids  # distinct, generated ids
        assert set(got) == {f"{settings.processor.group}-{i}" for i in ids}
        assert sorted(p for parts in got.values() for p in parts) == [0, 1]
        killed = instance(a)
        a.kill9()
        assert writer.is_alive()  # the kill is mid-run: snapshots are still coming
        writer.join()
        wait_processed(settings, survivor, 120)
        assert members(settings) == {f"{settings.processor.group}-{instance(b)}": {0, 1}}
        # the killed replica's open transaction holds read_committed readers of the drops
        # topic back until the broker aborts it (transaction.timeout.ms, 30 s)
        deadline = time.monotonic() + 90
        while (seen := as_events(drops(settings))) != expected:
            assert time.monotonic() < deadline, (len(seen), len(expected))
            time.sleep(1.0)

        # the killed replica comes back on its own slot: the same id, and a share again
        a = ProcessorProc(settings, tmp_path / "a.log")
        a.started = 2
        deadline = time.monotonic() + 60
        while len(got := members(settings)) < 2 or not all(got.values()):
            assert a.alive() and time.monotonic() < deadline, a.log()[-2000:]
            time.sleep(0.3)
        assert instance(a) == killed
    finally:
        codes = [p.stop() if p.alive() else 0 for p in (a, b)]
    assert codes == [0, 0], a.log()[-3000:] + b.log()[-3000:]
    assert as_events(drops(settings)) == expected  # the rebalance added nothing
