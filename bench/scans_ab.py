"""The API's scan reads before and after, on one copy of the data, in one process, taking
turns (both see the same machine load): ``python -m bench.scans_ab --before OLD/api/data.py
--data DIR [--calls N]``.

``DIR`` is a data folder built by ``python -m bench.api_bench build`` (its ``clickhouse``
folder is migrated here first, so the new tables exist beside the old ones); ``OLD`` is a
checkout of the revision before (``git archive <rev> | tar -x -C OLD``). Prints p50 / p99 of
the feed page from the beginning with a neighborhood that matches nothing, ``Data.venue`` at
random venues and the ``/buckets`` query.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from api import data as new
from api.params import Filters
from store.clickhouse import ClickHouse

TZ = "America/New_York"


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("data_before", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--before", type=Path, required=True, help="api/data.py of the old revision")
    ap.add_argument("--data", type=Path, required=True, help="a bench.api_bench build folder")
    ap.add_argument("--calls", type=int, default=100)
    args = ap.parse_args()
    old = _load(args.before)
    ch = ClickHouse(f"chdb://{args.data / 'clickhouse'}")
    print("migrations applied:", ch.migrate(400, {"nyc": TZ}), flush=True)
    before = old.Data(ch, "bench", TZ, scan_max=200_000)
    after = new.Data(ch, "bench", scan_max=200_000)  # zones: each venue's own
    head = {0: int(ch.query("SELECT max(kafka_offset) FROM drop_events")[0][0])}
    today = date.today().isoformat()
    rnd = random.Random(11)
    nothing = Filters(neighborhood=("Nowhere",))

    def venue(d: Any) -> Callable[[], object]:
        return lambda: d.venue(str(1000 + rnd.randrange(5000)), None, 20)

    cases: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "feed, neighborhood matching nothing": (
            lambda: before.feed_window({0: -1}, head, nothing, 100),
            lambda: after.feed_window({0: -1}, head, nothing, 100),
        ),
        "venue": (venue(before), venue(after)),
        "buckets": (
            lambda: ch.query_dicts(*old.buckets_query("nyc", today)),
            lambda: ch.query_dicts(*new.buckets_query("nyc", today)),
        ),
    }
    for name, (fo, fn) in cases.items():
        took: tuple[list[float], list[float]] = ([], [])
        for i in range(args.calls + 10):
            for f, acc in ((fo, took[0]), (fn, took[1])):
                t = time.perf_counter()
                f()
                if i >= 10:  # the first ten warm the caches
                    acc.append((time.perf_counter() - t) * 1000)
        b, a = took
        print(
            f"{name}: before p50 {_pct(b, 0.5):.1f} p99 {_pct(b, 0.99):.1f} ms | after p50 "
            f"{_pct(a, 0.5):.1f} p99 {_pct(a, 0.99):.1f} ms | p50 ratio "
            f"{_pct(b, 0.5) / _pct(a, 0.5):.1f}x",
            flush=True,
        )
    print("load average", Path("/proc/loadavg").read_text().split()[:3])
    ch.close()


if __name__ == "__main__":
    main()
