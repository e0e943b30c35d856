"""Markets and providers from a TOML file (``DROPS_CONFIG=path.toml``), with env overrides.

Pure: reads a file (or text) and a mapping of env vars, returns a :class:`Config` or raises
:class:`ConfigError` naming the bad key (``markets[1].time_zone: ...``). No secrets live here:
a provider's key comes from the env var named by ``api_key_env`` and is read only by the
client factory, never stored in a ``Config`` nor logged.

Precedence, lowest first:

1. built-in defaults (the :class:`~drops.settings.Settings` defaults);
2. the file: ``[producer]`` (defaults of every market), ``[providers.<name>]`` (one per
   provider, shared by every market: base URL, limits), ``[[markets]]``;
3. settings given explicitly (an env var ``DROPS_<NAME>`` or a constructor argument),
   written into ``[producer]``, every market and every provider table: ``poll_interval``,
   ``days``, ``slide_at``, ``time_slots``, ``party_size``, ``resy_url``, ``opentable_url``,
   ``concurrency``, ``rate_limit``, ``resy_per_page``, ``opentable_batch``;
4. path overrides ``DROPS_CFG__<PATH>``, applied last to the one key they name: ``__``
   between keys, a market named by its name, the value read as a TOML value (else as
   text), e.g.
   ``DROPS_CFG__PROVIDERS__RESY__CONCURRENCY=16``, ``DROPS_CFG__MARKETS__NYC__DAYS=7``.

Without a file, one market comes from the flat settings (``market``, ``time_zone``, ...).
See ``producers/markets.example.toml``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from domain.calendar import parse_slide_at
from drops.errors import DropsError
from drops.settings import Settings
from producers.windows import minutes

KNOWN_PROVIDERS = ("resy", "opentable")
ENV_PATH_PREFIX = "DROPS_CFG__"
SECRET_KEYS = ("api_key", "key", "token", "secret", "password")


class ConfigError(DropsError, ValueError):
    """A config file or override that cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class Area:
    """A bounding box in degrees."""

    south: float
    west: float
    north: float
    east: float

    @property
    def center(self) -> tuple[float, float]:
        return (self.south + self.north) / 2, (self.west + self.east) / 2


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
class MarketConfig:
    name: str
    time_zone: str
    providers: tuple[str, ...]
    time_slots: tuple[str, ...]
    party_sizes: tuple[int, ...]
    poll_interval: float
    days: int
    slide_at: str
    area: Area | None = None
    venues: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # provider -> ids


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


# ------------------------------------------------------------------ reading values


def _table(doc: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}{key}: must be a table")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: must be a non-empty string, not {value!r}")
    return value.strip()


def _int(value: Any, where: str, lo: int = 1, hi: int = 10**9) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{where}: must be an integer in {lo}..{hi}, not {value!r}")
    return value


