"""The recstack HTTP service (BentoML 1.4): ``bentoml serve serving.service:Recommender`` or ``recstack-serve``.

The bundle comes from ``$RECSTACK_BUNDLE``: a bundle folder, or a BentoML model tag (``recstack:latest``) saved with
``recstack.export.model_store.save_to_store``. It is loaded once per worker in ``__init__``; a request only reads it.
Other settings come from ``RECSTACK_*`` environment variables (see :class:`ServeSettings`), which ``recstack-serve``
sets from ``configs/serve.yaml``.

Endpoints are ``async def`` on purpose: the pipeline is ~0.2 ms of CPU, cheaper inline on the event loop than
BentoML's thread-pool hop for sync endpoints, and the one Redis read is awaited (async client, 20 ms timeout, circuit
breaker) so a slow Redis never stalls the worker's other requests. The middlewares below exist because of measured
BentoML behaviour; benchmarks/RESULTS.md has the figures.
"""

from __future__ import annotations

import gc
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import bentoml
import numpy as np
from bentoml.exceptions import InvalidArgument, NotFound

from recstack.serving.metrics import StageMetrics
from recstack.serving.online_store import Event, RedisOnlineStore, RedisStoreConfig
from recstack.serving.pipeline import BadQuery, Pipeline, PipelineConfig, Query, UnknownItem
from recstack.serving.schemas import (
    EventRequest,
    EventResponse,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    SimilarItemsRequest,
    SimilarItemsResponse,
)

BUNDLE_ENV = "RECSTACK_BUNDLE"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"RECSTACK_{name}", default)


