"""The producer's view of its markets and providers: read from the settings
(:mod:`drops.settings`: ``settings.markets`` and the provider sections; the ``DROPS_CONFIG``
TOML file, ``producers/markets.example.toml``, is read there, with its precedence and its
errors naming the key). No secrets live here: a provider's key is read by the client factory
(the env var named by ``api_key_env``, else ``providers.resy.api_key``), never stored in a
:class:`Config` nor logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from drops.errors import ConfigError
from drops.settings import KNOWN_PROVIDERS, Area
from drops.settings import Market as MarketConfig
from drops.stages import ProducerSettings

__all__ = ["KNOWN_PROVIDERS", "Area", "Config", "ConfigError", "MarketConfig", "ProviderConfig"]


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    base_url: str
    concurrency: int
    rate_limit: float  # requests/s, 0 = none
    api_key_env: str = ""  # the env var holding the key (Resy); never the key itself
    per_page: int = 100  # Resy search page size
    batch: int = 50  # OpenTable restaurants per query
    fallback_max: int = 500  # Resy: most venues read by find when a search page failed


@dataclass(frozen=True, slots=True)
class Config:
    markets: tuple[MarketConfig, ...]
    providers: Mapping[str, ProviderConfig]
    source: str = "settings"  # the file it came from, or "settings"

    def market(self, name: str) -> MarketConfig:
        for m in self.markets:
            if m.name == name:
                return m
        raise KeyError(name)


def _provider(settings: ProducerSettings, name: str) -> ProviderConfig:
    if name == "resy":
        r = settings.providers.resy
        return ProviderConfig(
            name, r.base_url, r.concurrency, r.rate_limit, r.api_key_env, r.per_page,
            fallback_max=r.fallback_max,
        )  # fmt: skip
    o = settings.providers.opentable
    return ProviderConfig(name, o.base_url, o.concurrency, o.rate_limit, batch=o.batch)


def load(settings: ProducerSettings) -> Config:
    """The markets of the settings and the providers they poll."""
    used = sorted({p for m in settings.markets for p in m.providers})
    providers = {name: _provider(settings, name) for name in used}
    return Config(settings.markets, providers, settings.config_source)


from_settings = load
