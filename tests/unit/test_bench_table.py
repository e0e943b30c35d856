from __future__ import annotations

import pytest

from bench.__main__ import Figure, parse_figures, table


def test_figures_come_from_the_last_figures_line() -> None:
    out = 'progress...\n{"figures": [{"area": "api", "metric": "feed p99", "value": 12.5, '
    out += '"unit": "ms", "goal": "<= 25 ms", "ok": true}]}\n'
    assert parse_figures(out) == [Figure("api", "feed p99", 12.5, "ms", "<= 25 ms", True)]


def test_no_figures_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="no figures"):
        parse_figures("crashed before the end\n")


def test_table_marks_missed_goals() -> None:
    text = table([Figure("processor", "obs/s", 2_500_000, "obs/s", ">= 2,000,000", False)])
    assert "| processor | obs/s | 2,500,000 obs/s | >= 2,000,000 | **no** |" in text
