"""The ``drops`` command: one subcommand per stage, and ``drops up`` for all of them.

The development tools (``simulate``, ``bench``, ``chaos``) are found through the package's
entry points (group ``drops.tools``), so the shell never imports them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

import orjson

from drops.log import configure, get_log
from drops.settings import Settings, get_settings


def _topics(settings: Settings) -> int:
    """``drops broker topics``: create the missing topics, check the others; 1 on drift."""
    from drops.topics import create_missing, inspect_topics, topic_specs

    created = set(create_missing(settings))
    missing, drift = inspect_topics(settings)
    drifted = {d.topic for d in drift}
    for name, spec in topic_specs(settings).items():
        state = "created" if name in created else "drift" if name in drifted else "ok"
        state = "missing" if name in missing else state
        print(f"{state:8} {name}  partitions={spec.partitions} replication={spec.replication} "
              + " ".join(f"{k}={v}" for k, v in spec.config.items()))  # fmt: skip
    for d in drift:
        print(f"  drift  {d}")
    if drift:
        print(
            f"drops broker topics: {len(drift)} difference(s) from the settings; existing "
            "topics are never changed here: alter them (kafka-topics, kafka-configs) or the "
            "settings",
            file=sys.stderr,
        )
    return 1 if drift or missing else 0


def _broker(args: argparse.Namespace, settings: Settings) -> int:
    from drops import kafka
    from shell import broker

    if args.action == "start":
        broker.start(settings)
        broker.ensure_topics(settings)
    elif args.action == "stop":
        broker.stop(settings)
    elif args.action == "topics":
        try:
            kafka.check_access(settings)
            return _topics(settings)
        except kafka.KafkaAccessError as exc:
            print(f"drops broker topics: {exc}", file=sys.stderr)
            return 2
    elif args.action == "fetch":
        broker.fetch(settings)
    else:
        status = broker.status(settings)
        print(orjson.dumps(status).decode())
        return 0 if status["ready"] else 1
    return 0


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from producers.service import run

    run(settings)
    return 0


def _process(args: argparse.Namespace, settings: Settings) -> int:
    from processors.app import run

    run(settings)
    return 0


def _match(args: argparse.Namespace, settings: Settings) -> int:
    from processors.alerts import run

    run(settings)
    return 0


def _deliver(args: argparse.Namespace, settings: Settings) -> int:
    from delivery.worker import run

    run(settings)
    return 0


def _sink(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.service import run

    run(settings)
    return 0


def _api(args: argparse.Namespace, settings: Settings) -> int:
    from api.server import run
    from sinks.service import SinkThread

    run(settings, sink=SinkThread if args.with_sink else None)
    return 0


def _rebaseline(args: argparse.Namespace, settings: Settings) -> int:
    from producers.rebaseline import run

    try:
        keys = run(settings, args.bucket or [], args.market or "", args.provider or "")
    except ValueError as exc:
        print(f"drops rebaseline: {exc}", file=sys.stderr)
        return 2
    print(orjson.dumps({"rebaseline": keys}).decode())
    return 0


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from shell.supervisor import up

    if args.no_simulator:
        settings = settings.model_copy(update={"up_simulator": False})
    return int(up(settings))


TOOLS_GROUP = "drops.tools"


def _tool(args: argparse.Namespace, settings: Settings) -> int:
    """Run a development tool by its entry point: ``main(argv) -> exit code``."""
    (ep,) = entry_points(group=TOOLS_GROUP, name=args.command)
    tool: Callable[[list[str]], int] = ep.load()
    return tool(args.rest)


def _settings(args: argparse.Namespace, settings: Settings) -> int:
    from drops.settings_doc import markdown_table

    print(markdown_table())
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace, Settings], int]]] = {
    "broker": ("start, stop or check the local Kafka broker", _broker),
    "simulate": ("run the provider simulator (Resy and OpenTable wire formats)", _tool),
    "produce": ("poll the providers and write snapshot records", _produce),
    "process": ("diff snapshots into drops (Quix Streams, RocksDB state)", _process),
    "match": ("match drops against the watches into alerts (Quix Streams, exactly-once)", _match),
    "deliver": ("send alerts to webhooks and Apprise channels, once, with a log", _deliver),
    "sink": ("load drop records into ClickHouse", _sink),
    "api": ("serve the feed, the SSE stream and the live page", _api),
    "rebaseline": (
        "ask for a new baseline of buckets or a market: their next snapshot becomes it",
        _rebaseline,
    ),
    "up": ("run the whole pipeline locally until Ctrl-C", _up),
    "bench": ("run every benchmark and print one table (--quick, --write)", _tool),
    "chaos": ("run the pipeline under faults and kills; compare with the reference", _tool),
    "scale": ("run 2 replicas of every stage, kill one of each; check every feed", _tool),
    "settings": ("print the settings table (env vars DROPS_*)", _settings),
}


PASS_THROUGH = {"simulate", "bench", "chaos", "scale"}  # the tools parse their own options


DESCRIPTION = (
    "Discovery Drops: spots restaurant reservations the moment they open. One subcommand per "
    "stage; `drops up` runs them all. Settings are env vars DROPS_<SECTION>__<NAME> "
    "(`drops settings`)."
)


def main(argv: list[str] | None = None) -> int:
    from drops.metrics import version

    parser = argparse.ArgumentParser(prog="drops", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"drops {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, (text, _) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text, add_help=name not in PASS_THROUGH)
        if name == "broker":
            p.add_argument("action", choices=["start", "stop", "status", "fetch", "topics"])
        if name == "up":
            p.add_argument(
                "--no-simulator",
                action="store_true",
                help="poll the real providers (DROPS_PROVIDERS__RESY__BASE_URL, "
                "DROPS_PROVIDERS__OPENTABLE__BASE_URL) at DROPS_PRODUCER__POLL_INTERVAL; no "
                "simulator (same as DROPS_UP__SIMULATOR=false)",
            )
        if name == "rebaseline":
            which = p.add_mutually_exclusive_group(required=True)
            which.add_argument("--bucket", action="append", help="a bucket id (repeatable)")
            which.add_argument("--market", help="every bucket of this market's window")
            p.add_argument("--provider", help="only this provider's streams (default: all)")
        if name == "api":
            p.add_argument(
                "--with-sink",
                action="store_true",
                help="run the ClickHouse sink in this process (needed with embedded chDB)",
            )
    args, rest = parser.parse_known_args(argv)
    if args.command in PASS_THROUGH:
        args.rest = rest  # their own options: `drops bench --help`, `drops chaos --help`
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    settings = get_settings()
    configure(settings.log.level, settings.log.format)
    from drops.kafka import KafkaAccessError
    from drops.topics import TopicError

    try:
        return COMMANDS[args.command][1](args, settings)
    except (KafkaAccessError, TopicError) as exc:  # the cluster or its topics: said plainly
        get_log("cli").error("start_refused", command=args.command, error=str(exc))
        print(f"drops {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
