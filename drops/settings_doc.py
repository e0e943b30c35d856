"""The README's settings table, made from :class:`drops.settings.Settings`."""

from __future__ import annotations

from pathlib import Path

from drops.settings import Settings


def markdown_table() -> str:
    rows = ["| env var | default | meaning |", "| --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        default = info.default if info.default not in ("", None) else "(see meaning)"
        rows.append(f"| `DROPS_{name.upper()}` | `{default}` | {info.description or ''} |")
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
