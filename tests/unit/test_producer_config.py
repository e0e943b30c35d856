"""Markets and providers from TOML: the example file, precedence of env overrides, errors that
name the key, and credentials that never reach a log line, a repr or a record."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from drops.settings import Settings
from producers import config as cfg
from producers.providers import factory
from producers.providers.transport import Policy, Transport
from producers.service import ProducerService, log_config
from schemas import decode_snapshot

EXAMPLE = Path(__file__).resolve().parents[2] / "producers" / "markets.example.toml"
KEY = "sk-live-8f3a9c2e77d1"

MINIMAL = """
[[markets]]
name = "nyc"
time_zone = "America/New_York"
"""


def test_the_example_file_loads() -> None:
    conf = cfg.load(Settings(config=EXAMPLE))
    assert [m.name for m in conf.markets] == ["nyc", "chi"]
    nyc, chi = conf.markets
    assert nyc.providers == ("resy",) and nyc.party_sizes == (2,) and nyc.days == 14
    assert nyc.time_slots == ("15:00", "19:00") and nyc.poll_interval == 30.0
    assert nyc.area is not None and nyc.area.south == 40.49
    assert chi.time_zone == "America/Chicago" and chi.party_sizes == (2, 4)
    assert chi.venues == {"opentable": ("200001", "200002", "200003")}
    assert conf.providers["opentable"].rate_limit == 5.0
    assert conf.providers["resy"].api_key_env == "DROPS_PROVIDERS__RESY__API_KEY"
    assert conf.providers["resy"].fallback_max == 500
    assert conf.source == str(EXAMPLE)


def test_without_a_file_one_market_comes_from_the_settings() -> None:
    s = Settings(market="bos", time_zone="America/New_York", providers="resy,opentable")
    conf = cfg.load(s)
    (m,) = conf.markets
    assert (m.name, m.providers, m.party_sizes) == ("bos", ("resy", "opentable"), (2,))
    assert conf.providers["resy"].base_url == s.providers.resy.base_url


def _load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, env: dict[str, str], **kw: Any
) -> cfg.Config:
    path = tmp_path / "m.toml"
    path.write_text(text)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cfg.load(Settings(config=path, **kw))


def test_explicit_settings_and_path_overrides_beat_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = EXAMPLE.read_text()
    env = {
        "DROPS_CFG__PROVIDERS__RESY__CONCURRENCY": "16",
        "DROPS_CFG__MARKETS__CHI__PARTY_SIZES": "[2, 6]",
        "DROPS_CFG__MARKETS__NYC__TIME_ZONE": "America/Detroit",
        "DROPS_CFG__PRODUCER__DAYS": "7",
    }
    # poll_interval and concurrency as if DROPS_POLL_INTERVAL, DROPS_CONCURRENCY
    conf = _load(tmp_path, monkeypatch, text, env, poll_interval=5.0, concurrency=3)
    assert all(m.poll_interval == 5.0 and m.days == 7 for m in conf.markets)
    assert conf.providers["resy"].concurrency == 16  # the path beats DROPS_CONCURRENCY
    assert conf.providers["opentable"].concurrency == 3
    assert conf.market("chi").party_sizes == (2, 6)
    assert conf.market("nyc").time_zone == "America/Detroit"


@pytest.mark.parametrize(
    ("text", "env", "names"),
    [
        (MINIMAL.replace("America/New_York", "America/Nowhere"), {}, "markets[0].time_zone"),
        (MINIMAL + "colour = 'red'\n", {}, "markets[0].colour: unknown key"),
        (MINIMAL + "providers = ['yelp']\n", {}, "providers.yelp: unknown provider"),
        (MINIMAL + "time_slots = ['7pm']\n", {}, "markets[0].time_slots[0]"),
        (MINIMAL + "party_sizes = [0]\n", {}, "markets[0].party_sizes[0]"),
        (MINIMAL + "area = {south = 1, north = 2}\n", {}, "markets[0].area"),
        ("[providers.resy]\napi_key = 'x'\n" + MINIMAL, {}, "providers.resy.api_key: cred"),
        ("[providers.resy]\nper_page = 500\n" + MINIMAL, {}, "providers.resy.per_page"),
        ("[providers.resy]\nbase_url = 'ftp://x'\n" + MINIMAL, {}, "providers.resy.base_url"),
        (MINIMAL + MINIMAL, {}, "markets[1].name: market 'nyc' is listed twice"),
        ("markets = 3", {}, "markets: at least one"),
        ("[[markets]\n", {}, "not TOML"),
        (MINIMAL, {"DROPS_CFG__MARKETS__LA__DAYS": "3"}, "no market named 'la'"),
        (MINIMAL, {"DROPS_CFG__PROVIDERS__RESY__API_KEY": "x"}, "credentials"),
        (MINIMAL, {"DROPS_CFG__MARKETS__NYC__DAYS": "'many'"}, "markets[0].days"),
    ],
)
def test_errors_name_the_bad_key(
    text: str, env: dict[str, str], names: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(cfg.ConfigError) as err:
        _load(tmp_path, monkeypatch, text, env)
    assert names in str(err.value)
    if not env or "MARKETS" in next(iter(env)):  # an env var's own error names it instead
        assert str(err.value).startswith(f"config {tmp_path / 'm.toml'}")


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match="cannot read"):
        cfg.load(Settings(config=tmp_path / "nope.toml"))


def test_the_key_comes_from_the_env_and_never_reaches_logs_reprs_or_records(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DROPS_RESY_API_KEY", KEY)
    settings = Settings(config=EXAMPLE, days=1)
    conf = cfg.load(settings)
    seen_keys: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:  # a provider echoing the key back
        auth = request.headers.get("authorization", "")
        seen_keys.append(auth)
        return httpx.Response(419, text=f"bad credentials: {auth}")

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    transport = Transport(Policy(max_retries=0), client=client)
    providers = factory.build_market(settings, conf, conf.market("nyc"), transport)

    class Writer:
        def __init__(self) -> None:
            self.values: list[bytes] = []

        def write(self, topic: str, key: str, value: bytes) -> None:
            self.values.append(value)

        def flush(self, timeout: float = 30.0) -> int:
            return 0

    writer = Writer()
    service = ProducerService(settings, providers, writer, conf.market("nyc"))
    with caplog.at_level(logging.DEBUG):
        log_config(conf, settings)
        report = asyncio.run(service.run_once(datetime(2026, 3, 2, 17, tzinfo=UTC)))
    assert seen_keys and all(KEY in k for k in seen_keys)  # the key was sent ...
    assert report.incomplete == 2  # ... refused (419), and the fetches are unknown
    snaps = [decode_snapshot(v) for v in writer.values if v[:3] == b"DDS"]
    assert snaps and all(not s.complete for s in snaps)
    assert any('api_key="***"' in f.error for s in snaps for f in s.failures)  # scrubbed
    text = caplog.text + " ".join(orjson.dumps(r.__dict__, default=str).decode()
                                  for r in caplog.records)  # fmt: skip
    assert "provider_config" in text and "fetch_incomplete" in text
    for where in (text, repr(settings), str(settings.model_dump()), repr(conf),
                  repr(providers), b"".join(writer.values).decode("latin-1")):  # fmt: skip
        assert KEY not in where


def test_several_party_sizes_make_one_snapshot_with_merged_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = "2026-03-04"

    def handle(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        party = body["slot_filter"]["party_size"]
        start = f"{day} 19:00:00" if party == 2 else f"{day} 20:00:00"
        slot: dict[str, Any] = {
            "config": {"id": 1, "type": "Bar" if party == 2 else "Patio", "token": "t"},
            "date": {"start": start, "end": start},
            "size": {"min": party, "max": party},
        }
        both = {**slot, "date": {"start": f"{day} 18:00:00", "end": ""}}
        hit = {"id": {"resy": 7}, "name": "V", "location": {"time_zone": "EST5EDT"},
               "availability": {"slots": [slot, both]}}  # fmt: skip
        return httpx.Response(200, json={"search": {"hits": [hit], "nbHits": 1}})

    (tmp_path / "m.toml").write_text(MINIMAL + "party_sizes = [2, 4]\ndays = 1\n")
    settings = Settings(config=tmp_path / "m.toml")
    conf = cfg.load(settings)
    transport = Transport(Policy(), client=httpx.AsyncClient(transport=httpx.MockTransport(handle)))
    providers = factory.build_market(settings, conf, conf.markets[0], transport)

    class Writer:
        def __init__(self) -> None:
            self.values: list[bytes] = []

        def write(self, topic: str, key: str, value: bytes) -> None:
            if topic == settings.topics.snapshots:
                self.values.append(value)

        def flush(self, timeout: float = 30.0) -> int:
            return 0

    w = Writer()
    service = ProducerService(settings, providers, w, conf.markets[0])
    report = asyncio.run(service.run_once(datetime(2026, 3, 4, 17, tzinfo=UTC)))
    assert report.finished == 2 and report.requests == 4  # two buckets x two party sizes
    snap = next(decode_snapshot(v) for v in w.values if decode_snapshot(v).time_slot == "19:00")
    got = {s.actual_time: (s.seating_types, s.party_min, s.party_max) for s in snap.slots}
    assert got == {
        f"{day} 18:00:00": (("Bar", "Patio"), 2, 4),
        f"{day} 19:00:00": (("Bar",), 2, 2),
        f"{day} 20:00:00": (("Patio",), 4, 4),
    }
