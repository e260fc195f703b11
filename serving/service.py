"""The recstack HTTP service (BentoML 1.4): ``recstack-serve bundle=...`` (or ``bentoml serve serving.service:Recommender``).

Settings are one typed class, :class:`recstack.serving.settings.ServeSettings`, over ``configs/serve.yaml``:
``recstack-serve`` passes them as one JSON variable (``$RECSTACK_SERVE_SETTINGS``); a bare ``bentoml serve`` composes
``configs/serve.yaml`` with ``bundle`` from ``$RECSTACK_BUNDLE``. The bundle is a folder, or a BentoML model tag
(``recstack:latest``) saved with ``recstack.export.model_store.save_to_store``. It is loaded once per worker in
``__init__``, which reports ``ready`` or ``failed`` to recstack-serve's supervisor (recstack.serving.supervisor): a
worker that cannot start stops the server instead of being respawned forever.

Endpoints are ``async def`` on purpose: the pipeline is ~0.2 ms of CPU, cheaper inline on the event loop than
BentoML's thread-pool hop for sync endpoints, and the one Redis read is awaited (async client, bounded pool, 100 ms
timeout, circuit breaker) so a slow Redis never stalls the worker's other requests. The middlewares
(recstack.serving.http_guards) exist because of measured BentoML behaviour; benchmarks/RESULTS.md has the figures.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import bentoml
import numpy as np
from starlette.responses import JSONResponse

from recstack.collect.catalogue import ItemUpsert
from recstack.collect.producer import consent_key
from recstack.collect.purposes import ROLE_STATE, VISITOR
from recstack.collect.records import memberships_key, segments_key, tombstone_key
from recstack.serving import collector_mount, demo_site, http_guards, segments_api
from recstack.serving.item_feed import ItemFeed
from recstack.serving.metrics import StageMetrics
from recstack.serving.online_store import RedisOnlineStore
from recstack.serving.pipeline import BadQuery, Pipeline, PipelineConfig, Query, UnknownItem
from recstack.serving.schemas import (
    ItemUpsertRequest,
    ItemUpsertResponse,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    SimilarItemsRequest,
    SimilarItemsResponse,
)
from recstack.serving.segment_targeting import SegmentCache, Target
from recstack.serving.settings import ServeSettings
from recstack.serving.supervisor import WorkerLink

SETTINGS = ServeSettings.from_env()
"""Read at import: the decorator below needs the worker count and BentoML options before any worker starts."""

COLLECTOR = collector_mount.build(SETTINGS) if SETTINGS.collect else None
"""The collector (recstack.collect.app), mounted below: /events, /pixel.gif, /identify, /consent, /privacy."""
STATIC = Path(__file__).resolve().parent / "static"


def _is_tag(ref: str) -> bool:
    """A bundle reference that is not an existing path is taken as a BentoML model tag."""
    return bool(ref) and not Path(ref).exists()


def _field_error(status: int, field: str, message: str) -> JSONResponse:
    """A client error answered directly (no exception, so BentoML logs no traceback for it)."""
    return JSONResponse({"error": message, "field": field}, status_code=status)


def _ctx_error(ctx: bentoml.Context, status: int, field: str, message: str) -> JSONResponse:
    """The same, from an endpoint that takes ``ctx``: BentoML then copies ``ctx.response``'s status onto whatever the
    endpoint returns, so the status is set there too."""
    ctx.response.status_code = status
    return _field_error(status, field, message)


@bentoml.service(
    name="recstack",
    workers=SETTINGS.workers,  # configs/serve.yaml says why 2
    # BentoML's TimeoutMiddleware never cancels its per-request timer: each request's timer, future and trace context
    # stay alive for `timeout` seconds, so full GC passes walk rps x timeout requests' objects (60 s by default: the
    # p99 tail grew with uptime, 8 -> 124 ms per pass in 20 s at ~350 req/s). Answers take milliseconds; 2 s is ample.
    traffic={"timeout": SETTINGS.request_timeout_s},
    # /readyz answers from the middleware; BentoML's own runner probe has nothing to probe here.
    runner_probe={"enabled": False},
    # Access logs cost a log record per request; off unless access_log=true (metrics stay on).
    logging={"access": {"enabled": SETTINGS.access_log}},
    # BentoML opens OpenTelemetry spans for every request, receive and send even with no exporter (~7% of worker CPU
    # in py-spy); excluding every path skips them. tracing=true when an exporter is configured. (It must be service
    # config: a top-level `tracing` override is replaced by the service's defaults when BentoML merges them.)
    tracing={} if SETTINGS.tracing else {"excluded_urls": ["/"]},
)
class Recommender:
    """What should this user see now: two-stage recommendations from a recstack bundle, plus recent activity."""

    # Referenced at class scope so `bentoml build` packs the model with the Bento when the bundle is a tag.
    bundle_model = bentoml.models.BentoModel(SETTINGS.bundle) if _is_tag(SETTINGS.bundle) else None

    def __init__(self) -> None:
        # Connected first, so that any failure below reaches recstack-serve, which then stops the server.
        self._supervisor = WorkerLink.connect()
        try:
            self._start()
        except BaseException as error:
            if self._supervisor is not None:
                self._supervisor.failed(f"{type(error).__name__}: {error}")
            raise
        if self._supervisor is not None:
            self._supervisor.ready()  # the link stays open: this worker's exit is seen by the supervisor at once

    def _start(self) -> None:
        from recstack.bundle.reader import Bundle

        self.settings = SETTINGS
        ref = self.settings.require_bundle()
        if self.bundle_model is not None:
            path = Path(self.bundle_model.path)  # class-scope BentoModel resolves to the stored model here
            self.model_tag = str(self.bundle_model.tag)
        else:
            path = Path(ref)
            self.model_tag = ""  # set below from the manifest: answers never carry the server's filesystem path
        # recstack-serve hashed every file before starting any worker (bundle_verified); a bare `bentoml serve` did not.
        bundle = Bundle.load(
            path, verify=not self.settings.bundle_verified, index_params={"ef_search": self.settings.ef_search}
        )
        if not self.model_tag:
            self.model_tag = f"{path.resolve().name}@{bundle.manifest.digest()[:12]}"
        config = PipelineConfig(n_candidates=self.settings.n_candidates, max_recent=self.settings.recent_max)
        self.pipeline = Pipeline.from_bundle(bundle, config)
        self.store = RedisOnlineStore(self.settings.redis_store())
        self.items_feed = self._live_items(bundle)
        self.metrics = StageMetrics()
        self._observe = {name: self.metrics.observer(name) for name in ("recommend", "similar_items")}
        self.collector_on = COLLECTOR is not None
        names = self.settings.collector.names
        meta = segments_key(names, "meta")
        # Each segment's popular items, per worker, re-read in the background (segment_targeting).
        self.segments = SegmentCache(
            lambda: self.store.call_async(lambda client: client.hgetall(meta)),
            self.pipeline.item_index,
            self.settings.segments_cache_ttl_s,
        )
        # Warm the request path once (lazy allocations in ORT/FAISS/numpy), then keep the long-lived heap out of the
        # garbage collector's full passes; see GcFreezeMiddleware.
        self.pipeline.recommend(Query(user_id="", k=1))
        gc.collect()
        gc.freeze()

    def _live_items(self, bundle) -> ItemFeed | None:  # type: ignore[no-untyped-def]
        """POST /items needs the bundle's content section (text vectors, their index, the ONNX text encoder). The
        upserts already in Redis are applied before this worker reports ready: a restarted server serves them."""
        if bundle.content is None:
            return None
        from recstack.serving.live_items import LiveItems

        encoder_id = bundle.manifest.files[bundle.content.info.encoder.file]
        live = LiveItems(self.pipeline, bundle.content, encoder_id, neighbours=self.settings.items_neighbours)
        feed = ItemFeed(self.store, self.settings.collector.names, live, poll_s=self.settings.items_poll_s)
        feed.snapshot_sync()  # None (Redis away): the background poll takes the snapshot once it is back
        return feed

    @bentoml.on_startup
    async def _follow_items(self) -> None:
        """Each worker follows the other workers' upserts (recstack.serving.item_feed) in the background."""
        if self.items_feed is not None:
            self.items_feed.start()

    async def readiness(self) -> dict:
        """What ``/readyz`` answers. The store is probed through the same async pool and breaker as the requests, so
        ``ready`` means requests are being answered with the online store, not that some other connection works."""
        state = await self.store.state_async()
        return {
            "status": "ready" if state.available else "degraded",
            "model": self.model_tag,
            "n_users": self.pipeline.n_users,
            "n_items": self.pipeline.n_items,
            "ranker": self.pipeline.ranker is not None,
            "live_items": None if self.items_feed is None else self.items_feed.live.n_live,
            "online_store": {"kind": state.kind, "available": state.available, "detail": state.detail},
        }

    @bentoml.api(route="/recommend")
    async def recommend(self, request: RecommendRequest, /, ctx: bentoml.Context) -> RecommendResponse:
        """Top-k items for a user now. Unknown users are cold starts: recent activity from /events, else popularity
        (of the segments they are in, else of `context.segment` when given, else global). Without a user_id, the
        visitor cookie's recent activity is used. Without consent to personalisation, or for an erased user, the
        answer is popularity only (``personalised: false``). `segment` restricts the answer to, or boosts, the items
        popular in a named segment."""
        observe = self._observe["recommend"]
        start = time.perf_counter()
        role = ctx.request.scope.get("state", {}).get(ROLE_STATE)
        if role == VISITOR and request.user_id:
            ctx.response.metadata["www-authenticate"] = 'Bearer realm="recstack"'
            return _ctx_error(
                ctx,
                401,
                "authorization",
                "a user_id needs an API key with role 'recommend'; without a "
                "key a page gets recommendations for its own visitor cookie only",
            )  # type: ignore[return-value]
        if not request.exclude_seen and role != "admin":
            # with exclude_seen=false the answer can hold a user's own history: an admin's question only
            return _ctx_error(ctx, 403, "exclude_seen", "exclude_seen=false needs an API key with role 'admin'")  # type: ignore[return-value]
        target = None
        if request.segment is not None:
            wanted = request.segment
            found = await self.segments.lookup(wanted.name)
            if found is None:
                return _ctx_error(
                    ctx,
                    404,
                    "segment.name",
                    f"no segment named {wanted.name!r} has been run: GET /segments lists them, and "
                    "`recstack-segments run` publishes a new one",
                )  # type: ignore[return-value]
            target = Target(found.items, found.weights, wanted.mode, wanted.weight)
        subject, lookup_id = self._subject(request.user_id, ctx)
        state = None
        if subject is not None:
            # A user the bundle does not know may be cold: its segments ride in the same round trip.
            cold = self.settings.segments_cold_start and lookup_id not in self.pipeline.user_index
            memberships = memberships_key(self.settings.collector.names, subject) if cold else None
            state = await self.store.subject_async(
                subject, self.settings.recent_max, *self._consent_keys(subject), memberships
            )
        observe("online_store", time.perf_counter() - start)
        degraded = subject is not None and state is None
        if degraded:
            self.metrics.degraded("recommend")
        # Personalised unless the user said no or was erased. Redis down: personalised only when consent is not
        # required (fail closed otherwise). No id at all (a first visit without a cookie yet): popularity.
        if state is not None:
            personalised = state.personalisation and not state.erased
        else:
            personalised = degraded and not (self.collector_on and self.settings.consent_for_personalisation)
        recent = state.recent if state is not None and personalised else ()
        popular = None
        if personalised and state is not None and state.segments:
            # Used only when the user stays cold (no trained vector, no recent activity): its segments' popularity.
            pipeline = self.pipeline
            fallback = (pipeline.popularity.overall, pipeline.popularity.overall_scores)
            popular = await self.segments.ranking(state.segments, fallback)
        context = request.context
        now = time.gmtime()
        query = Query(
            user_id=lookup_id if personalised else "",
            k=request.k,
            hour=context.hour if context and context.hour is not None else now.tm_hour,
            dow=context.dow if context and context.dow is not None else now.tm_wday,
            exclude_seen=request.exclude_seen,
            include_categories=tuple(request.include_categories or ()),
            exclude_categories=tuple(request.exclude_categories or ()),
            segment=tuple((context.segment or {}).items()) if context and personalised else (),
            popular=popular,
            target=target,
        )
        try:
            ranked = self.pipeline.recommend(query, recent, observe)
        except BadQuery as error:
            return _ctx_error(ctx, 400, error.field, str(error))  # type: ignore[return-value]
        self.metrics.user_source(ranked.user_source)
        return RecommendResponse(
            user_id=request.user_id or "",
            user_source=ranked.user_source,
            items=self._items(ranked.items, ranked.scores, ranked.stage),
            model=self.model_tag,
            degraded=degraded,
            personalised=personalised,
        )

    def _subject(self, user_id: str | None, ctx: bentoml.Context) -> tuple[str | None, str]:
        """``(online-store subject, bundle lookup id)``. With the collector on, Redis keys are the same keyed
        pseudonyms the collector writes (no raw id in Redis); the bundle is looked up by the id it was trained on."""
        if COLLECTOR is None:
            return user_id, user_id or ""
        pseudo = COLLECTOR.intake.pseudo
        if user_id:
            subject = pseudo.user(user_id)
            # A bundle trained on collected data (data=lake) knows users by the same pseudonym; one trained on raw
            # ids (MovieLens, an event log) by the id itself.
            known = user_id in self.pipeline.user_index or subject not in self.pipeline.user_index
            return subject, user_id if known else subject
        visitor = ctx.request.cookies.get(self.settings.collector.cookie_name, "")
        if len(visitor) != 32:
            return None, ""  # answered with popularity (personalised: false)
        return pseudo.visitor(visitor), ""

    def _consent_keys(self, subject: str) -> tuple[str | None, str | None]:
        if COLLECTOR is None:
            return None, None
        consent = consent_key(self.settings.collector, subject) if self.settings.consent_for_personalisation else None
        return consent, tombstone_key(self.settings.collector.names)

    @bentoml.api(route="/similar_items")
    async def similar_items(self, request: SimilarItemsRequest, /) -> SimilarItemsResponse:
        """Nearest items by collaborative embedding and by BERT title embedding. Unknown item_id: 404."""
        start = time.perf_counter()
        try:
            found = self.pipeline.similar(request.item_id, request.k)
        except UnknownItem as error:
            return _field_error(404, "item_id", str(error))  # type: ignore[return-value]
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

    @bentoml.api(route="/items")
    async def items(self, request: ItemUpsertRequest, /, ctx: bentoml.Context) -> ItemUpsertResponse:
        """Add an item to the catalogue or update one (admin). Its text is encoded with the bundle's ONNX MiniLM, its
        vector added to the content index, and an item the collaborative model does not know becomes a retrieval
        candidate at once, with a vector estimated from its nearest catalogue items by text. Persisted in Redis:
        every worker applies it within items_poll_s, a restarted server reloads it, and the next export includes it.
        201: a new item; 200: an update; 409: the bundle has no content section; 503: Redis unavailable."""
        feed = self.items_feed
        if feed is None:
            return _ctx_error(
                ctx,
                409,
                "bundle",
                "the served bundle has no content section (text vectors and encoder), so it cannot encode new items: "
                "export it again with content (recstack-export ... content.enabled=true)",
            )  # type: ignore[return-value]
        record = ItemUpsert(
            item_id=request.item_id,
            title=request.title.strip(),
            categories=tuple(request.categories),
            tags=tuple(request.tags),
            description=request.description.strip(),
            year=request.year,
        )
        done = await feed.upsert(record)
        if done is None:
            ctx.response.metadata["retry-after"] = "1"
            return _ctx_error(ctx, 503, "online_store", "Redis is unavailable: the upsert was not stored; retry")  # type: ignore[return-value]
        row = self.pipeline.item_index[request.item_id]
        ctx.response.status_code = 201 if done.created else 200
        return ItemUpsertResponse(
            item_id=request.item_id,
            created=done.created,
            version=done.version,
            recommendable=bool(row not in self.pipeline.dead_rows),
            neighbours=list(done.neighbours),
            model=self.model_tag,
        )

    def _items(self, items: np.ndarray, scores: np.ndarray, stage: str) -> list[RecommendedItem]:
        ids, titles = self.pipeline.item_ids, self.pipeline.item_titles
        return [
            RecommendedItem(item_id=ids[i], title=titles[i], score=float(s), stage=stage)  # type: ignore[arg-type]
            for i, s in zip(items.tolist(), scores.tolist())
        ]


