"""The settings' sections: every old flat ``DROPS_*`` name still lands in its new place, with a
deprecation warning said once; the new nested names, typed lists and the old constructor and
``model_copy`` keys."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from drops import log as drops_log
from drops.errors import ConfigError
from drops.settings import FLAT, Settings, env_name

# a value of the right type for each old name (the env gives text)
SAMPLES: dict[str, str] = {
    "kafka_dist": "/tmp/dist",
    "state_path": "/tmp/state",
    "time_zone": "America/Chicago",
    "time_slots": "10:00,11:30",
    "providers": "resy,opentable",
    "opentable_venue_ids": "1,2",
    "party_size": "4",
    "slide_at": "03:10",
    "resy_url": "http://resy.test",
    "opentable_url": "http://ot.test",
    "api_cors_origins": "https://a.test,https://b.test",
    "api_keys": "k1,k2",
    "sim_fault_kinds": "5xx,429",
    "sim_reach": "90,150",
    "sim_scripted": "true",
    "up_simulator": "false",
    "clock_start": "2026-12-01T19:50:00Z",
    "log_format": "text",
    "provider_http": "httpx",
    "kafka_security_protocol": "SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-256",
    "kafka_ssl_ca_location": __file__,  # a file that exists
    "kafka_ssl_certificate_location": __file__,
    "kafka_ssl_key_location": __file__,
    "topic_min_insync_replicas": "1",
    "clock_anchor": "12.5",
    "log_level": "DEBUG",
}
EXPECTED: dict[str, Any] = {
    "time_slots": ("10:00", "11:30"),
    "providers": ("resy", "opentable"),
    "opentable_venue_ids": ("1", "2"),  # (venues of the market only if it polls OpenTable)
    "party_size": (4,),
    "api_cors_origins": ("https://a.test", "https://b.test"),
    "api_keys": ("k1", "k2"),
    "sim_fault_kinds": ("5xx", "429"),
    "sim_reach": (90, 150),
    "sim_scripted": True,
    "up_simulator": False,
    "kafka_dist": Path("/tmp/dist"),
    "clock_anchor": 12.5,
    "state_path": Path("/tmp/state"),
    "topic_min_insync_replicas": 1,  # (7, the default sample, is above the replication factor)
    "kafka_ssl_ca_location": __file__,
}


TOGETHER = {
    "kafka_ssl_certificate_location": ("kafka_ssl_key_location",),
    "kafka_ssl_key_location": ("kafka_ssl_certificate_location",),
}


def _sample(name: str, field: Any) -> tuple[str, Any]:
    if name in SAMPLES:
        text = SAMPLES[name]
        return text, EXPECTED.get(name, text)
    default = field
    if isinstance(default, bool):
        return "true", True
    if isinstance(default, int):
        return "7", 7
    if isinstance(default, float):
        return "2.5", 2.5
    return f"x-{name}", f"x-{name}"


def _at(s: Settings, path: str) -> Any:
    value: Any = s
    for part in path.split("."):
        value = getattr(value, "clock_" if part == "clock" and value is s else part)
    return value


@pytest.mark.parametrize("old", sorted(FLAT))
def test_every_old_env_name_lands_in_its_new_place(
    old: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = _at(Settings(), FLAT[old])
    if isinstance(default, SecretStr):
        default = default.get_secret_value()
    text, want = _sample(old, default)
    monkeypatch.setenv(f"DROPS_{old.upper()}", text)
    for name in TOGETHER.get(old, ()):  # a setting that is only valid with another one
        monkeypatch.setenv(env_name(FLAT[name]), SAMPLES[name])
    got = _at(Settings(), FLAT[old])
    if isinstance(got, SecretStr):
        got = got.get_secret_value()
    assert got == want, (old, FLAT[old])


@pytest.mark.parametrize("old", sorted(FLAT))
def test_every_new_env_name_is_read(old: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each setting under its new name ``DROPS_<SECTION>__<NAME>`` (the names the stages hand
    their children): DROPS_CLOCK__START was not read, so child stages ran on the real clock."""
    default = _at(Settings(), FLAT[old])
    if isinstance(default, SecretStr):
        default = default.get_secret_value()
    text, want = _sample(old, default)
    monkeypatch.setenv(env_name(FLAT[old]), text)
    for name in TOGETHER.get(old, ()):
        monkeypatch.setenv(env_name(FLAT[name]), SAMPLES[name])
    got = _at(Settings(), FLAT[old])
    if isinstance(got, SecretStr):
        got = got.get_secret_value()
    assert got == want, (env_name(FLAT[old]), FLAT[old])