def _float(value: Any, where: str, lo: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < lo:
        raise ConfigError(f"{where}: must be a number >= {lo:g}, not {value!r}")
    return float(value)


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: must be a non-empty list, not {value!r}")
    return tuple(_str(v if not isinstance(v, int) else str(v), f"{where}[{i}]")
                 for i, v in enumerate(value))  # fmt: skip


def _time_slots(value: Any, where: str) -> tuple[str, ...]:
    slots = _strs(value, where)
    for i, t in enumerate(slots):
        try:
            minutes(t)
        except ValueError:
            raise ConfigError(f"{where}[{i}]: not a time of day HH:MM: {t!r}") from None
        if len(t) != 5:
            raise ConfigError(f"{where}[{i}]: write times as HH:MM, not {t!r}")
    if len(set(slots)) != len(slots):
        raise ConfigError(f"{where}: repeated bucket time")
    return slots


def _party_sizes(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, int):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: must be a non-empty list of integers, not {value!r}")
    return tuple(_int(v, f"{where}[{i}]", 1, 20) for i, v in enumerate(value))


def _zone(value: Any, where: str) -> str:
    name = _str(value, where)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: unknown time zone {name!r}") from None
    return name


def _check_keys(doc: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in doc:
        if key.lower() in SECRET_KEYS:
            raise ConfigError(
                f"{where}{key}: credentials never go in the config file; set the env var "
                "named by api_key_env (default DROPS_RESY_API_KEY)"
            )
        if key not in allowed:
            raise ConfigError(f"{where}{key}: unknown key (known: {', '.join(sorted(allowed))})")


# ------------------------------------------------------------------ building


_PRODUCER_KEYS = {"poll_interval", "days", "time_slots", "party_sizes", "slide_at"}
_PROVIDER_KEYS = {
    "base_url", "concurrency", "rate_limit", "api_key_env", "per_page", "batch", "fallback_max"
}  # fmt: skip
_MARKET_KEYS = _PRODUCER_KEYS | {"name", "time_zone", "providers", "area", "venues"}


def _defaults(settings: Settings) -> dict[str, Any]:
    return {
        "poll_interval": settings.poll_interval,
        "days": settings.days,
        "time_slots": list(settings.slot_times),
        "party_sizes": [settings.party_size],
        "slide_at": settings.slide_at,
    }


def _provider_defaults(settings: Settings, name: str) -> dict[str, Any]:
    return {
        "base_url": settings.resy_url if name == "resy" else settings.opentable_url,
        "concurrency": settings.concurrency,
        "rate_limit": settings.rate_limit,
        "api_key_env": "DROPS_RESY_API_KEY" if name == "resy" else "",
        "per_page": settings.resy_per_page,
        "batch": settings.opentable_batch,
        "fallback_max": 500,
    }


def _explicit(settings: Settings) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The settings given explicitly, as overrides of every market and provider."""
    given = settings.model_fields_set
    market: dict[str, Any] = {}
    for key in ("poll_interval", "days", "slide_at"):
        if key in given:
            market[key] = getattr(settings, key)
    if "time_slots" in given:
        market["time_slots"] = list(settings.slot_times)
    if "party_size" in given:
        market["party_sizes"] = [settings.party_size]
    provider: dict[str, dict[str, Any]] = {name: {} for name in KNOWN_PROVIDERS}
    for key, name, target in (
        ("resy_url", "resy", "base_url"),
        ("opentable_url", "opentable", "base_url"),
        ("resy_per_page", "resy", "per_page"),
        ("opentable_batch", "opentable", "batch"),
    ):
        if key in given:
            provider[name][target] = getattr(settings, key)
    for key in ("concurrency", "rate_limit"):
        if key in given:
            for name in KNOWN_PROVIDERS:
                provider[name][key] = getattr(settings, key)
    return market, provider


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env_paths(doc: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``DROPS_CFG__A__B__C=value`` sets ``doc[a][b][c]``; under ``markets`` the next key is a
    market's name. Keys are matched case-insensitively against the file's keys."""
    for env_key in sorted(environ):
        if not env_key.upper().startswith(ENV_PATH_PREFIX):
            continue
        path = [p.lower() for p in env_key[len(ENV_PATH_PREFIX) :].split("__") if p]
        if len(path) < 2:
            raise ConfigError(f"{env_key}: needs a path of at least two keys")
        if path[-1] in SECRET_KEYS:
            raise ConfigError(f"{env_key}: credentials are read from api_key_env, not set here")
        node: dict[str, Any] = doc
        i = 0
        while i < len(path) - 1:
            key = path[i]
            if node is doc and key == "markets":
                if i + 2 >= len(path):
                    raise ConfigError(f"{env_key}: needs a market name and a key")
                name = path[i + 1]
                found = [
                    m
                    for m in doc.get("markets") or []
                    if isinstance(m, dict) and str(m.get("name", "")).lower() == name
                ]
                if not found:
                    raise ConfigError(f"{env_key}: no market named {name!r} in the config")
                node, i = found[0], i + 2
                continue
            nxt = node.setdefault(key, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{env_key}: {key} is not a table")
            node, i = nxt, i + 1
        node[path[-1]] = _parse_env_value(environ[env_key])
    return doc


def build(
    doc: dict[str, Any], settings: Settings, environ: Mapping[str, str], source: str = "file"
) -> Config:
    """A :class:`Config` from a parsed TOML document (see the module doc for precedence)."""
    _check_keys(doc, {"producer", "providers", "markets"}, "")
    explicit_market, explicit_provider = _explicit(settings)
    if explicit_market or any(explicit_provider.values()):  # they beat the file ...
        doc = _with_explicit(doc, explicit_market, explicit_provider)
    doc = apply_env_paths(doc, environ)  # ... and the path overrides beat them

    producer = {**_defaults(settings), **_table(doc, "producer", "")}
    _check_keys(producer, _PRODUCER_KEYS, "producer.")

    provider_docs = _table(doc, "providers", "")
    providers: dict[str, ProviderConfig] = {}
    markets_doc = doc.get("markets")
    if not isinstance(markets_doc, list) or not markets_doc:
        raise ConfigError("markets: at least one [[markets]] table is needed")
    markets_doc = [  # a market without a providers list polls the settings' providers
        {"providers": list(settings.provider_names), **m} if isinstance(m, dict) else m
        for m in markets_doc
    ]
    used = {p for m in markets_doc if isinstance(m, dict) for p in _as_list(m.get("providers"))}
    for name in sorted(set(provider_docs) | used):
        where = f"providers.{name}"
        if name not in KNOWN_PROVIDERS:
            raise ConfigError(f"{where}: unknown provider (known: {', '.join(KNOWN_PROVIDERS)})")
        raw = provider_docs.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        _check_keys(raw, _PROVIDER_KEYS, f"{where}.")
        merged = {**_provider_defaults(settings, name), **raw}
        providers[name] = ProviderConfig(
            name=name,
            base_url=_str(merged["base_url"], f"{where}.base_url").rstrip("/"),
            concurrency=_int(merged["concurrency"], f"{where}.concurrency", 1, 1000),
            rate_limit=_float(merged["rate_limit"], f"{where}.rate_limit"),
            api_key_env=str(merged["api_key_env"] or ""),
            per_page=_int(merged["per_page"], f"{where}.per_page", 1, 100),
            batch=_int(merged["batch"], f"{where}.batch", 1, 500),
            fallback_max=_int(merged["fallback_max"], f"{where}.fallback_max", 0, 100_000),
        )
        if not providers[name].base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.base_url: must start with http:// or https://")

    markets: list[MarketConfig] = []
    for i, raw in enumerate(markets_doc):
        where = f"markets[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        _check_keys(raw, _MARKET_KEYS, f"{where}.")
        markets.append(_market(raw, producer, providers, where))
    names = [m.name for m in markets]
    if len(set(names)) != len(names):
        raise ConfigError("markets: two markets have the same name")
    return Config(tuple(markets), providers, source)


def _with_explicit(
    doc: dict[str, Any], market: dict[str, Any], provider: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """A copy of ``doc`` with the explicit settings written into ``[producer]``, every market
    and every provider table."""
    out = dict(doc)
    out["producer"] = {**_table(doc, "producer", ""), **market}
    markets = doc.get("markets")
    if isinstance(markets, list):
        out["markets"] = [{**m, **market} if isinstance(m, dict) else m for m in markets]
    provs = dict(_table(doc, "providers", ""))
    for name, values in provider.items():
        if values:
            current = provs.get(name, {})
            provs[name] = {**current, **values} if isinstance(current, dict) else current
    out["providers"] = provs
    return out


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value] if isinstance(value, list) else []


def _market(
    raw: dict[str, Any],
    producer: dict[str, Any],
    providers: Mapping[str, ProviderConfig],
    where: str,
) -> MarketConfig:
    m = {**producer, **raw}
    name = _str(m.get("name"), f"{where}.name")
    if ":" in name or "/" in name:
        raise ConfigError(f"{where}.name: no ':' or '/' in a market name ({name!r})")
    provider_names = _strs(m.get("providers"), f"{where}.providers")
    for p in provider_names:
        if p not in providers:
            raise ConfigError(f"{where}.providers: unknown provider {p!r}")
    area = None
    if "area" in m:
        a = m["area"]
        if not isinstance(a, dict) or set(a) != {"south", "west", "north", "east"}:
            raise ConfigError(f"{where}.area: needs south, west, north and east (degrees)")
        area = Area(*(float(_float(a[k], f"{where}.area.{k}", -180.0))
                      for k in ("south", "west", "north", "east")))  # fmt: skip
        if not (area.south < area.north and area.west < area.east):
            raise ConfigError(f"{where}.area: south < north and west < east are needed")
    venues: dict[str, tuple[str, ...]] = {}
    if "venues" in m:
        v = m["venues"]
        if not isinstance(v, dict):
            raise ConfigError(f"{where}.venues: a table of provider = [venue ids]")
        for p, ids in v.items():
            if p not in provider_names:
                raise ConfigError(f"{where}.venues.{p}: not a provider of this market")
            venues[p] = _strs(ids, f"{where}.venues.{p}")
    slide_at = _str(m["slide_at"], f"{where}.slide_at")
    try:
        parse_slide_at(slide_at)
    except ValueError as exc:
        raise ConfigError(f"{where}.slide_at: {exc}") from None
    return MarketConfig(
        name=name,
        time_zone=_zone(m.get("time_zone", "America/New_York"), f"{where}.time_zone"),
        providers=provider_names,
        time_slots=_time_slots(m["time_slots"], f"{where}.time_slots"),
        party_sizes=_party_sizes(m["party_sizes"], f"{where}.party_sizes"),
        poll_interval=_float(m["poll_interval"], f"{where}.poll_interval", 0.1),
        days=_int(m["days"], f"{where}.days", 1, 60),
        slide_at=slide_at,
        area=area,
        venues=venues,
    )


def from_settings(settings: Settings, environ: Mapping[str, str] | None = None) -> Config:
    """One market from the flat settings (no file): what the producer did before configs."""
    venues = {}
    ot = tuple(i.strip() for i in settings.opentable_venue_ids.split(",") if i.strip())
    if ot:
        venues["opentable"] = list(ot)
    doc: dict[str, Any] = {
        "markets": [
            {
                "name": settings.market,
                "time_zone": settings.time_zone,
                "providers": list(settings.provider_names),
                **({"venues": venues} if venues else {}),
            }
        ]
    }
    return build(doc, settings, environ or {}, source="settings")


def load(settings: Settings, environ: Mapping[str, str] | None = None) -> Config:
    """The config of ``settings.config`` (a TOML file), or one market from the settings."""
    import os

    env = os.environ if environ is None else environ
    if settings.config is None:
        return from_settings(settings, env)
    path = Path(settings.config)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read: {exc.strerror or exc}") from None
    return loads(text, settings, env, source=str(path))


def loads(
    text: str, settings: Settings, environ: Mapping[str, str], source: str = "<text>"
) -> Config:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {source}: not TOML: {exc}") from None
    try:
        return build(doc, settings, environ, source)
    except ConfigError as exc:
        raise ConfigError(f"config {source}: {exc}") from None
