"""ASGI middlewares around the BentoML service: bad input is a JSON 4xx naming the field, logged as one INFO line.

Each one exists because of measured BentoML 1.4 behaviour:

* it parses any content type as JSON (``text/plain``, even HTML forms) -> :class:`RequestGuardMiddleware` answers 415;
* uvicorn's h11 parser accepts a 32 KB header block when it arrives in one read -> 431 over ``max_header_bytes``;
* it has no body limit -> :class:`BodyLimitMiddleware` answers 413 over ``max_body_bytes``, chunked bodies included;
* its HTTP metrics label requests by their raw path, in a middleware outside every user middleware, so each unknown
  path added a Prometheus series -> :func:`collapse_unknown_paths` wraps the app and rewrites unknown paths to
  :data:`UNKNOWN_PATH` (one label) before BentoML sees them; they are answered 404 naming ``path``;
* it logs every 4xx with a full ERROR traceback (a client could flood the logs) and emits endpoint errors as a
  one-element list -> :class:`ErrorShapeMiddleware` and :class:`ClientErrorLogFilter`: one INFO line per 4xx, a
  ``{"error", "field"}`` object, tracebacks only for 5xx;
* full GC passes walk the whole worker heap -> :class:`GcFreezeMiddleware` (serving/README.md, latency).
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from http import HTTPStatus
from typing import Any

from recstack.collect.purposes import ROLE_STATE

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("recstack.http")

UNKNOWN_PATH = "/{unknown}"
"""The one path (and metrics label) every request to a path the service does not have is rewritten to."""
ORIGINAL_PATH = "recstack.original_path"
"""Scope key holding the path a client really asked for, when it was rewritten to :data:`UNKNOWN_PATH`."""


async def send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def collapse_unknown_paths(app: ASGIApp) -> ASGIApp:
    """Wrap a Starlette app so that paths none of its routes match reach it as :data:`UNKNOWN_PATH`.

    It must sit outside BentoML's metrics middleware (which reads ``scope["path"]`` first), hence a wrapper around the
    whole app rather than a middleware added with ``add_asgi_middleware``. A mounted static folder (BentoML's
    ``Mount("/static_content")``) matches every path under its prefix, so a path there is known only if the folder
    has that file: ``/static_content/<anything else>`` is collapsed too. Known paths are cached (bounded: the routes'
    exact paths and the static folder's files are finitely many)."""
    from starlette.routing import Match, Mount
    from starlette.staticfiles import StaticFiles

    routes = list(getattr(app, "routes", ()))
    known: set[str] = set()

    def served(route: Any, child: Scope, scope: Scope) -> bool:
        """For a mount, whether it has something at this path (a static file); other routes match exactly."""
        if not isinstance(route, Mount):
            return True
        if not isinstance(route.app, StaticFiles):
            return True  # a mounted sub-application: its own routing answers (recstack mounts none)
        try:
            _, stat = route.app.lookup_path(route.app.get_path({**scope, **child}))
        except Exception:
            return False
        return stat is not None

    def is_known(scope: Scope) -> bool:
        path = scope.get("path", "")
        if path in known:
            return True
        probe = {**scope, "method": scope.get("method", "GET")}
        for route in routes:
            match, child = route.matches(probe)
            if match != Match.NONE:
                if not served(route, child, probe):
                    return False
                if len(known) < 1024:
                    known.add(path)
                return True
        return False

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and routes and not is_known(scope):
            scope = {**scope, ORIGINAL_PATH: scope.get("path", ""), "path": UNKNOWN_PATH, "raw_path": b"/"}
        await app(scope, receive, send)

    wrapped.routes = routes  # type: ignore[attr-defined]
    return wrapped


class RequestGuardMiddleware:
    """404 for rewritten unknown paths, 431 for oversized header blocks, 415 for non-JSON bodies on JSON routes."""

    def __init__(self, app: ASGIApp, *, json_routes: Collection[str], max_header_bytes: int) -> None:
        self.app = app
        self.json_routes = frozenset(json_routes)
        self.max_header_bytes = int(max_header_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if ORIGINAL_PATH in scope:
            path = scope[ORIGINAL_PATH]
            shown = path if len(path) <= 80 else path[:77] + "..."
            await send_json(send, 404, {"error": f"no endpoint at {shown!r}; see /docs.json", "field": "path"})
            return
        headers = scope.get("headers", ())
        size = sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self.max_header_bytes:
            await send_json(
                send,
                431,
                {
                    "error": f"request headers are {size} bytes, over the {self.max_header_bytes} allowed",
                    "field": "headers",
                },
            )
            return
        if scope.get("method") == "POST" and scope.get("path") in self.json_routes:
            content_type = b""
            for name, value in headers:
                if name == b"content-type":
                    content_type = value
                    break
            media = content_type.split(b";", 1)[0].strip().lower()
            if media != b"application/json":
                shown = content_type.decode("latin-1")[:60] or "none"
                await send_json(
                    send,
                    415,
                    {
                        "error": f"content-type {shown!r} is not accepted; send application/json",
                        "field": "content-type",
                    },
                )
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Rejects request bodies over ``max_bytes`` with a 413 JSON error before they are read (BentoML has no limit)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        too_big = {"error": f"request body over {limit} bytes", "field": "body"}
        declared = [value for name, value in scope.get("headers", ()) if name == b"content-length"]
        if declared:
            if declared[0].isdigit() and int(declared[0]) > limit:
                await send_json(send, 413, too_big)
                return
            await self.app(scope, receive, send)  # declared and within the limit; h11 enforces the framing
            return
        # Chunked body of unknown length: read it here, within the limit, and replay it to the app. (Raising from
        # inside the app's receive would surface as BentoML's generic 500.)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            body += message.get("body", b"")
            if len(body) > limit:
                await send_json(send, 413, too_big)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _phrase(status: int) -> str:
    """The reason phrase of a status code, or ``HTTP <code>`` for a code :class:`HTTPStatus` does not know."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _field_of(status: int, data: Any) -> str:
    """The field a 4xx is about: the first validation error's location, else what the status is about."""
    if isinstance(data, dict):
        if isinstance(data.get("field"), str):
            return data["field"]
        detail = data.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            loc = [str(part) for part in detail[0].get("loc", ()) if part not in ("body",)]
            if loc:
                return ".".join(loc)
    return {404: "path", 405: "method", 413: "body", 415: "content-type", 431: "headers"}.get(status, "body")


class ErrorShapeMiddleware:
    """Every 4xx leaves as a JSON object ``{"error": ..., "field": ...}`` (validation errors keep their ``detail``)
    and is logged as one INFO line. BentoML 1.4 emits endpoint exceptions as a one-element list and Starlette's own
    404/405 as plain text: both are reshaped. Only responses >= 400 are buffered; 5xx pass through unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def reshaping_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status = int(start["status"])
            raw = b"".join(chunks)
            try:
                data = json.loads(raw)
            except ValueError:
                data = raw.decode("utf-8", "replace").strip() or _phrase(status)
            if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
                data = data[0]
            if not isinstance(data, dict):
                data = {"error": str(data)}
            data.setdefault("error", _phrase(status))
            data["field"] = _field_of(status, data)
            body = json.dumps(data).encode()
            path = scope.get(ORIGINAL_PATH, scope.get("path", ""))
            # %r: the path and the error text carry client input; repr escapes newlines, so no forged log lines.
            # 429s are not logged: a client over its limit would turn into a log flood; recstack_rate_limit_total
            # counts them.
            if status != 429:
                logger.info(
                    "%d %s %r: %r (field %r)",
                    status,
                    scope.get("method"),
                    path[:80],
                    str(data["error"])[:300],
                    data["field"],
                )
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")
            ]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, reshaping_send)


class ClientErrorLogFilter(logging.Filter):
    """Drops BentoML's ``Exception on <path>`` ERROR records (with traceback) when the exception is the client's:
    a validation error or a BentoML error below 500. :class:`ErrorShapeMiddleware` logs those as one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or not isinstance(record.msg, str) or not record.msg.startswith("Exception on"):
            return True
        error = record.exc_info[1]
        from bentoml.exceptions import BentoMLException
        from pydantic import ValidationError

        if isinstance(error, ValidationError):
            return False
        if isinstance(error, BentoMLException):
            return int(error.error_code.value) >= 500
        return True


def install_log_filter() -> None:
    """Attach :class:`ClientErrorLogFilter` to the logger of BentoML's ``log_exception`` (once)."""
    from bentoml._internal.server import http_app

    target = http_app.logger
    if not any(isinstance(f, ClientErrorLogFilter) for f in target.filters):
        target.addFilter(ClientErrorLogFilter())
    logging.getLogger("recstack").setLevel(logging.INFO)  # BentoML's worker logging leaves the root at WARNING


class GcFreezeMiddleware:
    """Moves everything allocated so far out of the garbage collector's reach, once after the first requests.

    The worker's heap (BentoML, pydantic, OpenTelemetry, the bundle) is large, so every full collection walked it and
    stalled a request for 40-70 ms: that was the p99 tail of a default BentoML service (benchmarks/serve_load.py).
    ``gc.freeze()`` in the service's ``__init__`` covers the bundle; objects created lazily by the first requests
    (schemas, caches, imports) are frozen here. Cycles created later are still collected.
    """

    def __init__(self, app: ASGIApp, *, after: int) -> None:
        self.app = app
        self.left = int(after)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if self.left > 0 and scope["type"] == "http":
            self.left -= 1
            if self.left == 0:
                gc.collect()
                gc.freeze()


class ReadinessMiddleware:
    """``GET /readyz`` as JSON: 200 (``ready`` or ``degraded``) once the service is up, since a degraded service still
    answers from the bundle; 503 before. ``readiness`` is the service's async probe (bounded by the Redis timeout)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/readyz" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        import bentoml

        try:
            service = bentoml.get_current_service()
        except Exception:
            service = None
        if service is None or not hasattr(service, "readiness"):
            await send_json(send, 503, {"status": "starting"})
            return
        state = await service.readiness()
        # Details (model, sizes, the online store's address and state) only for an admin key: the rest of the world,
        # load balancers included, learns ready / degraded and nothing about the deployment.
        role = (scope.get("state") or {}).get(ROLE_STATE)
        await send_json(send, 200, state if role == "admin" else {"status": state["status"]})


def dispatch_first(app: ASGIApp, first: ASGIApp, paths: Collection[str]) -> ASGIApp:
    """Send requests for ``paths`` (exact, or a prefix when it ends with ``/``) straight to ``first``, everything else
    to ``app``.

    The collector's endpoints take the most requests of all (every view, click and pixel of a site) and need none of
    BentoML's per-request machinery (its API adapters, tracing, timeout and metrics middlewares cost more CPU than the
    collector's own work): they are routed before it, in the same server and port, with recstack's own guards
    applied to ``first`` by the caller. They are counted on /metrics by recstack_collect_events_total."""
    exact = frozenset(p for p in paths if not p.endswith("/"))
    prefixes = tuple(p for p in paths if p.endswith("/"))  # "/users/" routes every /users/<id> to ``first``

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path in exact or (prefixes and path.startswith(prefixes))):
            await first(scope, receive, send)
        else:
            await app(scope, receive, send)

    return route


def guarded(
    app: ASGIApp,
    *,
    json_routes: Collection[str],
    max_header_bytes: int,
    max_body_bytes: int,
    inner: Sequence[tuple[type, dict]] = (),
) -> ASGIApp:
    """``app`` behind recstack's guards (the same ones the recommender's endpoints have), outermost first: error
    shape and 4xx logging, content type and header size, then ``inner`` (access, rate limits: (class, options)
    pairs, outermost first), then body size."""
    wrapped = BodyLimitMiddleware(app, max_bytes=max_body_bytes)
    for middleware, options in reversed(list(inner)):
        wrapped = middleware(wrapped, **options)
    wrapped = RequestGuardMiddleware(wrapped, json_routes=json_routes, max_header_bytes=max_header_bytes)
    return ErrorShapeMiddleware(wrapped)
