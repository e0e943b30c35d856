"""The markets every stage knows: each one's name and time zone.

The producer polls the markets of the config file (``DROPS_CONFIG``, its ``[[markets]]``
tables) or, without a file, the one market of the flat settings (``DROPS_MARKET``,
``DROPS_TIME_ZONE``). The API, the page and the analysts' views serve the same list, each
market in its own time zone (local dates and hours), so this list is read in one place.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from drops.errors import DropsError
from drops.settings import Settings

__all__ = ["Market", "MarketError", "configured_markets"]

NAME = re.compile(r"^[a-z0-9_\-]{1,32}$")
"""A market name: part of every bucket id and of the API's filters."""


class MarketError(DropsError, ValueError):
    """A market list that cannot be served; the message names the key."""


@dataclass(frozen=True, slots=True)
class Market:
    name: str
    time_zone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


def _market(name: object, time_zone: object, where: str) -> Market:
    if not isinstance(name, str) or not NAME.match(name):
        raise MarketError(f"{where}.name: a market name is 1-32 of a-z 0-9 _ -, not {name!r}")
    if not isinstance(time_zone, str) or not time_zone or any(c in time_zone for c in "'\\"):
        raise MarketError(f"{where}.time_zone: not a time zone name: {time_zone!r}")
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise MarketError(f"{where}.time_zone: unknown time zone {time_zone!r}") from exc
    return Market(name, time_zone)


def configured_markets(settings: Settings) -> tuple[Market, ...]:
    """The markets, in the order configured; the first is the default of the API's
    single-market answers (``/buckets``, ``/stats/by-hour`` without ``?market=``)."""
    if settings.config is None:
        names = [m.strip() for m in settings.market.split(",") if m.strip()]
        return tuple(_market(n, settings.time_zone, "market") for n in names)
    try:
        doc = tomllib.loads(settings.config.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MarketError(f"config: cannot read {settings.config}: {exc}") from exc
    tables = doc.get("markets")
    if not isinstance(tables, list) or not tables:
        raise MarketError("markets: the config file lists no [[markets]]")
    out: list[Market] = []
    for i, t in enumerate(tables):
        where = f"markets[{i}]"
        if not isinstance(t, dict):
            raise MarketError(f"{where}: a table, not {type(t).__name__}")
        # the producer's default for a market without a zone (producers/config.py)
        m = _market(t.get("name"), t.get("time_zone", "America/New_York"), where)
        if any(o.name == m.name for o in out):
            raise MarketError(f"{where}.name: market {m.name!r} is listed twice")
        out.append(m)
    return tuple(out)
