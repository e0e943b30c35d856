"""One error hierarchy: every exception class of the product derives from DropsError, BadRequest
is defined once, and nothing in the installed packages raises AssertionError (no ``assert``:
``python -O`` strips it, and a bug should say what it found)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

from drops.errors import BadRequest, DropsError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("drops", "schemas", "domain", "store", "producers", "processors", "delivery", "sinks")
PACKAGES += ("api",)
PACKAGES += ("shell", "simulator")  # installed too (the `drops` command's tools)


def modules() -> list[str]:
    names: list[str] = []
    for pkg in PACKAGES:
        names.append(pkg)
        path = [str(ROOT / pkg)]
        names += [m.name for m in pkgutil.walk_packages(path, prefix=f"{pkg}.")]
    return [n for n in names if not n.endswith("__main__")]


def sources() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]


def test_every_exception_class_is_a_drops_error() -> None:
    strays: list[str] = []
    bad_requests: set[str] = set()
    for name in modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if not inspect.isclass(obj) or obj.__module__ != name:
                continue
            if issubclass(obj, BaseException) and not issubclass(obj, DropsError):
                strays.append(f"{name}.{attr}")
            if attr == "BadRequest":
                bad_requests.add(f"{name}.{attr}")
    assert strays == []
    assert bad_requests == {"drops.errors.BadRequest"}


def test_nothing_raises_assertion_error() -> None:
    found: list[str] = []
    for path in sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            rel = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Assert):
                found.append(f"{rel} assert")
            elif isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(exc, ast.Name) and exc.id == "AssertionError":
                    found.append(f"{rel} raise AssertionError")
    assert found == []


def test_bad_request_with_and_without_a_parameter() -> None:
    named = BadRequest("limit", "must be between 1 and 1000")
    assert str(named) == "limit: must be between 1 and 1000"
    assert named.body() == {
        "error": "bad_request",
        "param": "limit",
        "message": "must be between 1 and 1000",
    }
    plain = BadRequest("control bodies are JSON objects")
    assert str(plain) == "control bodies are JSON objects" and plain.param == ""
    assert isinstance(plain, ValueError) and isinstance(plain, DropsError)