def test_a_bare_clock_name_of_the_environment_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOCK__START", "2026-03-08T06:59:00Z")
    assert Settings().clock_.start == ""


@pytest.mark.parametrize("old", ["sse_ping", "api_keys", "time_slots", "resy_api_key"])
def test_the_new_name_beats_the_old_and_constructor_keys_beat_both(
    old: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"DROPS_{old.upper()}", SAMPLES.get(old, "1.5"))
    new = {"sse_ping": "2.5", "api_keys": '["n1"]', "time_slots": '["08:00"]'}.get(old, "n")
    monkeypatch.setenv(env_name(FLAT[old]), new)
    got = _at(Settings(), FLAT[old])
    want = {"sse_ping": 2.5, "api_keys": ("n1",), "time_slots": ("08:00",)}.get(old, "n")
    assert (got.get_secret_value() if isinstance(got, SecretStr) else got) == want
    if old == "sse_ping":
        assert Settings(sse_ping=9.0).sse.ping == 9.0


def test_an_old_name_is_warned_once_through_our_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(drops_log, "_warned", set())
    monkeypatch.setattr(drops_log, "_pending", [])
    monkeypatch.setattr(drops_log, "_configured", True)
    monkeypatch.setenv("DROPS_SSE_PING", "3")
    monkeypatch.setenv("DROPS_CFG__PROVIDERS__RESY__CONCURRENCY", "5")
    monkeypatch.setenv("DROPS_SSE__RING", "10")  # a new name: no warning
    with caplog.at_level(logging.WARNING, logger="drops.settings"):
        for _ in range(3):
            s = Settings()
    assert s.sse.ping == 3.0 and s.providers.resy.concurrency == 5 and s.sse.ring == 10
    warned = [
        (r.__dict__["setting"], r.__dict__["use"])
        for r in caplog.records
        if r.getMessage() == "deprecated_setting"
    ]
    assert sorted(warned) == [
        ("DROPS_CFG__PROVIDERS__RESY__CONCURRENCY", "DROPS_PROVIDERS__RESY__CONCURRENCY"),
        ("DROPS_SSE_PING", "DROPS_SSE__PING"),
    ]


def test_a_warning_before_the_log_is_configured_waits_for_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(drops_log, "_warned", set())
    monkeypatch.setattr(drops_log, "_pending", [])
    monkeypatch.setattr(drops_log, "_configured", False)
    monkeypatch.setenv("DROPS_API_PORT", "8123")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert Settings().api.port == 8123
        assert drops_log._pending
        drops_log.configure("INFO", "json")
        root.addHandler(caplog.handler)
        assert not drops_log._pending
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_old_keys_of_constructors_and_copies_and_typed_lists() -> None:
    s = Settings(kafka_bootstrap="b:1", api_keys="a, b", party_size=3, market="bos",
                 resy_api_key="sk-secret-9")  # fmt: skip
    assert s.kafka.bootstrap == "b:1" and s.api.keys == ("a", "b")
    assert s.producer.party_sizes == (3,) and s.markets[0].name == "bos"
    c = s.model_copy(update={"poll_interval": 0.5, "api_keys": "x", "concurrency": 2})
    assert c.markets[0].poll_interval == 0.5 and c.api.keys == ("x",)
    assert c.providers.resy.concurrency == 2 and c.providers.opentable.concurrency == 2
    assert s.api.keys == ("a", "b")  # the original is untouched
    nested = s.model_copy(update={"sse": {"ping": 0.3}, "clock": {"start": ""}})
    assert nested.sse.ping == 0.3 and nested.sse.ring == s.sse.ring
    assert "keys" not in repr(s.api) and "sk-secret-9" not in repr(s)  # secrets stay out


def test_bad_values_name_the_new_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"producer\.time_slots\[0\]"):
        Settings(time_slots="7pm")
    with pytest.raises(ConfigError, match=r"sse\.ping"):
        Settings(sse_ping="soon")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrapp: unknown key"):
        Settings(kafka={"bootstrapp": "x"})
    monkeypatch.setenv("DROPS_MARKETS", "not json")
    with pytest.raises(ConfigError, match="markets"):
        Settings()


