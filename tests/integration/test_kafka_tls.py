"""SASL over TLS (SASL_SSL, SCRAM-SHA-512) on the local broker, with a CA and a server
certificate made here: the project's clients verify the broker against
``DROPS_KAFKA__SSL_CA_LOCATION``, `drops broker topics` creates the topics through it, records
go through a producer and a consumer built by drops.kafka, and a client that trusts another CA
is refused at once with an error naming the CA setting."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.pipeline import settings_env
from drops import kafka
from drops.settings import Settings
from shell import broker
from tests.conftest import isolated_settings

pytestmark = pytest.mark.kafka

TLS_BOOTSTRAP = os.environ.get("DROPS_TEST_KAFKA_TLS_BOOTSTRAP", "127.0.0.1:19198")
TLS_CONTROLLER_PORT = int(os.environ.get("DROPS_TEST_KAFKA_TLS_CONTROLLER_PORT", "19199"))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(folder: Path, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def make_server_pem(folder: Path, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> None:
    """``server.pem``: the broker's PKCS#8 key and its certificate (for 127.0.0.1 and
    localhost), then the CA's."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("drops-test-broker"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pem += cert.public_bytes(serialization.Encoding.PEM)
    pem += ca.public_bytes(serialization.Encoding.PEM)
    (folder / "server.pem").write_bytes(pem)


@pytest.fixture(scope="module")
def tls_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("tls")
    data = root / "data"
    server, ca_file = broker.tls_files(Settings(data_dir=data))
    ca_key, ca = make_ca(server.parent, "drops test CA")
    make_server_pem(server.parent, ca_key, ca)
    s = isolated_settings(
        root,
        "tls",
        data_dir=data,
        kafka_bootstrap=TLS_BOOTSTRAP,
        kafka_controller_port=TLS_CONTROLLER_PORT,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="drops-tls",
        kafka_sasl_password="tls-s3cret",
        kafka_ssl_ca_location=str(ca_file),
    )
    broker.start(s, wait=120)
    try:
        yield s
    finally:
        broker.stop(s)


def test_topics_and_records_go_through_sasl_over_tls(tls_settings: Settings) -> None:
    s = tls_settings
    out = subprocess.run(
        [sys.executable, "-m", "shell.cli", "broker", "topics"],
        env=settings_env(s, DROPS_LOG__FORMAT="json"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    topic, value = s.topics.deadletter, uuid.uuid4().bytes
    p = kafka.producer(s, {"acks": "all"})
    p.produce(topic, value)
    assert p.flush(30) == 0
    c = kafka.consumer(s, {"group.id": "tls-reader", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    deadline = time.monotonic() + 30
    got = None
    while got is None and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got = m.value()
    c.close()
    assert got == value


def test_a_client_that_trusts_another_ca_is_refused_naming_the_ca_setting(
    tls_settings: Settings, tmp_path: Path
) -> None:
    make_ca(tmp_path, "someone else's CA")
    other = tls_settings.model_copy(update={"kafka_ssl_ca_location": str(tmp_path / "ca.pem")})
    started = time.monotonic()
    with pytest.raises(kafka.KafkaAccessError, match="DROPS_KAFKA__SSL_CA_LOCATION") as err:
        kafka.check_access(other)
    assert err.value.refused
    assert time.monotonic() - started < 15
