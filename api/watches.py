"""The watches API: ``/watches`` and ``/watches/{id}``, on the compacted watches topic.

The topic is the system of record (key = watch id, value = the watch, an empty value deletes
it). :class:`WatchStore` holds every watch in memory, read from the topic's beginning by one
consumer thread and kept current by it; a write is answered once the store has read it back
from the topic, so a client reads its own writes and every watch the API shows is in the log
the matcher reads. Each API key is an owner (a hash of the key, never the key) and sees only
its own watches; with no keys configured every request is the one local owner.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from typing import Any

import apprise
import orjson
from anyio import to_thread
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Producer, TopicPartition
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from drops import kafka
from drops.errors import BadRequest, DropsError, InvariantError
from drops.log import get_log
from drops.stages import ApiSettings
from drops.topics import check_topics
from schemas import SchemaError
from schemas.watches import Watch, WatchSpec, decode_watch, encode_record, field_of

log = get_log("api.watches")
WRITE_TIMEOUT_S = 10.0


class Unavailable(DropsError, RuntimeError):
    """The watches topic could not be read or written in time (answered 503)."""


class WatchStore:
    """Every watch, read from the compacted topic; writes go to the topic and are read back."""

    def __init__(self, settings: ApiSettings) -> None:
        self.s = settings
        self.topic = settings.topics.watches
        self.watches: dict[str, Watch] = {}
        self._applied: dict[int, int] = {}  # partition -> next offset applied
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: Producer | None = None
        self.error = ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> WatchStore:
        self._producer = kafka.producer(
            self.s,
            {
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
            },
        )
        self._thread = threading.Thread(target=self._run, daemon=True, name="watch-store")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._producer is not None:
            self._producer.flush(5)

    def _run(self) -> None:
        consumer = kafka.consumer(
            self.s,
            {
                "group.id": f"watch-store-{uuid.uuid4().hex}",  # never commits: assign only
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            },
        )
        try:
            check_topics(self.s, [self.topic], "api")
            meta = consumer.list_topics(self.topic, timeout=10).topics[self.topic]
            parts = sorted(meta.partitions)
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
            at_end: set[int] = set()
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                        if at_end >= set(parts):
                            self._ready.set()
                        with self._cond:
                            self._applied[msg.partition()] = max(
                                self._applied.get(msg.partition(), 0), msg.offset()
                            )
                            self._cond.notify_all()
                    else:
                        log.warning("watch_store_error", error=str(err))
                    continue
                self._apply(msg.key(), msg.value())
                with self._cond:
                    self._applied[msg.partition()] = msg.offset() + 1
                    self._cond.notify_all()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("watch_store_failed")
        finally:
            consumer.close()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        wid = key.decode()
        with self._cond:
            if not value:
                self.watches.pop(wid, None)
                return
            try:
                self.watches[wid] = decode_watch(value)
            except SchemaError as exc:
                log.warning("watch_skipped", watch_id=wid, error=str(exc)[:300])

    def wait_ready(self, timeout: float = WRITE_TIMEOUT_S) -> None:
        if not self._ready.wait(timeout):
            raise Unavailable(self.error or "the watches topic is not read yet")

    # -- reads and writes ------------------------------------------------------------------

    def of(self, owner: str) -> list[Watch]:
        self.wait_ready()
        with self._cond:
            mine = [w for w in self.watches.values() if w.owner == owner]
        return sorted(mine, key=lambda w: (w.created_at_ms, w.watch_id))

    def get(self, owner: str, watch_id: str) -> Watch | None:
        self.wait_ready()
        with self._cond:
            w = self.watches.get(watch_id)
        return w if w is not None and w.owner == owner else None

    def write(self, watch_id: str, watch: Watch | None) -> None:
        """Write a watch (``None``: its tombstone) and wait until it is read back."""
        if self._producer is None:
            raise InvariantError("the watch store was asked to write before it was started")
        done: list[Any] = []
        self._producer.produce(
            self.topic,
            key=watch_id.encode(),
            value=encode_record(watch) if watch is not None else None,
            on_delivery=lambda err, msg: done.append((err, msg)),
        )
        self._producer.flush(WRITE_TIMEOUT_S)
        if not done or done[0][0] is not None:
            raise Unavailable(f"watch not written: {done[0][0] if done else 'timeout'}")
        msg = done[0][1]
        deadline = time.monotonic() + WRITE_TIMEOUT_S
        with self._cond:
            while self._applied.get(msg.partition(), 0) <= msg.offset():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable("watch written but not read back in time")
                self._cond.wait(left)


# ------------------------------------------------------------------------------ HTTP


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def owner_of(request: Request, settings: ApiSettings) -> str:
    """The owner a request acts for: its API key's hash, or the local owner without keys."""
    if not settings.api.keys:
        return settings.watches.local_owner
    key = request.headers.get("x-api-key") or request.query_params.get("api_key") or ""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _store(request: Request) -> WatchStore:
    store: WatchStore | None = request.app.state.drops.watches
    if store is None:
        raise Unavailable("watches are not served by this process")
    return store


def _out(w: Watch) -> dict[str, Any]:
    doc: dict[str, Any] = w.model_dump(mode="json")
    return doc


def _not_found(watch_id: str) -> Response:
    return _JSON(
        {"error": "not_found", "param": "watch_id", "message": f"no watch {watch_id!r}"}, 404
    )


