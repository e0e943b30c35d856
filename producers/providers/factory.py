"""Build the provider clients and their shared transport from settings and the market config.

Keys are read here, from the env var a provider's config names (``api_key_env``), and go
only into the client's request headers: never into a config object, a repr or a log line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from drops.stages import ProducerSettings
from producers import config as cfg
from producers.providers.base import Provider
from producers.providers.opentable import OpenTableClient, OtVenue
from producers.providers.resy import ResyClient
from producers.providers.transport import Policy, Transport


def policy(settings: ProducerSettings) -> Policy:
    return Policy(
        timeout=settings.providers.request_timeout,
        max_retries=settings.providers.max_retries,
        retry_base=settings.providers.retry_base,
        retry_max_delay=settings.providers.retry_max_delay,
        retry_after_max=settings.providers.retry_after_max,
        concurrency=settings.providers.concurrency,
        rate_limit=settings.providers.rate_limit,
        breaker_failures=settings.providers.breaker_failures,
        breaker_reset=settings.providers.breaker_reset,
        http=settings.providers.http,
    )


def transport_for(settings: ProducerSettings, config: cfg.Config) -> Transport:
    """One pooled transport for every market; one lane (limits, breaker) per provider."""
    pool = sum(p.concurrency for p in config.providers.values()) * 2
    transport = Transport(policy(settings), connections=pool)
    for p in config.providers.values():
        transport.configure(p.name, p.concurrency, p.rate_limit)
    return transport


def api_key(
    settings: ProducerSettings, provider: cfg.ProviderConfig, environ: Mapping[str, str]
) -> str:
    """The provider's key: the env var its config names, else ``providers.resy.api_key``
    (``DROPS_PROVIDERS__RESY__API_KEY``, old name ``DROPS_RESY_API_KEY``)."""
    if provider.api_key_env and provider.api_key_env in environ:
        return environ[provider.api_key_env]
    return settings.providers.resy.api_key.get_secret_value()


def build_market(
    settings: ProducerSettings,
    config: cfg.Config,
    market: cfg.MarketConfig,
    transport: Transport,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Provider]:
    """The clients of one market's providers, sharing ``transport``."""
    env = os.environ if environ is None else environ
    out: dict[str, Provider] = {}
    for name in market.providers:
        p = config.providers[name]
        venues = tuple(market.venues.get(name, ()))
        if name == "resy":
            geo = None
            if market.area is not None:
                lat, lng = market.area.center
                a = market.area
                geo = {
                    "latitude": lat,
                    "longitude": lng,
                    "bounding_box": [a.south, a.west, a.north, a.east],
                }
            out[name] = ResyClient(
                transport,
                p.base_url,
                api_key(settings, p, env),
                settings.providers.user_agent,
                per_page=p.per_page,
                venue_ids=venues if market.area is None else (),
                geo=geo,
                directory=venues,
                fallback_max=p.fallback_max,
            )
        elif name == "opentable":
            out[name] = OpenTableClient(
                transport,
                p.base_url,
                settings.providers.user_agent,
                venues=tuple(OtVenue(i, f"OpenTable {i}") for i in venues),
                batch=p.batch,
            )
        else:  # config.build refuses unknown providers; this guards a hand-made Config
            raise ValueError(f"unknown provider {name!r} (known: resy, opentable)")
    return out


def build(settings: ProducerSettings, transport: Transport | None = None) -> dict[str, Provider]:
    """The clients of the first market of the config (file or flat settings): tests, bench."""
    config = cfg.load(settings)
    transport = transport or transport_for(settings, config)
    return build_market(settings, config, config.markets[0], transport)
