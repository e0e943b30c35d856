"""Build the provider clients and their shared transport from settings."""

from __future__ import annotations

from drops.settings import Settings
from producers.providers.base import Provider
from producers.providers.opentable import OpenTableClient, OtVenue
from producers.providers.resy import ResyClient
from producers.providers.transport import Policy, Transport


def policy(settings: Settings) -> Policy:
    return Policy(
        timeout=settings.request_timeout,
        max_retries=settings.max_retries,
        retry_base=settings.retry_base,
        retry_max_delay=settings.retry_max_delay,
        retry_after_max=settings.retry_after_max,
        concurrency=settings.concurrency,
        rate_limit=settings.rate_limit,
        breaker_failures=settings.breaker_failures,
        breaker_reset=settings.breaker_reset,
    )


def build(settings: Settings, transport: Transport | None = None) -> dict[str, Provider]:
    """The clients of ``settings.providers`` sharing one transport (one pooled HTTP client)."""
    transport = transport or Transport(policy(settings))
    out: dict[str, Provider] = {}
    for name in settings.provider_names:
        if name == "resy":
            out[name] = ResyClient(
                transport,
                settings.resy_url,
                settings.resy_api_key,
                settings.user_agent,
                per_page=settings.resy_per_page,
            )
        elif name == "opentable":
            ids = tuple(i.strip() for i in settings.opentable_venue_ids.split(",") if i.strip())
            out[name] = OpenTableClient(
                transport,
                settings.opentable_url,
                settings.user_agent,
                venues=tuple(OtVenue(i, f"OpenTable {i}") for i in ids),
                batch=settings.opentable_batch,
            )
        else:
            raise ValueError(f"unknown provider {name!r} (known: resy, opentable)")
    return out
