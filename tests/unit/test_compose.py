"""docker-compose.yml runs the same stages as `drops up`, with settings that exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from drops.cli import COMMANDS
from drops.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_every_stage_runs_a_drops_subcommand() -> None:
    services = compose()["services"]
    commands = {name: svc["command"][0] for name, svc in services.items() if "command" in svc}
    assert set(commands.values()) >= {
        "simulate",
        "produce",
        "process",
        "match",
        "deliver",
        "sink",
        "api",
        "broker",
    }
    assert all(cmd in COMMANDS for cmd in commands.values())
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")


def test_env_vars_are_settings() -> None:
    fields = {f"DROPS_{name.upper()}" for name in Settings.model_fields}
    env = compose()["x-drops-env"]
    assert set(env) <= fields
    assert env["DROPS_CLICKHOUSE_DSN"].startswith("http://")  # a server: sink and API split


def test_broker_version_matches_the_local_one() -> None:
    image = compose()["services"]["kafka"]["image"]
    assert image.split(":")[1] == Settings.model_fields["kafka_version"].default
