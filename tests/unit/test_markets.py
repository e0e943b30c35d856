"""The market list every stage serves (drops.markets) and the views' local time per market."""

from __future__ import annotations

from pathlib import Path

import pytest

from drops.markets import Market, MarketError, configured_markets
from drops.settings import Settings
from store.tables import local, view_statements


def with_config(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "m.toml"
    path.write_text(text)
    return Settings(config=path)


def test_without_a_file_the_flat_settings_name_the_market() -> None:
    assert configured_markets(Settings(market="sfo", time_zone="America/Los_Angeles")) == (
        Market("sfo", "America/Los_Angeles"),
    )


def test_the_config_file_gives_every_market_in_order(tmp_path: Path) -> None:
    s = with_config(
        tmp_path,
        '[[markets]]\nname = "chi"\ntime_zone = "America/Chicago"\n'
        '[[markets]]\nname = "nyc"\n',  # no zone: the producer's default
    )
    assert configured_markets(s) == (
        Market("chi", "America/Chicago"),
        Market("nyc", "America/New_York"),
    )
    # the example file of the repository
    example = Settings(config=Path("producers/markets.example.toml"))
    assert [m.name for m in configured_markets(example)] == ["nyc", "chi"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[[markets]]\nname = "chi"\ntime_zone = "Mars/Olympus"\n', "markets[0].time_zone"),
        ('[[markets]]\nname = "Chi Town"\n', "markets[0].name"),
        ('[[markets]]\nname = "a"\n[[markets]]\nname = "a"\n', "markets[1].name"),
        ("[producer]\ndays = 3\n", "markets"),
        ("[[markets]\n", "config"),
    ],
)
def test_a_bad_market_list_is_an_error_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(MarketError, match=key.replace("[", r"\[").replace("]", r"\]")):
        configured_markets(with_config(tmp_path, text))


def test_views_take_each_rows_market_zone() -> None:
    one = local("toHour", "opened_at", {"nyc": "America/New_York"})
    assert one == "toHour(opened_at, 'America/New_York')"
    two = local("toDate", "opened_at", {"nyc": "America/New_York", "chi": "America/Chicago"})
    assert two == (
        "multiIf(market = 'nyc', toDate(opened_at, 'America/New_York'), "
        "market = 'chi', toDate(opened_at, 'America/Chicago'), "
        "toDate(opened_at, 'America/New_York'))"
    )
    sql = "\n".join(view_statements({"nyc": "America/New_York", "chi": "America/Chicago"}))
    assert "'America/Chicago'" in sql and "GROUP BY market, hour" in sql
    for bad in ({"nyc": "x'; DROP TABLE drop_events; --"}, {"a'b": "UTC"}, {}):
        with pytest.raises(ValueError):
            view_statements(bad)
