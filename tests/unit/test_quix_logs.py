"""Quix Streams' log lines come out as JSON like ours (issue 10, Deliver 4).

``Application(loglevel="INFO")`` adds Quix's own text handler to the ``quixstreams`` logger
(when it has none), so a stage's stderr mixed lines like ``[2026-...] [ERROR] [quixstreams] :
FAIL ...`` into its JSON lines. The matcher passed ``loglevel=settings.log.level``; both Quix
stages must build their application with no handler of Quix's own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from quixstreams import Application

import processors.alerts as alerts
import processors.app as processor
from drops.log import configure
from drops.settings import Settings


class _Built(Exception):
    """Raised right after the stage built its application (no broker needed)."""

    def __init__(self, app: Application) -> None:
        super().__init__("built")
        self.app = app


@pytest.fixture
def quix_logger() -> Iterator[logging.Logger]:
    """The ``quixstreams`` logger as in a new process (no handlers), restored afterwards
    with the root logger."""
    quix = logging.getLogger("quixstreams")
    root = logging.getLogger()
    saved = (quix.handlers[:], quix.level, quix.propagate, root.handlers[:], root.level)
    quix.handlers[:] = []
    quix.setLevel(logging.NOTSET)
    quix.propagate = True
    try:
        yield quix
    finally:
        quix.handlers[:], root.handlers[:] = saved[0], saved[3]
        quix.setLevel(saved[1])
        quix.propagate = saved[2]
        root.setLevel(saved[4])


class _Feed:
    """The matcher's watch feed without Kafka."""

    def __init__(self, settings: Any) -> None:
        self.index: dict[str, Any] = {}

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


def _build(
    module: Any, build: Callable[[Settings], Any], s: Settings, monkeypatch: pytest.MonkeyPatch
) -> Application:
    real = module.exactly_once_app

    def stop_after(*args: Any, **kwargs: Any) -> Application:
        raise _Built(real(*args, **kwargs))

    monkeypatch.setattr(module, "exactly_once_app", stop_after)
    monkeypatch.setattr(module, "check_topics", lambda *a, **k: None)
    with pytest.raises(_Built) as built:
        build(s)
    return built.value.app


@pytest.mark.parametrize("stage", ["matcher", "processor"])
def test_quix_installs_no_handler_and_its_lines_are_json(
    stage: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    quix_logger: logging.Logger,
) -> None:
    s = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, log_level="DEBUG")
    configure(s.log.level, s.log.format)  # as the shell does, writing to the captured stderr
    if stage == "matcher":
        monkeypatch.setattr(alerts, "WatchFeed", _Feed)
        app = _build(alerts, alerts.build_app, s, monkeypatch)
    else:
        app = _build(processor, processor.build_app, s, monkeypatch)
    assert isinstance(app, Application)
    assert quix_logger.handlers == [], f"{stage}: Quix installed {quix_logger.handlers}"
    logging.getLogger("quixstreams.app").error("a line of Quix's")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert any("a line of Quix's" in line for line in lines)
    for line in lines:
        assert json.loads(line)["level"], line  # not '[2026-...] [ERROR] [quixstreams] : ...'