JSON_ROUTES = tuple(api.route for api in Recommender.apis.values())
ACCESS_MIDDLEWARES = collector_mount.access_middlewares(SETTINGS)
"""API keys and roles, then rate limits: the same policy on the recommender's routes and the collector's."""
COLLECTOR_APP = (
    http_guards.guarded(
        COLLECTOR.app(),
        json_routes=collector_mount.JSON_ROUTES,
        max_header_bytes=SETTINGS.max_header_bytes,
        max_body_bytes=SETTINGS.max_events_body_bytes,
        inner=ACCESS_MIDDLEWARES,
    )
    if COLLECTOR is not None
    else None
)
SEGMENTS_APP = (
    http_guards.guarded(
        segments_api.build(SETTINGS, COLLECTOR.intake.pseudo.user if COLLECTOR is not None else None, STATIC).app(),
        json_routes=segments_api.JSON_ROUTES,
        max_header_bytes=SETTINGS.max_header_bytes,
        max_body_bytes=SETTINGS.max_body_bytes,
        inner=ACCESS_MIDDLEWARES,
    )
    if SETTINGS.segments_api
    else None
)
"""Profiles and segments (recstack.serving.segments_api): routed before BentoML like the collector, same guards."""

# Outermost first (Starlette wraps in list order): shape and log every 4xx, then the cheap guards, then who is calling
# (API keys and roles), how often (rate limits), then the rest. Readiness sits inside access: it reads the role.
Recommender.add_asgi_middleware(http_guards.ErrorShapeMiddleware)
# The demo storefront (GET /demo) reads the original path, so it sits outside the unknown-path guard.
Recommender.add_asgi_middleware(
    demo_site.DemoSiteMiddleware,
    catalogue=demo_site.service_catalogue,
    static_dir=STATIC,
)
Recommender.add_asgi_middleware(
    http_guards.RequestGuardMiddleware, json_routes=JSON_ROUTES, max_header_bytes=SETTINGS.max_header_bytes
)
for _middleware, _options in ACCESS_MIDDLEWARES:
    Recommender.add_asgi_middleware(_middleware, **_options)
