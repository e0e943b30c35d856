"""The markets every stage knows: each one's name and time zone.

The producer polls the markets of the config file (``DROPS_CONFIG``, its ``[[markets]]``
tables) or, without a file, the one market of the ``market`` section
(``DROPS_MARKET__NAME``, ``DROPS_MARKET__TIME_ZONE``). The API, the page and the analysts'
views serve the same list, each market in its own time zone (local dates and hours). The
list is read and checked once, by the settings (:attr:`drops.settings.Settings.markets`);
this is the stages' small view of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from drops.errors import ConfigError
from drops.settings import MARKET_NAME
from drops.stages import MarketsSettings

__all__ = ["MARKET_NAME", "Market", "MarketError", "configured_markets"]

MarketError = ConfigError
"""A market list that cannot be served (raised when the settings are read); names the key."""


@dataclass(frozen=True, slots=True)
class Market:
    name: str
    time_zone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


def configured_markets(settings: MarketsSettings) -> tuple[Market, ...]:
    """The markets, in the order configured; the first is the default of the API's
    single-market answers (``/buckets``, ``/stats/by-hour`` without ``?market=``)."""
    return tuple(Market(m.name, m.time_zone) for m in settings.markets)
