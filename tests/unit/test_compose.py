"""docker-compose.yml runs the same stages as `drops up`, with settings that exist."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from drops.settings import Settings, env_name, leaves
from shell.cli import COMMANDS

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
    fields = {env_name(path) for path, _ in leaves(Settings())}
    env = compose()["x-drops-env"]
    assert set(env) <= fields
    assert env["DROPS_CLICKHOUSE__DSN"].startswith("http://")  # a server: sink and API split


def test_broker_version_matches_the_local_one() -> None:
    image = compose()["services"]["kafka"]["image"]
    assert image.split(":")[1] == Settings().kafka.version


def test_kafka_keeps_its_topics_in_the_volume() -> None:
    """Without KAFKA_LOG_DIRS the image keeps its data under /tmp: a new container would lose
    the topics while ClickHouse keeps its progress."""
    kafka = compose()["services"]["kafka"]
    (volume,) = kafka["volumes"]
    mounted = volume.split(":")[1]
    assert kafka["environment"]["KAFKA_LOG_DIRS"] == mounted


def test_every_long_running_service_has_a_healthcheck() -> None:
    services = compose()["services"]
    running = {n for n, s in services.items() if s.get("restart", "unless-stopped") != "no"}
    running |= {"kafka", "clickhouse"}
    missing = sorted(n for n in running if not services[n].get("healthcheck", {}).get("test"))
    assert missing == []
    for name, svc in services.items():  # what a stage waits on is healthy, not just started
        for dep, cond in (svc.get("depends_on") or {}).items():
            if dep != "topics":
                assert cond["condition"] == "service_healthy", (name, dep)


def test_stage_healthchecks_probe_the_ports_the_stages_serve() -> None:
    services = compose()["services"]
    defaults = Settings()
    ports = {
        "producer": defaults.producer.metrics_port,
        "processor": defaults.processor.metrics_port,
        "sink": defaults.sink.metrics_port,
        "api": defaults.api.port,
        "simulator": defaults.simulator.port,
    }
    for name, port in ports.items():
        assert f"127.0.0.1:{port}/" in services[name]["healthcheck"]["test"][-1], name
    assert compose()["x-drops-env"]["DROPS_METRICS__HOST"] == "0.0.0.0"


def _dockerfile() -> list[str]:
    return (ROOT / "Dockerfile").read_text().splitlines()


def test_the_image_runs_as_a_user_of_its_own() -> None:
    users = [ln.split()[1] for ln in _dockerfile() if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")


def test_the_image_holds_every_package_its_commands_import() -> None:
    """`drops bench` is a subcommand: bench/ (and every other package) is in the image."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in include}
    copied = {ln.split()[1] for ln in _dockerfile() if ln.startswith("COPY ")}
    assert packages <= copied, packages - copied
    with (ROOT / "pyproject.toml").open("rb") as f:
        tools = tomllib.load(f)["project"]["entry-points"]["drops.tools"]
    assert {t.split(".")[0].split(":")[0] for t in tools.values()} <= copied
