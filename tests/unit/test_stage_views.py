"""Each stage's view of the settings (drops/stages.py): it names only what ``Settings`` has,
``Settings`` satisfies it, and each stage's ``run()`` is typed against its own view, not the
whole settings object (mypy --strict then proves the stage reads nothing else)."""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterator
from typing import Any, Protocol, get_type_hints

import pytest

from drops import stages
from drops.settings import Settings
from tests.conftest import ROOT

STAGE_RUNS = {
    "producer": "producers.service",
    "processor": "processors.app",
    "matcher": "processors.alerts",
    "delivery": "delivery.worker",
    "sink": "sinks.service",
    "api": "api.server",
}
STAGE_PACKAGES = ("producers", "processors", "delivery", "sinks", "api", "store")
FOUNDATION_VIEWS = (
    stages.KafkaSettings,
    stages.TopicSettings,
    stages.MarketsSettings,
    stages.ClickHouseSettings,
)
ALL_VIEWS = (*stages.VIEWS.values(), *FOUNDATION_VIEWS)


def members(view: type[Any]) -> dict[str, Any]:
    """The view's members (its own and its bases'), by name."""
    out: dict[str, Any] = {}
    for cls in reversed(view.__mro__):
        if cls in (Protocol, object) or cls.__module__ == "typing":
            continue
        out.update({k: v for k, v in vars(cls).items() if not k.startswith("_")})
    return out


def _settings_type(name: str) -> Any:
    """What ``Settings`` gives under ``name``: a field's type, or a property's or method's
    return type."""
    if name in Settings.model_fields:
        return Settings.model_fields[name].annotation
    attr = inspect.getattr_static(Settings, name)
    fn = attr.fget if isinstance(attr, property) else attr
    return get_type_hints(fn)["return"]


def _view_type(member: Any) -> Any:
    fn = member.fget if isinstance(member, property) else member
    return get_type_hints(fn)["return"]


def test_the_stages_views_cover_every_stage() -> None:
    assert set(stages.VIEWS) == set(STAGE_RUNS)


@pytest.mark.parametrize("view", ALL_VIEWS, ids=lambda v: v.__name__)
def test_each_view_names_only_what_settings_has(view: type[Any]) -> None:
    names = members(view)
    assert names, view
    unknown = [n for n in names if n not in Settings.model_fields and not hasattr(Settings, n)]
    assert unknown == [], f"{view.__name__} names what Settings lacks: {unknown}"


@pytest.mark.parametrize("view", ALL_VIEWS, ids=lambda v: v.__name__)
def test_settings_satisfies_each_view(view: type[Any]) -> None:
    s = Settings()
    for name, member in members(view).items():
        assert _settings_type(name) == _view_type(member), f"{view.__name__}.{name}"
        value = getattr(s, name)
        if isinstance(member, property):
            assert not callable(value) or isinstance(value, type), f"{view.__name__}.{name}"
        else:
            assert callable(value), f"{view.__name__}.{name} is a method"


def test_each_view_is_a_read_only_protocol() -> None:
    """A stage reads its sections; it never assigns one."""
    for view in ALL_VIEWS:
        assert Protocol in view.__mro__, view
        for name, member in members(view).items():
            if isinstance(member, property):
                assert member.fset is None, f"{view.__name__}.{name}"


@pytest.mark.parametrize("stage", sorted(STAGE_RUNS))
def test_each_stage_run_takes_its_view_not_the_settings(stage: str) -> None:
    run = importlib.import_module(STAGE_RUNS[stage]).run
    hints = get_type_hints(run)
    assert hints["settings"] is stages.VIEWS[stage], (stage, hints["settings"])
    assert hints["settings"] is not Settings


def test_the_smaller_stage_views_leave_out_other_stages_sections() -> None:
    """A few sections each view must not hold (the point of the views)."""
    held = {stage: set(members(view)) for stage, view in stages.VIEWS.items()}
    assert "api" not in held["processor"] | held["matcher"] | held["delivery"] | held["sink"]
    assert "providers" not in held["api"] | held["processor"] | held["sink"]
    assert "matcher" not in held["processor"] and "processor" not in held["sink"]
    assert "sse" not in held["sink"] and "clickhouse" not in held["producer"]
    assert "log" not in held["matcher"]  # Quix takes its level from our root logger


def _stage_modules() -> Iterator[tuple[str, ast.Module]]:
    for pkg in STAGE_PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path.name == "__main__.py":  # ``python -m processors`` reads the env, as the shell
                continue
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text())


def test_no_stage_module_takes_the_whole_settings() -> None:
    """Only the shell (and ``__main__`` entry points) hold ``Settings``: a stage module
    neither imports it nor reads the env's settings itself."""
    wrong = []
    for where, tree in _stage_modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "drops.settings":
                names = {a.name for a in node.names}
                wrong += [f"{where}: imports {n}" for n in names & {"Settings", "get_settings"}]
            elif isinstance(node, ast.Name) and node.id == "Settings":
                wrong.append(f"{where}:{node.lineno}: Settings")
            elif isinstance(node, ast.Constant) and node.value == "Settings":
                wrong.append(f"{where}:{node.lineno}: 'Settings'")
    assert wrong == []
