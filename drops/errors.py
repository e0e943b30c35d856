"""The project's one error hierarchy: every error it raises on purpose is a :class:`DropsError`.

Each stage defines its own kinds next to the code that raises them (``schemas.SchemaError``,
``producers.config.ConfigError``, ``producers.providers.transport.ProviderError``,
``api.cursor.CursorError``, ``shell.broker.BrokerError``, ...), all rooted here, so a caller
can tell the project's errors from a library's or a bug's with one ``except DropsError``.
"""

from __future__ import annotations


class DropsError(Exception):
    """Base of every error Discovery Drops raises on purpose."""


class BadRequest(DropsError, ValueError):
    """A request that cannot be served as asked (HTTP 400): ``BadRequest(param, message)``
    names the parameter (the API's query parameters), ``BadRequest(message)`` does not (the
    simulator's request bodies)."""

    def __init__(self, param_or_message: str, message: str | None = None) -> None:
        if message is None:
            param, message = "", param_or_message
        else:
            param = param_or_message
        super().__init__(f"{param}: {message}" if param else message)
        self.param = param
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error": "bad_request", "param": self.param, "message": self.message}


class InvariantError(DropsError):
    """A state the code rules out was reached: a bug, reported with what was found (never an
    ``assert``, which ``python -O`` removes)."""


def invariant(ok: object, what: str) -> None:
    """Raise :class:`InvariantError` unless ``ok``."""
    if not ok:
        raise InvariantError(what)


class ConfigError(DropsError, ValueError):
    """Settings or a config file that cannot be used; the message names the key
    (``markets[1].time_zone: unknown time zone ...``)."""