def _unavailable(exc: Unavailable) -> Response:
    return _JSON({"error": "unavailable", "param": "", "message": str(exc)}, 503)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("body", "not JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("body", "not a JSON object")
    return doc


def parse_spec(doc: dict[str, Any]) -> WatchSpec:
    """A watch spec from a request body; 400 naming the field when it is not valid."""
    try:
        spec = WatchSpec.model_validate(doc)
    except ValidationError as exc:
        raise BadRequest(field_of(exc) or "body", exc.errors()[0]["msg"]) from None
    for i, ch in enumerate(spec.channels):
        if ch.type == "apprise" and apprise.Apprise.instantiate(ch.url) is None:
            raise BadRequest(f"channels.{i}.url", "not a URL any Apprise channel accepts")
    return spec


async def create_watch(request: Request) -> Response:
    settings: ApiSettings = request.app.state.drops.s
    spec = parse_spec(await _body(request))
    owner = owner_of(request, settings)
    try:
        store = _store(request)
        if len(await to_thread.run_sync(store.of, owner)) >= settings.watches.per_owner:
            raise BadRequest("watches", f"at most {settings.watches.per_owner} watches per owner")
        now = int(time.time() * 1000)
        watch = Watch(
            **spec.model_dump(),
            watch_id=f"w{uuid.uuid4().hex[:20]}",
            owner=owner,
            secret=secrets.token_hex(32),
            created_at_ms=now,
            updated_at_ms=now,
        )
        await to_thread.run_sync(store.write, watch.watch_id, watch)
    except Unavailable as exc:
        return _unavailable(exc)
    log.info("watch_created", watch_id=watch.watch_id, owner=owner)
    return _JSON(_out(watch), 201, headers={"Location": f"/watches/{watch.watch_id}"})


async def list_watches(request: Request) -> Response:
    owner = owner_of(request, request.app.state.drops.s)
    try:
        mine = await to_thread.run_sync(_store(request).of, owner)
    except Unavailable as exc:
        return _unavailable(exc)
    return _JSON({"watches": [_out(w) for w in mine]})


async def one_watch(request: Request) -> Response:
    settings: ApiSettings = request.app.state.drops.s
    owner = owner_of(request, settings)
    wid: str = request.path_params["watch_id"]
    try:
        store = _store(request)
        current = await to_thread.run_sync(store.get, owner, wid)
        if current is None:
            return _not_found(wid)
        if request.method == "GET":
            return _JSON(_out(current))
        if request.method == "DELETE":
            await to_thread.run_sync(store.write, wid, None)
            log.info("watch_deleted", watch_id=wid, owner=owner)
            return Response(status_code=204)
        patch = await _body(request)
        keep = current.model_dump(include=set(WatchSpec.model_fields))
        spec = parse_spec({**keep, **patch})
        watch = current.model_copy(update={**dict(spec), "updated_at_ms": int(time.time() * 1000)})
        await to_thread.run_sync(store.write, wid, watch)
    except Unavailable as exc:
        return _unavailable(exc)
    log.info("watch_updated", watch_id=wid, owner=owner)
    return _JSON(_out(watch))


ROUTES = [
    Route("/watches", list_watches, methods=["GET"]),
    Route("/watches", create_watch, methods=["POST"]),
    Route("/watches/{watch_id:str}", one_watch, methods=["GET", "PATCH", "DELETE"]),
]


# ------------------------------------------------------------------------------ OpenAPI


def openapi_part(
    error: dict[str, Any], auth: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The paths and component schemas of the watches API (schemas from the records)."""
    ref = "#/components/schemas/{model}"
    schemas: dict[str, Any] = {}
    for model in (WatchSpec, Watch):
        doc = model.model_json_schema(ref_template=ref)
        schemas.update(doc.pop("$defs", {}))
        schemas[model.__name__] = doc
    patch = dict(schemas["WatchSpec"])
    patch.pop("required", None)
    patch["description"] = "Fields of the watch to replace (the others stay)"
    schemas["WatchPatch"] = patch

    def js(name: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": ref.format(model=name)}}}

    watch = {"description": "The watch", "content": js("Watch")}
    unavailable = {
        "description": "The watches topic is not reachable: retry",
        "content": js("Error"),
    }
    missing = {"description": "No such watch of this owner", "content": js("Error")}
    wid = {
        "name": "watch_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_\-]{1,100}$"},
    }
    listing = {
        "type": "object",
        "properties": {"watches": {"type": "array", "items": {"$ref": ref.format(model="Watch")}}},
        "required": ["watches"],
    }
    paths = {
        "/watches": {
            "get": {
                "summary": "This owner's watches, oldest first",
                "parameters": [],
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"application/json": {"schema": listing}},
                    },
                    "503": unavailable,
                    **auth,
                },
            },
            "post": {
                "summary": "Create a watch: alerts go to its channels when a drop matches",
                "requestBody": {"required": True, "content": js("WatchSpec")},
                "responses": {"201": watch, "400": error, "503": unavailable, **auth},
            },
        },
        "/watches/{watch_id}": {
            "get": {
                "summary": "One watch",
                "parameters": [wid],
                "responses": {"200": watch, "404": missing, "503": unavailable, **auth},
            },
            "patch": {
                "summary": "Change a watch (the given fields are replaced)",
                "parameters": [wid],
                "requestBody": {"required": True, "content": js("WatchPatch")},
                "responses": {
                    "200": watch,
                    "400": error,
                    "404": missing,
                    "503": unavailable,
                    **auth,
                },
            },
            "delete": {
                "summary": "Delete a watch (no alert is sent for it after this answer)",
                "parameters": [wid],
                "responses": {
                    "204": {"description": "Deleted"},
                    "404": missing,
                    "503": unavailable,
                    **auth,
                },
            },
        },
    }
    return paths, schemas
