"""The local Apache Kafka broker: a single-node KRaft broker run from Maven Central jars.

``fetch`` resolves the pinned broker version into ``<data_dir>/kafka-<version>/lib`` once;
``start`` formats the storage on first use, starts the JVM detached and waits until the admin
API answers; ``stop`` ends it. Everything lives under the data folder, which git ignores.

The broker listens the way the clients connect (``DROPS_KAFKA__SECURITY_PROTOCOL``): plain,
SASL_PLAINTEXT with the configured user as its one account (PLAIN: a JAAS user; SCRAM: a
credential written into the storage when it is formatted), or with TLS (SSL, SASL_SSL) from
the PEM key and certificate chain in ``<data_dir>/broker/tls/server.pem`` (and the CA beside it
in ``ca.pem``), so the whole pipeline can be run through SASL and TLS on one machine. Its
topics get replication 1 (:func:`local_settings`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from drops import kafka, topics
from drops.errors import DropsError
from drops.log import get_log
from drops.settings import Settings

__all__ = [
    "BrokerError",
    "ensure_topics",
    "fetch",
    "is_ready",
    "local_settings",
    "start",
    "status",
    "stop",
]

log = get_log("broker")

_LOG4J = """log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
"""
_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
"""


class BrokerError(DropsError, RuntimeError):
    pass


@dataclass(frozen=True)
class Paths:
    home: Path  # jars and config for one Kafka version
    lib: Path
    data: Path  # the broker's log dirs
    config: Path
    pid: Path
    out: Path


LOCAL_TOPICS = {"create": True, "replication_factor": 1, "min_insync_replicas": 1}
"""The topics section on the single-node broker run here."""


def local_settings(settings: Settings) -> Settings:
    """``settings`` for the single-node broker run here: stages create missing topics, with
    replication 1 and ``min.insync.replicas`` 1 (unless those settings were given)."""
    given = settings.topics.model_fields_set
    update = {k: v for k, v in LOCAL_TOPICS.items() if k not in given}
    if not update:
        return settings
    local: Settings = settings.model_copy(
        update={"topics": settings.topics.model_copy(update=update)}
    )
    return local


def ensure_topics(settings: Settings) -> list[topics.Drift]:
    """The project's topics on the local broker (created if missing; drift returned)."""
    return topics.ensure_topics(local_settings(settings))


def paths(settings: Settings) -> Paths:
    root = settings.data_dir.resolve()
    home = settings.kafka.dist.resolve() / f"kafka-{settings.kafka.version}"
    broker = root / "broker"
    return Paths(
        home=home,
        lib=home / "lib",
        data=broker / "data",
        config=broker / "server.properties",
        pid=broker / "broker.pid",
        out=broker / "broker.log",
    )


def _host_port(settings: Settings) -> tuple[str, int]:
    first = settings.kafka.bootstrap.split(",")[0]
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port)


