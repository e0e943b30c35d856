"""``drops api``: serve the app with uvicorn until SIGTERM/SIGINT.

With the embedded chDB engine only one process may open the data folder, so the sink must
run inside this process (``with_sink=True``, ``drops api --with-sink``); with a ClickHouse
server, the sink can run as its own process (``drops sink``) and any number of API replicas.
"""

from __future__ import annotations

import logging

import uvicorn

from api.app import create_app
from drops import broker
from drops.log import configure, get_log
from drops.settings import Settings

log = get_log("api")


def run(settings: Settings, with_sink: bool = False) -> None:
    configure(settings.log_level, settings.log_format)
    if settings.uses_chdb and not with_sink:
        log.warning(
            "chdb_without_sink",
            hint="with chDB the sink cannot run in another process: use --with-sink",
        )
    broker.ensure_topics(settings)
    app = create_app(settings, with_sink=with_sink)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    app.state.drops.exiting = lambda: bool(server.should_exit)
    logging.getLogger("uvicorn.error").addFilter(quiet_cut_clients)
    log.info("api_listening", url=f"http://{settings.api_host}:{settings.api_port}/")
    server.run()


def quiet_cut_clients(record: logging.LogRecord) -> bool:
    """A stalled SSE client is cut by ending its response unfinished (sse-starlette's send
    timeout, logged by ``api.app.LiveStream`` as ``sse_client_cut``); uvicorn's error line for
    it is noise."""
    return "returned without completing response" not in record.getMessage()
