"""Structured logs: one JSON object a line (or readable text), with a heartbeat helper."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_")
        )
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname:<7} "
        line += f"{record.name}: {record.getMessage()} {extras}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class Log:
    """A logger whose calls take fields: ``log.info("cycle_done", buckets=28)``."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _emit(self, level: int, event: str, exc: bool, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            if not _STANDARD.isdisjoint(fields):  # e.g. name=...: LogRecord owns that attribute
                fields = {(f"{k}_" if k in _STANDARD else k): v for k, v in fields.items()}
            self._logger.log(level, event, extra=fields, exc_info=exc, stacklevel=3)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, False, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, False, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, False, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, False, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, True, fields)


def get_log(name: str) -> Log:
    return Log(f"drops.{name}")


def kafka_logger() -> logging.Logger:
    """The logger to hand librdkafka (``logger=`` of a confluent-kafka client): its lines then
    come out through our handler, as JSON, instead of raw text on stderr."""
    return logging.getLogger("drops.kafka")


_warned: set[str] = set()
_pending: list[tuple[str, dict[str, Any]]] = []
_configured = False


def warn_once(key: str, event: str, **fields: Any) -> None:
    """A warning said once per ``key`` in this process (e.g. a deprecated setting's name).
    Before :func:`configure` it waits, so that it comes out in the configured format."""
    if key in _warned:
        return
    _warned.add(key)
    if _configured:
        get_log("settings").warning(event, **fields)
    else:
        _pending.append((event, fields))


def configure(level: str = "INFO", fmt: str = "json") -> None:
    global _configured
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings of imported libraries: JSON lines too (py.warnings)
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True
    while _pending:
        event, fields = _pending.pop(0)
        get_log("settings").warning(event, **fields)


class Heartbeat:
    """Says ``event`` with the counters at most every ``every`` seconds."""

    def __init__(self, log: Log, event: str = "heartbeat", every: float = 10.0) -> None:
        self.log, self.event, self.every = log, event, every
        self.counters: dict[str, float] = {}
        self._last = time.monotonic()

    def add(self, **counts: float) -> None:
        for key, value in counts.items():
            self.counters[key] = self.counters.get(key, 0) + value

    def tick(self, **gauges: Any) -> bool:
        now = time.monotonic()
        if now - self._last < self.every:
            return False
        self.log.info(self.event, interval_s=round(now - self._last, 1), **self.counters, **gauges)
        self.counters = {}
        self._last = now
        return True
