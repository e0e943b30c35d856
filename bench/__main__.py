"""``drops bench``: every figure of the project, one table.

Runs each benchmark module as its own process (``python -m bench.<name> --json``) against a
local broker it starts (its own port and data folder), collects the figures each one prints as
its last line (``{"figures": [{area, metric, value, unit, goal, ok}, ...]}``) and prints one
table. ``--quick`` passes ``--quick`` to each (a few minutes in all); ``--write`` also writes
the table into ``docs/benchmarks.md`` with the machine's size and the command.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from drops.log import get_log
from drops.settings import Settings
from shell import broker

log = get_log("bench")

MODULES: dict[str, list[str]] = {
    "producer": ["bench.producer_bench", "--venues", "1000", "10000", "50000"],
    "processor": ["bench.processor_bench"],
    "api": ["bench.api_bench"],
    "replicas": ["bench.replicas_bench"],
    "alerts": ["bench.alerts_bench"],
    "hostile": ["bench.hostile_bench"],
}
QUICK_EXTRA: dict[str, list[str]] = {"producer": ["--venues", "1000", "10000"]}


@dataclass(frozen=True)
class Figure:
    area: str
    metric: str
    value: float
    unit: str
    goal: str
    ok: bool | None


def machine() -> str:
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem_kb = int(line.split()[1])
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores ({cpu}), {mem_kb / 1024 / 1024:.0f} GiB, {platform.system()}"


def parse_figures(stdout: str) -> list[Figure]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith('{"figures"'):
            doc: dict[str, Any] = orjson.loads(line)
            return [
                Figure(
                    area=f["area"],
                    metric=f["metric"],
                    value=float(f["value"]),
                    unit=f.get("unit", ""),
                    goal=f.get("goal") or "",
                    ok=f.get("ok"),
                )
                for f in doc["figures"]
            ]
    raise ValueError("the benchmark printed no figures line")


def table(figures: list[Figure]) -> str:
    rows = ["| area | figure | value | goal | met |", "| --- | --- | ---: | --- | --- |"]
    for f in figures:
        met = "" if f.ok is None else ("yes" if f.ok else "**no**")
        value = f"{f.value:,.0f}" if abs(f.value) >= 100 else f"{f.value:,.2f}"
        rows.append(f"| {f.area} | {f.metric} | {value} {f.unit} | {f.goal} | {met} |")
    return "\n".join(rows)


def run_module(name: str, quick: bool, env: dict[str, str]) -> tuple[list[Figure], str]:
    args = list(MODULES[name])
    if quick:
        args = [args[0], *QUICK_EXTRA.get(name, args[1:]), "--quick"]
    cmd = [sys.executable, "-m", *args, "--json"]
    log.info("bench_start", bench=name, cmd=" ".join(cmd[2:]))
    started = time.monotonic()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = round(time.monotonic() - started, 1)
    if result.returncode != 0:
        log.error("bench_failed", bench=name, code=result.returncode, stderr=result.stderr[-3000:])
        return [], result.stderr[-3000:]
    log.info("bench_done", bench=name, seconds=seconds)
    return parse_figures(result.stdout), ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="drops bench", description=(__doc__ or "").replace("``", "`"))
    ap.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes in all")
    ap.add_argument("--only", choices=sorted(MODULES), action="append", help="run only these")
    ap.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    args = ap.parse_args(argv)
    settings = Settings(
        data_dir=Path(".drops/bench"),
        kafka_bootstrap="127.0.0.1:19392",
        kafka_controller_port=19393,
    )
    started_broker = not broker.is_ready(settings, timeout=1.0)
    broker.start(settings)
    env = dict(os.environ)
    env.update(
        DROPS_KAFKA__BOOTSTRAP=settings.kafka.bootstrap,
        DROPS_DATA_DIR=str(settings.data_dir.resolve()),
    )
    env["DROPS_KAFKA_BOOTSTRAP"] = env["DROPS_KAFKA__BOOTSTRAP"]  # bench/producer_bench reads it
    figures: list[Figure] = []
    failures: dict[str, str] = {}
    try:
        for name in args.only or list(MODULES):
            got, error = run_module(name, args.quick, env)
            figures += got
            if error:
                failures[name] = error
    finally:
        if started_broker:
            broker.stop(settings)
    text = table(figures)
    print(f"\nmachine: {machine()}\n\n{text}")
    for name, error in failures.items():
        print(f"\n{name} benchmark failed:\n{error}")
    if args.write:
        write_doc(text, args.quick)
    return 1 if failures else 0


def write_doc(text: str, quick: bool) -> None:
    path = Path("docs/benchmarks.md")
    command = "drops bench --quick --write" if quick else "drops bench --write"
    start, end = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
    body = (
        f"{start}\nMeasured {time.strftime('%Y-%m-%d')} on {machine()} with `{command}`.\n\n"
        f"{text}\n{end}"
    )
    if path.exists() and start in path.read_text():
        head, rest = path.read_text().split(start, 1)
        path.write_text(head + body + rest.split(end, 1)[1])
    else:
        path.write_text(f"# Benchmarks\n\n{body}\n")


if __name__ == "__main__":
    sys.exit(main())