def fetch(settings: Settings) -> Path:
    """Resolve the broker's jars with Maven (once; later calls return at once)."""
    p = paths(settings)
    marker = p.lib / ".complete"
    if marker.exists():
        return p.lib
    if not shutil.which("mvn") or not shutil.which("java"):
        raise BrokerError("the local broker needs java (17+) and mvn on PATH")
    p.home.mkdir(parents=True, exist_ok=True)
    pom = p.home / "pom.xml"
    pom.write_text(resources.files("shell").joinpath("kafka/pom.xml").read_text())
    log.info("kafka_fetch_start", version=settings.kafka.version, into=str(p.lib))
    started = time.monotonic()
    cmd = [
        "mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={p.lib}",
        f"-Dkafka.version={settings.kafka.version}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"maven could not fetch Kafka {settings.kafka.version}:\n{result.stdout}")
    marker.write_text(settings.kafka.version)
    log.info("kafka_fetch_done", seconds=round(time.monotonic() - started, 1))
    return p.lib


def _java(settings: Settings, main: str, *args: str) -> list[str]:
    p = paths(settings)
    return [
        "java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC",
        "-cp", f"{p.lib}/*",
        f"-Dlog4j.configuration=file:{p.home / 'log4j.properties'}",
        f"-Dlog4j2.configurationFile={p.home / 'log4j2.properties'}",
        main, *args,
    ]  # fmt: skip


def _jaas_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tls_files(settings: Settings) -> tuple[Path, Path]:
    """Where the local broker's TLS key and certificate chain (one PEM file) and its CA are."""
    tls = settings.data_dir.resolve() / "broker" / "tls"
    return tls / "server.pem", tls / "ca.pem"


def _tls_config(settings: Settings) -> list[str]:
    server, ca = tls_files(settings)
    if not server.is_file():
        raise BrokerError(
            f"the local broker with DROPS_KAFKA__SECURITY_PROTOCOL="
            f"{settings.kafka.security_protocol} needs its private key (PKCS#8) and certificate "
            f"chain in one PEM file: {server}"
        )
    lines = ["ssl.keystore.type=PEM", f"ssl.keystore.location={server}", "ssl.client.auth=none"]
    if ca.is_file():  # the broker's own connections to its listener trust it
        lines += ["ssl.truststore.type=PEM", f"ssl.truststore.location={ca}"]
    return lines


def _listener_config(settings: Settings) -> list[str]:
    """The client listener's lines: plain, TLS, and SASL with the configured account (also
    the broker's own identity towards itself)."""
    protocol = settings.kafka.security_protocol
    lines = [f"inter.broker.listener.name={protocol}"]
    if protocol in ("SSL", "SASL_SSL"):
        lines += _tls_config(settings)
    if not protocol.startswith("SASL_"):
        return lines
    mech = settings.kafka.sasl_mechanism
    user = settings.kafka.sasl_username
    password = settings.kafka.sasl_password.get_secret_value()
    creds = f"username={_jaas_quote(user)} password={_jaas_quote(password)}"
    if mech == "PLAIN":
        module = "org.apache.kafka.common.security.plain.PlainLoginModule"
        jaas = f"{module} required {creds} user_{user}={_jaas_quote(password)};"
    else:
        jaas = f"org.apache.kafka.common.security.scram.ScramLoginModule required {creds};"
    return [
        *lines,
        f"sasl.enabled.mechanisms={mech}",
        f"sasl.mechanism.inter.broker.protocol={mech}",
        f"listener.name.{protocol.lower()}.{mech.lower()}.sasl.jaas.config={jaas}",
    ]


def _scram_args(settings: Settings) -> list[str]:
    """``StorageTool format`` options that write the SCRAM account (KRaft keeps it in the
    metadata log, so it must be there before the broker first starts)."""
    if not (
        settings.kafka.security_protocol.startswith("SASL_")
        and settings.kafka.sasl_mechanism.startswith("SCRAM-")
    ):
        return []
    user = settings.kafka.sasl_username
    password = settings.kafka.sasl_password.get_secret_value()
    return ["--add-scram", f"{settings.kafka.sasl_mechanism}=[name={user},password={password}]"]


def _write_config(settings: Settings) -> None:
    p = paths(settings)
    host, port = _host_port(settings)
    ctrl = settings.kafka.controller_port
    name = settings.kafka.security_protocol
    p.config.parent.mkdir(parents=True, exist_ok=True)
    (p.home / "log4j.properties").write_text(_LOG4J)
    (p.home / "log4j2.properties").write_text(_LOG4J2)
    p.config.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers={host}:{ctrl}",
                f"listeners={name}://{host}:{port},CONTROLLER://{host}:{ctrl}",
                f"advertised.listeners={name}://{host}:{port}",
                "controller.listener.names=CONTROLLER",
                f"listener.security.protocol.map={name}:{name},CONTROLLER:PLAINTEXT",
                *_listener_config(settings),
                f"log.dirs={p.data}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                f"message.max.bytes={settings.kafka.max_message_bytes}",
                "auto.create.topics.enable=false",
                "",
            ]
        )
    )


def _running_pid(settings: Settings) -> int | None:
    p = paths(settings)
    try:
        pid = int(p.pid.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def is_ready(settings: Settings, timeout: float = 2.0) -> bool:
    """True when the broker's admin API answers with its metadata."""
    admin = kafka.admin(settings, {"log_level": 0, "error_cb": lambda _: None})
    try:
        meta = admin.list_topics(timeout=timeout)
    except Exception:
        return False
    return bool(meta.brokers)


def start(settings: Settings, wait: float = 60.0) -> int:
    """Start the broker unless one already answers; return its pid (0 when not ours)."""
    if is_ready(settings, timeout=1.0):
        pid = _running_pid(settings) or 0
        log.info("broker_already_running", bootstrap=settings.kafka.bootstrap, pid=pid)
        return pid
    fetch(settings)
    _write_config(settings)
    p = paths(settings)
    if not (p.data / "meta.properties").exists():
        cluster = uuid.uuid4().hex[:22]
        fmt = _java(
            settings,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster,
            "-c",
            str(p.config),
            "--standalone",
            *_scram_args(settings),
        )
        result = subprocess.run(fmt, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(
                f"formatting the broker storage failed:\n{result.stdout}{result.stderr}"
            )
    out = open(p.out, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        _java(settings, "kafka.Kafka", str(p.config)),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    p.pid.write_text(str(proc.pid))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = p.out.read_text(errors="replace")[-3000:]
            raise BrokerError(f"the broker exited with {proc.returncode}:\n{tail}")
        if is_ready(settings, timeout=1.0):
            log.info("broker_started", bootstrap=settings.kafka.bootstrap, pid=proc.pid)
            return proc.pid
        time.sleep(0.3)
    raise BrokerError(f"the broker did not answer within {wait:.0f}s; see {p.out}")


def stop(settings: Settings, wait: float = 30.0) -> bool:
    """Stop the broker this project started; True if one was running."""
    pid = _running_pid(settings)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
    paths(settings).pid.unlink(missing_ok=True)
    log.info("broker_stopped", pid=pid)
    return True


def status(settings: Settings) -> dict[str, object]:
    return {
        "bootstrap": settings.kafka.bootstrap,
        "pid": _running_pid(settings),
        "ready": is_ready(settings, timeout=1.0),
        "version": settings.kafka.version,
    }
