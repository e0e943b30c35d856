"""The README's settings table, made from :class:`drops.settings.Settings`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from drops.settings import FLAT, Market, Settings, env_name


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, Any, str]]:
    out: list[tuple[str, Any, str]] = []
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        key = info.alias or name
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and ann is not Market:
            out += _rows(ann, f"{prefix}{key}.")
            continue
        default = info.default if info.default_factory is None else "(see meaning)"
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        out.append((f"{prefix}{key}", default, info.description or ""))
    return out


def markdown_table() -> str:
    """One row per setting: its env var, its default, its meaning and its old (deprecated,
    still working) flat name."""
    old = {path: f"`DROPS_{flat.upper()}`" for flat, path in FLAT.items()}
    rows = ["| env var | default | meaning | old name |", "| --- | --- | --- | --- |"]
    for path, default, meaning in _rows(Settings, ""):
        shown = default if default not in ("", None, ()) else "(see meaning)"
        rows.append(f"| `{env_name(path)}` | `{shown}` | {meaning} | {old.get(path, '')} |")
    return "\n".join(rows)


def write_readme(path: Path) -> None:
    """Replace the table between the README's settings-table markers."""
    text = path.read_text()
    start_mark, end_mark = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
    head, rest = text.split(start_mark, 1)
    _, tail = rest.split(end_mark, 1)
    path.write_text(f"{head}{start_mark}\n{markdown_table()}\n{end_mark}{tail}")


if __name__ == "__main__":
    import sys

    if "--write" in sys.argv:
        write_readme(Path("README.md"))
    else:
        print(markdown_table())