Recommender.add_asgi_middleware(http_guards.BodyLimitMiddleware, max_bytes=SETTINGS.max_body_bytes)
Recommender.add_asgi_middleware(http_guards.ReadinessMiddleware)
Recommender.add_asgi_middleware(http_guards.GcFreezeMiddleware, after=SETTINGS.gc_freeze_after)
http_guards.install_log_filter()


def _to_asgi_with_one_unknown_label(service: bentoml.Service) -> None:
    """BentoML's HTTP metrics middleware labels requests by raw path and sits outside every user middleware, so the
    unknown-path rewrite (http_guards.collapse_unknown_paths) must wrap the app ``to_asgi`` builds. ``Service`` is a
    slotted attrs class: the method is wrapped on the class, for this service object only."""
    cls = type(service)
    original = cls.to_asgi

    def to_asgi(self, is_main: bool = True):  # type: ignore[no-untyped-def]
        app = original(self, is_main=is_main)
        if self is not service:
            return app
        app = http_guards.collapse_unknown_paths(app)
        if COLLECTOR_APP is not None:  # the collector's paths skip BentoML's stack: http_guards.dispatch_first
            app = http_guards.dispatch_first(app, COLLECTOR_APP, collector_mount.PATHS)
        if SEGMENTS_APP is not None:  # GET /users/<id>/profile|segments before the collector's /users/ prefix
            app = segments_api.dispatch(app, SEGMENTS_APP)
        return app

    cls.to_asgi = to_asgi  # type: ignore[method-assign]


_to_asgi_with_one_unknown_label(Recommender)

__all__ = ["SETTINGS", "Recommender"]
