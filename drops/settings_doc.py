"""The README's settings table, made from :class:`drops.settings.Settings`."""

from __future__ import annotations

from drops.settings import Settings


def markdown_table() -> str:
    rows = ["| env var | default | meaning |", "| --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        default = info.default if info.default not in ("", None) else "(see meaning)"
        rows.append(f"| `DROPS_{name.upper()}` | `{default}` | {info.description or ''} |")
    return "\n".join(rows)