@dataclass(frozen=True)
class ServeSettings:
    """Everything the service reads from the environment, read once per worker."""

    bundle: str
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "recstack:recent:"
    redis_timeout_s: float = 0.02
    recent_max: int = 50
    recent_ttl_s: int = 7 * 24 * 3600
    n_candidates: int = 200
    ef_search: int = 128
    max_body_bytes: int = 64 * 1024
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    @classmethod
    def from_env(cls) -> ServeSettings:
        bundle = os.environ.get(BUNDLE_ENV, "")
        if not bundle:
            raise RuntimeError(
                f"${BUNDLE_ENV} is not set: point it at a bundle folder or a BentoML model tag, "
                "e.g. `recstack-serve bundle=outputs/bundles/ml100k` or RECSTACK_BUNDLE=recstack:latest bentoml serve ..."
            )
        n_candidates = int(_env("N_CANDIDATES", "200"))
        recent_max = int(_env("RECENT_MAX", "50"))
        return cls(
            bundle=bundle,
            redis_url=_env("REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_prefix=_env("REDIS_PREFIX", "recstack:recent:"),
            redis_timeout_s=float(_env("REDIS_TIMEOUT_S", "0.02")),
            recent_max=recent_max,
            recent_ttl_s=int(_env("RECENT_TTL_S", str(7 * 24 * 3600))),
            n_candidates=n_candidates,
            ef_search=int(_env("EF_SEARCH", "128")),
            max_body_bytes=int(_env("MAX_BODY_BYTES", str(64 * 1024))),
            pipeline=PipelineConfig(n_candidates=n_candidates, max_recent=recent_max),
        )


def _is_tag(ref: str) -> bool:
    """A bundle reference that is not an existing path is taken as a BentoML model tag."""
    return bool(ref) and not Path(ref).exists()


# Referenced at class scope so `bentoml build` packs the model with the Bento when the bundle is a tag.
_BUNDLE_REF = os.environ.get(BUNDLE_ENV, "")


class BodyLimitMiddleware:
    """Rejects request bodies over ``max_bytes`` with a 413 JSON error before they are read (BentoML has no limit)."""

    def __init__(self, app, max_bytes: int = 64 * 1024) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.max_bytes = int(_env("MAX_BODY_BYTES", str(max_bytes)))

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _send_json(send, 413, {"error": f"request body over {self.max_bytes} bytes", "field": "body"})
                return
        if any(name == b"content-length" for name, _ in scope.get("headers", ())):
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
            if len(body) > self.max_bytes:
                await _send_json(send, 413, {"error": f"request body over {self.max_bytes} bytes", "field": "body"})
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():  # type: ignore[no-untyped-def]
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ErrorShapeMiddleware:
    """Errors raised in an endpoint come out of BentoML 1.4 as a one-element list, ``[{"error": ...}]``; this
    unwraps them to the ``{"error": ...}`` object validation errors already use. Only responses >= 400 are buffered."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: dict | None = None
        chunks: list[bytes] = []

        async def reshaping_send(message) -> None:  # type: ignore[no-untyped-def]
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
                body = json.dumps(data[0]).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, reshaping_send)


class GcFreezeMiddleware:
    """Moves everything allocated so far out of the garbage collector's reach, once after the first requests.

    The worker's heap (BentoML, pydantic, OpenTelemetry, the bundle) is large, so every full collection walked it and
    stalled a request for 40-70 ms: that was the p99 tail of a default BentoML service (benchmarks/serve_load.py).
    ``gc.freeze()`` in ``__init__`` covers the bundle; objects created lazily by the first requests (schemas, caches,
    imports) are frozen here. Cycles created later are still collected; only the long-lived heap is skipped.
    """

    def __init__(self, app, after: int = 200) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.left = int(_env("GC_FREEZE_AFTER", str(after)))

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await self.app(scope, receive, send)
        if self.left > 0 and scope["type"] == "http":
            self.left -= 1
            if self.left == 0:
                gc.collect()
                gc.freeze()


class ReadinessMiddleware:
    """``GET /readyz`` as JSON: model tag and online-store state. 200 (``ready`` or ``degraded``) once the bundle is
    loaded, since a degraded service still answers from the bundle; 503 before."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http" or scope.get("path") != "/readyz" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        try:
            service = bentoml.get_current_service()
        except Exception:
            service = None
        if service is None or not hasattr(service, "readiness"):
            await _send_json(send, 503, {"status": "starting", "detail": "bundle not loaded yet"})
            return
        # In a thread: the readiness probe pings Redis synchronously (bounded by its 20 ms timeout).
        await _send_json(send, 200, await anyio.to_thread.run_sync(service.readiness))


async def _send_json(send, status: int, body: dict) -> None:  # type: ignore[no-untyped-def]
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@bentoml.service(
    name="recstack",
    workers=int(os.environ.get("RECSTACK_WORKERS", "2")),  # configs/serve.yaml says why 2
    # BentoML's TimeoutMiddleware never cancels its per-request timer: each request's timer, future and trace context
    # stay alive for `timeout` seconds, so full GC passes walk rps x timeout requests' objects (60 s by default: the
    # p99 tail grew with uptime, 8 -> 124 ms per pass in 20 s at ~350 req/s). Answers take milliseconds; 2 s is ample.
    traffic={"timeout": float(os.environ.get("RECSTACK_REQUEST_TIMEOUT_S", "2"))},
    # /readyz answers from the middleware; BentoML's own runner probe has nothing to probe here.
    runner_probe={"enabled": False},
    # Access logs cost a log record per request; off unless RECSTACK_ACCESS_LOG=1 (metrics stay on).
    logging={"access": {"enabled": os.environ.get("RECSTACK_ACCESS_LOG", "0") == "1"}},
    # BentoML opens OpenTelemetry spans for every request, receive and send even with no exporter (~7% of worker CPU
    # in py-spy); excluding every path skips them. RECSTACK_TRACING=1 when an exporter is configured. (It must be
    # service config: a top-level `tracing` override is replaced by the service's defaults when BentoML merges them.)
    tracing={} if os.environ.get("RECSTACK_TRACING", "0") == "1" else {"excluded_urls": ["/"]},
)
class Recommender:
    """What should this user see now: two-stage recommendations from a recstack bundle, plus recent activity."""

    bundle_model = bentoml.models.BentoModel(_BUNDLE_REF) if _is_tag(_BUNDLE_REF) else None

    def __init__(self) -> None:
        from recstack.bundle.reader import Bundle

        self.settings = ServeSettings.from_env()
        if self.bundle_model is not None:
            path = Path(self.bundle_model.path)  # class-scope BentoModel resolves to the stored model here
            self.model_tag = str(self.bundle_model.tag)
        else:
            path = Path(self.settings.bundle)
            self.model_tag = str(path.resolve())
        bundle = Bundle.load(path, index_params={"ef_search": self.settings.ef_search})
        self.pipeline = Pipeline.from_bundle(bundle, self.settings.pipeline)
        self.store = RedisOnlineStore(
            RedisStoreConfig(
                url=self.settings.redis_url,
                key_prefix=self.settings.redis_prefix,
                max_events=self.settings.recent_max,
                ttl_s=self.settings.recent_ttl_s,
                timeout_s=self.settings.redis_timeout_s,
            )
        )
        self.metrics = StageMetrics()
        self._observe = {name: self.metrics.observer(name) for name in ("recommend", "similar_items", "events")}
        # Warm the request path once (lazy allocations in ORT/FAISS/numpy), then keep the long-lived heap out of the
        # garbage collector's full passes; see GcFreezeMiddleware.
        self.pipeline.recommend(Query(user_id="", k=1))
        gc.collect()
        gc.freeze()

    def readiness(self) -> dict:
        state = self.store.state()
        return {
            "status": "ready" if state.available else "degraded",
            "model": self.model_tag,
            "n_users": self.pipeline.n_users,
            "n_items": self.pipeline.n_items,
            "ranker": self.pipeline.ranker is not None,
            "online_store": {"kind": state.kind, "available": state.available, "detail": state.detail},
        }

    @bentoml.api(route="/recommend")
    async def recommend(self, request: RecommendRequest, /) -> RecommendResponse:
        """Top-k items for a user now. Unknown users are cold starts: recent activity from /events, else popularity
        (of `context.segment` when given)."""
        observe = self._observe["recommend"]
        start = time.perf_counter()
        recent = await self.store.recent_async(request.user_id, self.settings.recent_max)
        observe("online_store", time.perf_counter() - start)
        if recent is None:
            self.metrics.degraded("recommend")
        context = request.context
        now = time.gmtime()
        query = Query(
            user_id=request.user_id,
            k=request.k,
            hour=context.hour if context and context.hour is not None else now.tm_hour,
            dow=context.dow if context and context.dow is not None else now.tm_wday,
            exclude_seen=request.exclude_seen,
            include_categories=tuple(request.include_categories or ()),
            exclude_categories=tuple(request.exclude_categories or ()),
            segment=tuple((context.segment or {}).items()) if context else (),
        )
        try:
            ranked = self.pipeline.recommend(query, recent or (), observe)
        except BadQuery as error:
            raise InvalidArgument(str(error)) from None
        self.metrics.user_source(ranked.user_source)
        return RecommendResponse(
            user_id=request.user_id,
            user_source=ranked.user_source,
            items=self._items(ranked.items, ranked.scores, ranked.stage),
            model=self.model_tag,
            degraded=recent is None,
        )

    @bentoml.api(route="/similar_items")
    async def similar_items(self, request: SimilarItemsRequest, /) -> SimilarItemsResponse:
        """Nearest items by collaborative embedding and by BERT title embedding. Unknown item_id: 404."""
        start = time.perf_counter()
        try:
            found = self.pipeline.similar(request.item_id, request.k)
        except UnknownItem as error:
            raise NotFound(str(error)) from None
        self._observe["similar_items"]("total", time.perf_counter() - start)
        item = self.pipeline.item_index[request.item_id]
        text = None
        if found.text_items is not None and found.text_scores is not None:
            text = self._items(found.text_items, found.text_scores, "text")
        return SimilarItemsResponse(
            item_id=request.item_id,
            title=str(self.pipeline.item_titles[item]),
            embedding=self._items(found.embedding_items, found.embedding_scores, "embedding"),
            text=text,
            model=self.model_tag,
        )

    @bentoml.api(route="/events")
    async def events(self, request: EventRequest, /) -> EventResponse:
        """Record what a user just did in their recent-activity list (bounded, with a TTL); the next /recommend uses
        it. Unknown item_id: 404. Online store down: answered with recorded=false, never an error."""
        if request.item_id not in self.pipeline.item_index:
            raise NotFound(str(UnknownItem(request.item_id)))
        start = time.perf_counter()
        timestamp = request.timestamp if request.timestamp is not None else int(time.time())
        event = Event(request.item_id, request.event_type, float(request.value), timestamp)
        length = await self.store.record_async(request.user_id, event)
        self._observe["events"]("online_store", time.perf_counter() - start)
        if length is None:
            self.metrics.degraded("events")
        return EventResponse(recorded=length is not None, recent_events=length or 0, degraded=length is None)

    def _items(self, items: np.ndarray, scores: np.ndarray, stage: str) -> list[RecommendedItem]:
        ids, titles = self.pipeline.item_ids, self.pipeline.item_titles
        return [
            RecommendedItem(item_id=ids[i], title=titles[i], score=float(s), stage=stage)  # type: ignore[arg-type]
            for i, s in zip(items.tolist(), scores.tolist())
        ]


Recommender.add_asgi_middleware(BodyLimitMiddleware)
Recommender.add_asgi_middleware(ReadinessMiddleware)
Recommender.add_asgi_middleware(GcFreezeMiddleware)
Recommender.add_asgi_middleware(ErrorShapeMiddleware)

# For type checkers and readers: what one answer is built from.
__all__ = [
    "BodyLimitMiddleware",
    "ErrorShapeMiddleware",
    "GcFreezeMiddleware",
    "ReadinessMiddleware",
    "Recommender",
    "ServeSettings",
]