EXAMPLE = Path(__file__).resolve().parents[2] / "producers" / "markets.example.toml"


def test_the_file_under_the_new_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPS_CONFIG", str(EXAMPLE))
    monkeypatch.setenv("DROPS_PRODUCER__DAYS", "3")  # explicit: every market of the file
    monkeypatch.setenv("DROPS_PROVIDERS__RATE_LIMIT", "2")  # explicit: every provider
    monkeypatch.setenv("DROPS_MARKETS__CHI__PARTY_SIZES", "[6]")  # one key of one market
    monkeypatch.setenv("DROPS_PROVIDERS__RESY__BASE_URL", "http://resy.test/")
    s = Settings()
    assert [(m.name, m.days) for m in s.markets] == [("nyc", 3), ("chi", 3)]
    assert s.find_market("chi").party_sizes == (6,) and s.find_market("nyc").party_sizes == (2,)
    assert s.providers.opentable.rate_limit == 2.0 and s.providers.resy.rate_limit == 2.0
    assert s.providers.opentable.concurrency == 4  # the file's, nothing explicit
    assert s.providers.resy.base_url == "http://resy.test"
    assert s.config_source == str(EXAMPLE)


def test_without_explicit_values_the_file_wins_over_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        '[producer]\ndays = 5\n[[markets]]\nname = "bos"\n[[markets]]\nname = "sf"\n'
        'time_zone = "America/Los_Angeles"\ndays = 2\n'
    )
    s = Settings(config=path)
    assert [(m.name, m.days, m.time_zone) for m in s.markets] == [
        ("bos", 5, "America/New_York"),
        ("sf", 2, "America/Los_Angeles"),
    ]
    assert s.producer.days == 5  # the section itself holds the file's [producer]


def test_a_copy_with_a_config_file_reads_it_and_keeps_what_was_explicit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = Settings(kafka_bootstrap="b:1", poll_interval=4.0)
    monkeypatch.setenv("DROPS_MARKETS__CHI__DAYS", "9")  # (no market chi without the file)
    s = base.model_copy(update={"config": EXAMPLE, "sse_ping": 2.0})
    assert s.config == EXAMPLE and s.config_source == str(EXAMPLE)
    assert [m.name for m in s.markets] == ["nyc", "chi"]
    assert all(m.poll_interval == 4.0 for m in s.markets)  # explicit beats the file
    assert s.find_market("chi").days == 9 and s.find_market("nyc").days == 14
    assert s.providers.opentable.rate_limit == 5.0 and s.kafka.bootstrap == "b:1"
    assert s.sse.ping == 2.0 and base.config is None and len(base.markets) == 1
    back = s.model_copy(update={"config": None})
    assert [m.name for m in back.markets] == ["nyc"] and back.config_source == "settings"
    with pytest.raises(ConfigError, match="cannot read"):
        base.model_copy(update={"config": Path("/nonexistent/m.toml")})


def test_a_copy_marks_as_given_only_what_was_given() -> None:
    """A copy that sets one topic name leaves the other topic settings defaults, so the local
    broker's single-replica topics still apply (the processor benchmark's copy once marked
    every topic setting given: its topics asked for 3 replicas on the one local broker)."""
    from shell.broker import local_settings

    base = Settings(snapshot_partitions=2)
    copy = base.model_copy(update={"snapshot_topic": "b.snapshots"})
    assert copy.topics.model_fields_set == {"snapshots", "snapshots_partitions"}
    local = local_settings(copy).topics
    assert (local.create, local.replication_factor, local.min_insync_replicas) == (True, 1, 1)
    assert (local.snapshots, local.snapshots_partitions) == ("b.snapshots", 2)
    given = Settings(topic_replication_factor=2).model_copy(update={"drops_topic": "b.events"})
    assert local_settings(given).topics.replication_factor == 2  # given: kept


def test_an_unknown_key_given_in_code_is_an_error() -> None:
    """``Settings(topic_partitions=2)`` was once taken and ignored (no such setting)."""
    with pytest.raises(ConfigError, match="Settings\\(\\): unknown setting topic_partitions"):
        Settings(topic_partitions=2)
    with pytest.raises(ConfigError, match="model_copy\\(\\): unknown setting sse_pingg"):
        Settings().model_copy(update={"sse_pingg": 1.0})
    assert Settings(clock={"start": ""}, sse={"ping": 0.5}).sse.ping == 0.5  # sections, alias
