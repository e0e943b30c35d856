"""One Kafka client configuration: every client the product makes gets its connection (TLS,
SASL) from :mod:`drops.kafka`, secrets are never shown, and bad security settings are errors
that name the setting."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any, ClassVar

import pytest

from drops import kafka
from drops.errors import ConfigError
from drops.log import kafka_logger
from drops.settings import Settings
from drops.topics import topic_specs
from tests.conftest import ROOT

PRODUCT = ["api", "delivery", "domain", "drops", "processors", "producers", "schemas", "shell",
           "sinks", "store"]  # fmt: skip
CLIENTS = {"Producer", "Consumer", "AdminClient", "Application"}


def sasl_ssl(tmp_path: Path, **overrides: Any) -> Settings:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    values: dict[str, Any] = {
        "kafka_bootstrap": "b-1.example:9096,b-2.example:9096",
        "kafka_security_protocol": "sasl_ssl",
        "kafka_sasl_mechanism": "scram-sha-512",
        "kafka_sasl_username": "drops",
        "kafka_sasl_password": "hunter2-secret",
        "kafka_ssl_ca_location": str(ca),
    }
    values.update(overrides)
    return Settings(**values)


SECURITY = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "drops",
    "sasl.password": "hunter2-secret",
}


def test_plaintext_is_just_the_bootstrap() -> None:
    assert kafka.connection(Settings(kafka_bootstrap="h:1")) == {"bootstrap.servers": "h:1"}


def test_sasl_ssl_carries_mechanism_credentials_and_ca(tmp_path: Path) -> None:
    s = sasl_ssl(tmp_path)
    conf = kafka.connection(s)
    assert conf == {
        "bootstrap.servers": "b-1.example:9096,b-2.example:9096",
        **SECURITY,
        "ssl.ca.location": s.kafka.ssl_ca_location,
    }
    # the same connection for Quix Streams' own clients
    quix = kafka.quix_connection(s).as_librdkafka_dict()
    assert {k: str(v).upper() if k == "security.protocol" else v for k, v in quix.items()} == conf


def test_tls_client_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("c")
    key.write_text("k")
    s = Settings(kafka_security_protocol="SSL", kafka_ssl_certificate_location=str(cert),
                 kafka_ssl_key_location=str(key), kafka_ssl_key_password="kp")  # fmt: skip
    conf = kafka.connection(s)
    assert conf["security.protocol"] == "SSL" and "sasl.mechanism" not in conf
    assert conf["ssl.certificate.location"] == str(cert)
    assert conf["ssl.key.location"] == str(key) and conf["ssl.key.password"] == "kp"


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "DROPS_KAFKA__SASL_USERNAME"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"},
         "DROPS_KAFKA__SASL_PASSWORD"),
        ({"kafka_ssl_ca_location": "/nonexistent/ca.pem"}, "DROPS_KAFKA__SSL_CA_LOCATION"),
        ({"kafka_security_protocol": "TLS"}, "kafka.security_protocol"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "kafka.sasl_mechanism"),
        ({"topic_replication_factor": 1}, "DROPS_TOPICS__MIN_INSYNC_REPLICAS"),
    ],
)  # fmt: skip
def test_bad_security_settings_name_the_setting(values: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings(**values)


def test_the_password_is_never_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = sasl_ssl(tmp_path)
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    assert "hunter2" not in repr(kafka.quix_connection(s))
    text = "SASL authentication error: Authentication failed (invalid credentials)"
    tip = kafka.hint(s, text)
    assert "DROPS_KAFKA__SASL_PASSWORD" in tip and "hunter2" not in tip
    on_error = kafka.client_config(s)["error_cb"]
    with caplog.at_level(logging.WARNING, logger="drops.kafka"):
        on_error(kafka.KafkaError(kafka.KafkaError._AUTHENTICATION, text))
    [record] = caplog.records
    assert record.levelname == "ERROR" and "DROPS_KAFKA__SASL_PASSWORD" in record.hint  # type: ignore[attr-defined]
    assert "hunter2" not in str(vars(record))


def test_hints_name_the_setting_to_fix(tmp_path: Path) -> None:
    s = sasl_ssl(tmp_path)
    assert "DROPS_KAFKA__SSL_CA_LOCATION" in kafka.hint(
        s, "SSL handshake failed: certificate verify failed"
    )
    assert "DROPS_KAFKA__SECURITY_PROTOCOL" in kafka.hint(
        s, "Disconnected: connection closed by peer"
    )
    assert "DROPS_KAFKA__BOOTSTRAP" in kafka.hint(s, "Connect to ipv4#10.0.0.1:9096 failed")
    # librdkafka's lines name the sasl_ssl:// address: the hint goes by what failed
    at = "sasl_ssl://b-1.example:9096/bootstrap: "
    assert "DROPS_KAFKA__SSL_CA_LOCATION" in kafka.hint(s, at + "SSL handshake failed")
    assert "DROPS_KAFKA__SASL_PASSWORD" in kafka.hint(s, at + "SASL authentication error")


class Recorder:
    """Stands in for a confluent-kafka class: records the configuration it was given."""

    made: ClassVar[list[tuple[str, dict[str, Any], dict[str, Any]]]] = []

    def __init__(self, conf: dict[str, Any], **kwargs: Any) -> None:
        Recorder.made.append((type(self).__name__, conf, kwargs))

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def test_every_builder_carries_the_security_settings_and_our_logger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Recorder.made = []
    for name in ("Producer", "Consumer", "AdminClient"):
        monkeypatch.setattr(kafka, name, type(name, (Recorder,), {}))
    s = sasl_ssl(tmp_path)
    kafka.producer(s, {"acks": "all"})
    kafka.consumer(s, {"group.id": "g"})
    kafka.admin(s)
    # and the product's clients that are made without I/O
    from delivery.worker import Worker
    from producers.fleet import Fleet
    from producers.kafka import Writer

    Writer(s)
    Fleet(s, 1.0, lambda held: None)
    Worker(s)
    kinds = [kind for kind, _, _ in Recorder.made]
    assert kinds == ["Producer", "Consumer", "AdminClient", "Producer", "Consumer", "Producer"]
    for kind, conf, kwargs in Recorder.made:
        assert {k: conf[k] for k in SECURITY} == SECURITY, kind
        assert conf["ssl.ca.location"] == s.kafka.ssl_ca_location, kind
        assert kwargs["logger"] is kafka_logger(), kind


def _product_files() -> list[Path]:
    return sorted(p for d in PRODUCT for p in (ROOT / d).rglob("*.py"))


def test_every_client_the_product_makes_is_built_by_drops_kafka() -> None:
    """No product module constructs a confluent-kafka client or a Quix application with a
    connection of its own: clients come from :mod:`drops.kafka`, and every
    ``Application(...)`` gets ``broker_address=kafka.quix_connection(...)``."""
    wrong = []
    for path in _product_files():
        if path == ROOT / "drops" / "kafka.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = (
                f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            )
            if name not in CLIENTS:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno} {name}"
            if name != "Application":
                wrong.append(where)
                continue
            broker = {k.arg: k.value for k in node.keywords}.get("broker_address")
            if not (
                isinstance(broker, ast.Call)
                and isinstance(broker.func, ast.Attribute)
                and broker.func.attr == "quix_connection"
            ):
                wrong.append(where + " without broker_address=kafka.quix_connection(...)")
    assert wrong == []
    # and the check sees the call it must: the one Quix set-up (the processor and the matcher)
    apps = [p for p in _product_files() if "Application(" in p.read_text()]
    assert {p.name for p in apps} >= {"quix.py"}


def test_a_topic_can_have_a_replication_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "DROPS_TOPICS__REPLICATION",
        '{"drops": {"replication_factor": 5, "min_insync_replicas": 3}}',
    )
    s = Settings()
    specs = topic_specs(s)
    drops, snapshots = specs[s.topics.drops], specs[s.topics.snapshots]
    assert (drops.replication, drops.config["min.insync.replicas"]) == (5, "3")
    assert (snapshots.replication, snapshots.config["min.insync.replicas"]) == (3, "2")
    only_rf = Settings(topics={"replication": {"watches": {"replication_factor": 4}}})
    watches = topic_specs(only_rf)[only_rf.topics.watches]
    assert (watches.replication, watches.config["min.insync.replicas"]) == (4, "2")
    with pytest.raises(ConfigError, match=r"drops has min\.insync\.replicas 4"):
        Settings(
            topics={"replication": {"drops": {"replication_factor": 3, "min_insync_replicas": 4}}}
        )
    with pytest.raises(ConfigError, match=r"topics\.replication"):
        Settings(topics={"replication": {"bogus": {"replication_factor": 3}}})
