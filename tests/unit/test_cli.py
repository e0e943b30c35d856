"""The `drops` command: --version, a --help without markup, `drops up` without the simulator."""

from __future__ import annotations

import pytest

from drops.metrics import version
from shell import cli
from shell.supervisor import child_env, stages
from tests.conftest import base_settings


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"drops {version()}"


@pytest.mark.parametrize("argv", [["--help"], *[[c, "--help"] for c in cli.COMMANDS]])
def test_help_is_plain_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: drops")
    for markup in ("``", ":class:", ":func:", ":mod:"):
        assert markup not in out, (argv, markup)


def test_up_runs_without_the_simulator_by_a_setting() -> None:
    demo = base_settings()
    assert next(c.name for c in stages(demo)) == "simulator"
    real = base_settings(up_simulator=False)
    names = [c.name for c in stages(real)]
    assert "simulator" not in names and {"processor", "producer"} <= set(names)
    env = child_env(real)
    assert env["DROPS_UP__SIMULATOR"] == "false"
    assert env.get("DROPS_PRODUCER__POLL_INTERVAL") != str(
        real.up.poll_interval
    )  # the real interval


def test_up_flag_turns_the_simulator_off(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    monkeypatch.setattr("shell.supervisor.up", lambda s: seen.append(s.up.simulator) or 0)
    assert cli.main(["up", "--no-simulator"]) == 0
    assert cli.main(["up"]) == 0
    assert seen == [False, True]
