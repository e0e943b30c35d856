"""Every Kafka client the project makes, configured in one place.

:func:`connection` is the librdkafka configuration of how to reach the cluster: the bootstrap
servers and the security settings (TLS, SASL; ``DROPS_KAFKA__SECURITY_PROTOCOL`` and the
``DROPS_KAFKA_SASL_*`` / ``DROPS_KAFKA_SSL_*`` settings). :func:`producer`, :func:`consumer`
and :func:`admin` build confluent-kafka clients from it plus the caller's own tuning, with
librdkafka's log lines going through our JSON logging (:func:`drops.log.kafka_logger`) and
its errors logged with a hint that names the setting to look at. :func:`quix_connection` is
the same connection for a Quix Streams ``Application`` (which makes its own clients).

:func:`check_access` is what a stage calls first: it answers within seconds, with an error
that names the setting, when the cluster refuses the credentials or the TLS handshake, instead
of a client that retries forever in the background.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from drops.errors import DropsError
from drops.log import get_log, kafka_logger
from drops.stages import KafkaSettings

if TYPE_CHECKING:
    from quixstreams.kafka import ConnectionConfig

log = get_log("kafka")

__all__ = [
    "KafkaAccessError",
    "admin",
    "check_access",
    "client_config",
    "connection",
    "consumer",
    "hint",
    "producer",
    "quix_connection",
]


class KafkaAccessError(DropsError, RuntimeError):
    """The cluster cannot be reached or refuses this client (the message names the setting).
    ``refused``: it answered and refused the credentials or the TLS handshake (retrying will
    not help), rather than not answering."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def connection(settings: KafkaSettings) -> dict[str, str]:
    """How to reach the cluster, as librdkafka settings (secrets in plain text: never log)."""
    conf = {"bootstrap.servers": settings.kafka.bootstrap}
    protocol = settings.kafka.security_protocol
    if protocol == "PLAINTEXT":
        return conf
    conf["security.protocol"] = protocol
    if protocol.startswith("SASL_"):
        conf["sasl.mechanism"] = settings.kafka.sasl_mechanism
        conf["sasl.username"] = settings.kafka.sasl_username
        conf["sasl.password"] = settings.kafka.sasl_password.get_secret_value()
    if protocol in ("SSL", "SASL_SSL"):
        if settings.kafka.ssl_ca_location:
            conf["ssl.ca.location"] = settings.kafka.ssl_ca_location
        if settings.kafka.ssl_certificate_location:
            conf["ssl.certificate.location"] = settings.kafka.ssl_certificate_location
            conf["ssl.key.location"] = settings.kafka.ssl_key_location
            if settings.kafka.ssl_key_password.get_secret_value():
                conf["ssl.key.password"] = settings.kafka.ssl_key_password.get_secret_value()
    return conf


def hint(settings: KafkaSettings, error: str) -> str:
    """Which setting to look at for a librdkafka error text."""
    text = error.lower()
    if "authentication" in text:  # not "sasl" alone: it is in every sasl_ssl:// address
        return (
            "the cluster refused the SASL credentials: check DROPS_KAFKA__SASL_USERNAME="
            f"{settings.kafka.sasl_username!r}, DROPS_KAFKA__SASL_PASSWORD and "
            f"DROPS_KAFKA__SASL_MECHANISM={settings.kafka.sasl_mechanism}"
        )
    if "handshake" in text or "certificate" in text or "ssl routines" in text:
        return (
            "the TLS handshake failed: check DROPS_KAFKA__SSL_CA_LOCATION="
            f"{settings.kafka.ssl_ca_location!r} (the CA of the brokers' certificates) and "
            f"DROPS_KAFKA__SECURITY_PROTOCOL={settings.kafka.security_protocol}"
        )
    if "security.protocol" in text or "apiversion" in text or "closed by peer" in text:
        return (
            f"the broker closed the connection: check DROPS_KAFKA__SECURITY_PROTOCOL="
            f"{settings.kafka.security_protocol} (a listener that expects SASL or TLS closes "
            f"other connections) and DROPS_KAFKA__BOOTSTRAP={settings.kafka.bootstrap}"
        )
    return (
        f"check DROPS_KAFKA__BOOTSTRAP={settings.kafka.bootstrap} and "
        f"DROPS_KAFKA__SECURITY_PROTOCOL={settings.kafka.security_protocol}"
    )


def _fatal(error: KafkaError) -> bool:
    """Errors that retrying will not cure: refused credentials or a failed TLS handshake."""
    return bool(error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL)) or (
        "authentication" in error.str().lower()
    )


def _error_logger(settings: KafkaSettings) -> Any:
    def on_error(error: KafkaError) -> None:
        level = log.error if _fatal(error) else log.warning
        level("kafka_error", code=error.name(), error=error.str()[:500],
              hint=hint(settings, error.str()))  # fmt: skip

    return on_error


def client_config(
    settings: KafkaSettings, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The connection plus ``extra`` (the caller's tuning), with an error logger."""
    return {"error_cb": _error_logger(settings), **connection(settings), **(extra or {})}


def producer(settings: KafkaSettings, extra: Mapping[str, Any] | None = None) -> Producer:
    return Producer(client_config(settings, extra), logger=kafka_logger())


def consumer(settings: KafkaSettings, extra: Mapping[str, Any]) -> Consumer:
    """A consumer (``extra`` carries at least ``group.id``)."""
    return Consumer(client_config(settings, extra), logger=kafka_logger())


def admin(settings: KafkaSettings, extra: Mapping[str, Any] | None = None) -> AdminClient:
    return AdminClient(client_config(settings, extra), logger=kafka_logger())


def quix_connection(settings: KafkaSettings) -> ConnectionConfig:
    """The connection for a Quix Streams application (its ``broker_address``)."""
    from quixstreams.kafka import ConnectionConfig  # only the processes that run Quix need it

    return ConnectionConfig.from_librdkafka_dict(connection(settings))


def check_access(settings: KafkaSettings, timeout: float = 30.0) -> None:
    """Return once the cluster answers this client's metadata request; raise
    :class:`KafkaAccessError` naming the setting to fix as soon as it refuses the credentials
    or the TLS handshake, or when nothing answers within ``timeout`` seconds."""
    errors: list[KafkaError] = []
    client = AdminClient({**connection(settings), "error_cb": errors.append}, logger=kafka_logger())
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            if client.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic()))).brokers:
                return
        except KafkaException as exc:
            last = str(exc.args[0] if exc.args else exc)
        client.poll(0)  # serves the error callback
        fatal = [e for e in errors if _fatal(e)]
        if fatal:
            text = fatal[-1].str()
            raise KafkaAccessError(f"Kafka at {settings.kafka.bootstrap}: {text}; "
                                   f"{hint(settings, text)}", refused=True)  # fmt: skip
        if time.monotonic() >= deadline:
            told = [e.str() for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
            text = told[-1] if told else last or (errors[-1].str() if errors else "")
            raise KafkaAccessError(
                f"no Kafka broker answered at DROPS_KAFKA__BOOTSTRAP={settings.kafka.bootstrap} "
                f"within {timeout:.0f} s ({text}); {hint(settings, text)}"
            )
