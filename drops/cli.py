"""The ``drops`` command: one subcommand per stage, and ``drops up`` for all of them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import orjson

from drops.log import configure
from drops.settings import Settings, get_settings


def _broker(args: argparse.Namespace, settings: Settings) -> int:
    from drops import broker

    if args.action == "start":
        broker.start(settings)
        broker.ensure_topics(settings)
    elif args.action == "stop":
        broker.stop(settings)
    elif args.action == "topics":
        broker.ensure_topics(settings)
    elif args.action == "fetch":
        broker.fetch(settings)
    else:
        status = broker.status(settings)
        print(orjson.dumps(status).decode())
        return 0 if status["ready"] else 1
    return 0


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from simulator.server import run

    run(settings)
    return 0


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from producers.service import run

    run(settings)
    return 0


def _process(args: argparse.Namespace, settings: Settings) -> int:
    from processors.app import run

    run(settings)
    return 0


def _sink(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.service import run

    run(settings)
    return 0


def _api(args: argparse.Namespace, settings: Settings) -> int:
    from api.server import run

    run(settings, with_sink=args.with_sink)
    return 0


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from drops.supervisor import up

    return int(up(settings))


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from bench.__main__ import main as bench_main

    return bench_main(args.bench_args)


def _settings(args: argparse.Namespace, settings: Settings) -> int:
    from drops.settings_doc import markdown_table

    print(markdown_table())
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace, Settings], int]]] = {
    "broker": ("start, stop or check the local Kafka broker", _broker),
    "simulate": ("run the provider simulator (Resy and OpenTable wire formats)", _simulate),
    "produce": ("poll the providers and write snapshot records", _produce),
    "process": ("diff snapshots into drops (Quix Streams, RocksDB state)", _process),
    "sink": ("load drop records into ClickHouse", _sink),
    "api": ("serve the feed, the SSE stream and the live page", _api),
    "up": ("run the whole pipeline locally until Ctrl-C", _up),
    "bench": ("run every benchmark and print one table (--quick, --write)", _bench),
    "settings": ("print the settings table (env vars DROPS_*)", _settings),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (text, _) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        if name == "broker":
            p.add_argument("action", choices=["start", "stop", "status", "fetch", "topics"])
        if name == "bench":
            p.add_argument("bench_args", nargs=argparse.REMAINDER, help="--quick, --only, --write")
        if name == "api":
            p.add_argument(
                "--with-sink",
                action="store_true",
                help="run the ClickHouse sink in this process (needed with embedded chDB)",
            )
    args = parser.parse_args(argv)
    settings = get_settings()
    configure(settings.log_level, settings.log_format)
    return COMMANDS[args.command][1](args, settings)


if __name__ == "__main__":
    sys.exit(main())
