"""The recstack HTTP service (BentoML 1.4): ``recstack-serve bundle=...`` (or ``bentoml serve serving.service:Recommender``).

Settings are one typed class, :class:`recstack.serving.settings.ServeSettings`, over ``configs/serve.yaml``:
``recstack-serve`` passes them as one JSON variable (``$RECSTACK_SERVE_SETTINGS``); a bare ``bentoml serve`` composes
``configs/serve.yaml`` with ``bundle`` from ``$RECSTACK_BUNDLE``. The bundle is a folder, or a BentoML model tag
(``recstack:latest``) saved with ``recstack.export.model_store.save_to_store``. It is loaded once per worker in
``__init__``, which reports ``ready`` or ``failed`` to recstack-serve's supervisor (recstack.serving.supervisor): a
worker that cannot start stops the server instead of being respawned forever.

Endpoints are ``async def`` on purpose: the pipeline is ~0.2 ms of CPU, cheaper inline on the event loop than
BentoML's thread-pool hop for sync endpoints, and the one Redis read is awaited (async client, bounded pool, 100 ms
timeout, circuit breaker) so a slow Redis never stalls the worker's other requests.

Closing the loop: every answer carries a ``request_id`` and is recorded as an impression (recstack.serving.impressions,
buffered per worker, sent in the background); an A/B experiment (``experiment`` in configs/serve.yaml) serves one
bundle per arm, each user's arm fixed by a hash (recstack.serving.experiments); ``POST /admin/reload`` swaps a bundle
on every worker and replica without a restart (recstack.serving.reloads, served_bundle), and ``GET /admin/metadata``
says which bundle each arm serves (what recstack-retrain judges its candidate against). The middlewares
(recstack.serving.http_guards) exist because of measured BentoML behaviour; benchmarks/RESULTS.md has the figures.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from pathlib import Path

import bentoml
import numpy as np
from starlette.responses import JSONResponse

from recstack.collect.catalogue import ItemUpsert
from recstack.collect.producer import consent_key
from recstack.collect.purposes import ROLE_STATE, VISITOR
from recstack.collect.records import memberships_key, tombstone_key
from recstack.serving import collector_mount, demo_site, http_guards, reloads, segments_api
from recstack.serving.experiments import NO_ARM, Assignment
from recstack.serving.impressions import ImpressionLog, impression_row
from recstack.serving.metrics import StageMetrics
from recstack.serving.online_store import RedisOnlineStore
from recstack.serving.pipeline import BadQuery, Pipeline, Query, UnknownItem
from recstack.serving.schemas import (
    ItemUpsertRequest,
    ItemUpsertResponse,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
    SimilarItemsRequest,
    SimilarItemsResponse,
)
from recstack.serving.segment_targeting import Target
from recstack.serving.served_bundle import ReloadRefused, ServedBundle, load_served
from recstack.serving.settings import ServeSettings
from recstack.serving.supervisor import WorkerLink

logger = logging.getLogger("recstack.serving")

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
    """What should this user see now: two-stage recommendations from a recstack bundle (one per A/B arm), plus recent
    activity; every answer recorded as an impression; bundles hot-swapped by ``POST /admin/reload``."""

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
        self.settings = SETTINGS
        self.store = RedisOnlineStore(self.settings.redis_store())
        self.metrics = StageMetrics()
        self._observe = {name: self.metrics.observer(name) for name in ("recommend", "similar_items")}
        self.collector_on = COLLECTOR is not None
        refs = self.settings.arm_bundles()
        experiment = self.settings.experiment
        self.experiment = experiment.name
        self.assignment = (
            Assignment.build(experiment.name, {arm: spec.weight for arm, spec in experiment.arms.items()})
            if experiment.name is not None
            else None
        )
        self.reload_key = reloads.deployment_key(self.settings.collector.names, experiment.name, refs)
        self._reload_lock = asyncio.Lock()
        # A worker that starts after a reload (a restart, a respawned worker, a new replica) serves what was announced.
        entries = self.store.call(lambda client: client.xrange(self.reload_key, "-", "+"))
        announced = reloads.latest_per_arm(reloads.decode(entries))
        self._reload_last = reloads.decode(entries)[-1].id if entries else None
        self.served: dict[str, ServedBundle] = {}
        for arm, ref in refs.items():
            self.served[arm] = self._initial(arm, ref, announced.get(arm))
        self.impressions = None
        if self.settings.impressions and COLLECTOR is not None:  # pseudonyms only: the collector's key makes them
            stream = self.settings.collector.names.stream
            self.impressions = ImpressionLog(
                lambda fields: self.store.call_async(lambda client: client.xadd(stream, fields)),
                flush_s=self.settings.impressions_flush_s,
                max_buffer=self.settings.impressions_max_buffer,
            )
        # Warm the request path once (lazy allocations in ORT/FAISS/numpy; the smoke test did most), then keep the
        # long-lived heap out of the garbage collector's full passes; see GcFreezeMiddleware.
        for served in self.served.values():
            served.pipeline.recommend(Query(user_id="", k=1))
        gc.collect()
        gc.freeze()

    def _initial(self, arm: str, ref: str, announced: reloads.Announcement | None) -> ServedBundle:
        """The bundle an arm starts with: the latest reload announced for it, else the configured one."""
        if announced is not None:
            try:
                return load_served(announced.ref, self.settings, self.store)
            except ReloadRefused as error:
                logger.error(
                    "arm %r: the reloaded bundle %s cannot be served (%s); serving %s", arm, announced.ref, error, ref
                )
        # recstack-serve hashed every configured bundle before starting any worker (bundle_verified); a bare
        # `bentoml serve` did not.
        verify = not self.settings.bundle_verified
        if self.bundle_model is not None and ref == self.settings.bundle:  # class-scope BentoModel: the stored model
            return load_served(
                str(Path(self.bundle_model.path)),
                self.settings,
                self.store,
                verify=verify,
                tag=str(self.bundle_model.tag),
            )
        return load_served(ref, self.settings, self.store, verify=verify)

    @property
    def default(self) -> ServedBundle:
        """The first arm's bundle (the only one without an experiment): /similar_items, /items, the demo page."""
        return next(iter(self.served.values()))

    @property
    def pipeline(self):  # type: ignore[no-untyped-def]
        return self.default.pipeline

    @property
    def model_tag(self) -> str:
        return self.default.tag

    @bentoml.on_startup
    async def _background(self) -> None:
        """Per worker, in the background: the item feeds follow other workers' upserts (recstack.serving.item_feed),
        impressions are sent in batches, reload announcements are followed."""
        for served in self.served.values():
            if served.items_feed is not None:
                served.items_feed.start()
        if self.impressions is not None:
            self.impressions.start()
        self._follower = asyncio.get_running_loop().create_task(self._follow_reloads(), name="recstack-reloads")

    @bentoml.on_shutdown
    async def _drain(self) -> None:
        """Send the buffered impressions before the worker exits."""
        if self.impressions is not None:
            await self.impressions.stop()

    async def readiness(self) -> dict:
        """What ``/readyz`` answers. The store is probed through the same async pool and breaker as the requests, so
        ``ready`` means requests are being answered with the online store, not that some other connection works."""
        state = await self.store.state_async()
        default = self.default
        feed = default.items_feed
        answer = {
            "status": "ready" if state.available else "degraded",
            "model": default.tag,
            "n_users": default.pipeline.n_users,
            "n_items": default.pipeline.n_items,
            "ranker": default.pipeline.ranker is not None,
            "ranker_kind": default.pipeline.ranker_kind,
            "index": default.pipeline.index.config.kind,
            "live_items": None if feed is None else feed.live.n_live,
            "online_store": {"kind": state.kind, "available": state.available, "detail": state.detail},
            "impressions": None
            if self.impressions is None
            else {
                "pending": self.impressions.pending,
                "sent": self.impressions.sent,
                "dropped": self.impressions.dropped,
            },
        }
        if self.experiment is not None:
            answer["experiment"] = {"name": self.experiment, "arms": {arm: s.tag for arm, s in self.served.items()}}
        return answer

    @bentoml.api(route="/recommend")
    async def recommend(self, request: RecommendRequest, /, ctx: bentoml.Context) -> RecommendResponse:
        """Top-k items for a user now. Unknown users are cold starts: recent activity from /events, else popularity
        (of the segments they are in, else of `context.segment` when given, else global). Without a user_id, the
        visitor cookie's recent activity is used. Without consent to personalisation, or for an erased user, the
        answer is popularity only (``personalised: false``). `segment` restricts the answer to, or boosts, the items
        popular in a named segment. Every answer has a `request_id` (send it with the click it leads to) and, in an
        A/B experiment, the user's `arm`; it is recorded as an impression in the lake."""
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
        subject = self._subject(request.user_id, ctx)
        arm = self.assignment.arm(subject or "") if self.assignment is not None else NO_ARM
        served = self.served[arm]  # taken once: a reload during this request does not change what answers it
        pipeline = served.pipeline
        lookup_id = self._lookup_id(request.user_id, subject, pipeline)
        target = None
        if request.segment is not None:
            wanted = request.segment
            found = await served.segments.lookup(wanted.name)
            if found is None:
                return _ctx_error(
                    ctx,
                    404,
                    "segment.name",
                    f"no segment named {wanted.name!r} has been run: GET /segments lists them, and "
                    "`recstack-segments run` publishes a new one",
                )  # type: ignore[return-value]
            target = Target(found.items, found.weights, wanted.mode, wanted.weight)
        state = None
        if subject is not None:
            # A user the bundle does not know may be cold: its segments ride in the same round trip.
            cold = self.settings.segments_cold_start and lookup_id not in pipeline.user_index
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
            fallback = (pipeline.popularity.overall, pipeline.popularity.overall_scores)
            popular = await served.segments.ranking(state.segments, fallback)
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
            ranked = pipeline.recommend(query, recent, observe)
        except BadQuery as error:
            return _ctx_error(ctx, 400, error.field, str(error))  # type: ignore[return-value]
        self.metrics.user_source(ranked.user_source)
        request_id = uuid.uuid4().hex
        ids = pipeline.item_ids[ranked.items].tolist()
        scores = ranked.scores.tolist()
        if self.impressions is not None:
            self.impressions.record(
                impression_row(
                    request_id=request_id,
                    user_id=subject,
                    anonymous=not request.user_id,
                    items=ids,
                    scores=scores,
                    stage=ranked.stage,
                    user_source=ranked.user_source,
                    personalised=personalised,
                    bundle=served.tag,
                    experiment=self.experiment,
                    arm=arm or None,
                )
            )
        titles = pipeline.item_titles[ranked.items].tolist()
        return RecommendResponse(
            user_id=request.user_id or "",
            user_source=ranked.user_source,
            items=[
                RecommendedItem(item_id=i, title=t, score=s, stage=ranked.stage)
                for i, t, s in zip(ids, titles, scores, strict=True)
            ],
            model=served.tag,
            degraded=degraded,
            personalised=personalised,
            request_id=request_id,
            experiment=self.experiment,
            arm=arm or None,
        )

    def _subject(self, user_id: str | None, ctx: bentoml.Context) -> str | None:
        """The online-store subject: with the collector on, the same keyed pseudonym the collector writes (no raw id
        in Redis or the lake), of the user id, else of the visitor cookie; None for a first visit without a cookie."""
        if COLLECTOR is None:
            return user_id
        pseudo = COLLECTOR.intake.pseudo
        if user_id:
            return pseudo.user(user_id)
        visitor = ctx.request.cookies.get(self.settings.collector.cookie_name, "")
        if len(visitor) != 32:
            return None  # answered with popularity (personalised: false)
        return pseudo.visitor(visitor)

    @staticmethod
    def _lookup_id(user_id: str | None, subject: str | None, pipeline: Pipeline) -> str:
        """The id the bundle knows the user by. A bundle trained on collected data (data=lake) knows users by the
        same pseudonym; one trained on raw ids (MovieLens, an event log) by the id itself; visitors by neither."""
        if not user_id:
            return ""
        if COLLECTOR is None or subject is None:
            return user_id
        known = user_id in pipeline.user_index or subject not in pipeline.user_index
        return user_id if known else subject

    def _consent_keys(self, subject: str) -> tuple[str | None, str | None]:
        if COLLECTOR is None:
            return None, None
        consent = consent_key(self.settings.collector, subject) if self.settings.consent_for_personalisation else None
        return consent, tombstone_key(self.settings.collector.names)

    @bentoml.api(route="/similar_items")
    async def similar_items(self, request: SimilarItemsRequest, /) -> SimilarItemsResponse:
        """Nearest items by collaborative embedding and by BERT title embedding. Unknown item_id: 404."""
        start = time.perf_counter()
        served = self.default
        pipeline = served.pipeline
        try:
            found = pipeline.similar(request.item_id, request.k)
        except UnknownItem as error:
            return _field_error(404, "item_id", str(error))  # type: ignore[return-value]
        self._observe["similar_items"]("total", time.perf_counter() - start)
        item = pipeline.item_index[request.item_id]
        text = None
        if found.text_items is not None and found.text_scores is not None:
            text = _items(pipeline, found.text_items, found.text_scores, "text")
        return SimilarItemsResponse(
            item_id=request.item_id,
            title=str(pipeline.item_titles[item]),
            embedding=_items(pipeline, found.embedding_items, found.embedding_scores, "embedding"),
            text=text,
            model=served.tag,
        )

    @bentoml.api(route="/items")
    async def items(self, request: ItemUpsertRequest, /, ctx: bentoml.Context) -> ItemUpsertResponse:
        """Add an item to the catalogue or update one (admin). Its text is encoded with the bundle's ONNX MiniLM, its
        vector added to the content index, and an item the collaborative model does not know becomes a retrieval
        candidate at once, with a vector estimated from its nearest catalogue items by text. Persisted in Redis:
        every worker (and every arm's bundle) applies it within items_poll_s, a restarted or reloaded server
        reloads it, and the next export includes it. 201: a new item; 200: an update; 409: the bundle has no content
        section; 503: Redis unavailable."""
        served = self.default
        feed = served.items_feed
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
        row = served.pipeline.item_index[request.item_id]
        ctx.response.status_code = 201 if done.created else 200
        return ItemUpsertResponse(
            item_id=request.item_id,
            created=done.created,
            version=done.version,
            recommendable=bool(row not in served.pipeline.dead_rows),
            neighbours=list(done.neighbours),
            model=served.tag,
        )

    @bentoml.api(route="/admin/reload")
    async def admin_reload(self, request: ReloadRequest, /, ctx: bentoml.Context) -> ReloadResponse:
        """Serve another bundle without a restart (admin). This worker loads it in a thread (requests go on being
        answered by the old one), checks it (every file's sha256, the manifest digest, dimensions, the ranker
        contract, a smoke test of the whole pipeline), announces it, and swaps: requests in flight finish on the old
        bundle. The other workers and replicas follow within reload_poll_s (recstack.serving.reloads).
        404: no such bundle or arm; 409: it cannot serve the live items; 422: tampered or incompatible; 503: Redis
        unavailable (nothing swapped anywhere). The old bundle keeps serving after any refusal."""
        arm = request.arm if request.arm is not None else next(iter(self.served))
        if arm not in self.served:
            known = ", ".join(a for a in self.served if a) or "none: no experiment is running"
            return _ctx_error(ctx, 404, "arm", f"no arm {arm!r}; the arms are {known}")  # type: ignore[return-value]
        async with self._reload_lock:
            current = self.served[arm]
            try:
                new = await asyncio.to_thread(self._load, request.bundle, current)
            except ReloadRefused as error:
                self.metrics.reload(arm, "refused")
                return _ctx_error(ctx, error.status, "bundle", str(error))  # type: ignore[return-value]
            fields = reloads.encode(arm, new.ref, new.digest)
            version = await self.store.call_async(
                lambda client: client.xadd(self.reload_key, fields, maxlen=reloads.MAXLEN, approximate=True)
            )
            if version is None:
                ctx.response.metadata["retry-after"] = "1"
                return _ctx_error(
                    ctx,
                    503,
                    "online_store",
                    "Redis is unavailable: the reload could not be announced to the other "
                    "workers, so none swapped; retry",
                )  # type: ignore[return-value]
            previous = await self._swap(arm, new)
        return ReloadResponse(
            bundle=new.tag,
            previous=previous.tag,
            arm=arm or None,
            version=version.decode() if isinstance(version, bytes) else str(version),
        )

    def metadata(self) -> dict:
        """What ``GET /admin/metadata`` answers: per arm (``null`` without an experiment), the bundle this worker
        serves: its folder, what the reload or the command line named (``ref``), the ``model`` tag answers carry, and
        the manifest digest. Another worker differs only within reload_poll_s of a reload."""
        return {
            "experiment": self.experiment,
            "arms": [
                {"arm": arm or None, "bundle": s.path, "ref": s.ref, "tag": s.tag, "digest": s.digest}
                for arm, s in self.served.items()
            ],
        }

    def _load(self, ref: str, current: ServedBundle) -> ServedBundle:
        feed = current.items_feed
        return load_served(ref, self.settings, self.store, live_items_now=0 if feed is None else feed.live.n_live)

    async def _swap(self, arm: str, new: ServedBundle) -> ServedBundle:
        old = self.served[arm]
        if new.items_feed is not None:
            new.items_feed.start()
        self.served[arm] = new  # one assignment: the next request takes the new bundle, those in flight keep theirs
        if old.items_feed is not None:
            await old.items_feed.stop()
        self.metrics.reload(arm, "swapped")
        logger.info("arm %r now serves %s (was %s)", arm, new.tag, old.tag)
        return old

    async def _follow_reloads(self) -> None:
        """Apply the reloads other workers and replicas announce (the latest per arm), forever."""
        while True:
            await asyncio.sleep(self.settings.reload_poll_s)
            try:
                await self._apply_announced()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reload follower: failed; retrying")
            if self.impressions is not None:
                self.metrics.impressions_dropped(self.impressions.dropped)

    async def _apply_announced(self) -> None:
        last = self._reload_last
        entries = await self.store.call_async(
            lambda client: client.xrange(self.reload_key, "-" if last is None else f"({last}", "+", count=100)
        )
        if not entries:
            return
        announced = reloads.decode(entries)
        for arm, a in reloads.latest_per_arm(announced).items():
            current = self.served.get(arm)
            if current is None or (current.ref, current.digest) == (a.ref, a.digest):
                continue
            async with self._reload_lock:
                try:
                    new = await asyncio.to_thread(self._load, a.ref, self.served[arm])
                except ReloadRefused as error:
                    self.metrics.reload(arm, "refused")
                    logger.error(
                        "arm %r: announced bundle %s refused here (%s); the old one keeps serving", arm, a.ref, error
                    )
                    continue
                await self._swap(arm, new)
        self._reload_last = announced[-1].id if announced else last


def _items(pipeline: Pipeline, items: np.ndarray, scores: np.ndarray, stage: str) -> list[RecommendedItem]:
    ids, titles = pipeline.item_ids, pipeline.item_titles
    return [
        RecommendedItem(item_id=ids[i], title=titles[i], score=float(s), stage=stage)  # type: ignore[arg-type]
        for i, s in zip(items.tolist(), scores.tolist())
    ]


METADATA_PATH = "/admin/metadata"


async def _admin_metadata(scope: http_guards.Scope, receive: http_guards.Receive, send: http_guards.Send) -> None:
    """``GET /admin/metadata`` (admin): :meth:`Recommender.metadata` of the worker that answers. BentoML's endpoints
    are POST only, so this GET is answered before BentoML, behind the same guards (like the collector's routes)."""
    if scope.get("method") != "GET":
        await http_guards.send_json(send, 405, {"error": f"{METADATA_PATH} answers GET only", "field": "method"})
        return
    try:
        service = bentoml.get_current_service()
    except Exception:
        service = None
    if service is None or not hasattr(service, "metadata"):
        await http_guards.send_json(send, 503, {"error": "the service is starting; retry", "field": "service"})
        return
    await http_guards.send_json(send, 200, service.metadata())


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
METADATA_APP = http_guards.guarded(
    _admin_metadata,
    json_routes=(),
    max_header_bytes=SETTINGS.max_header_bytes,
    max_body_bytes=SETTINGS.max_body_bytes,
    inner=ACCESS_MIDDLEWARES,
)

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
        app = http_guards.dispatch_first(app, METADATA_APP, (METADATA_PATH,))
        if COLLECTOR_APP is not None:  # the collector's paths skip BentoML's stack: http_guards.dispatch_first
            app = http_guards.dispatch_first(app, COLLECTOR_APP, collector_mount.PATHS)
        if SEGMENTS_APP is not None:  # GET /users/<id>/profile|segments before the collector's /users/ prefix
            app = segments_api.dispatch(app, SEGMENTS_APP)
        return app

    cls.to_asgi = to_asgi  # type: ignore[method-assign]


_to_asgi_with_one_unknown_label(Recommender)

__all__ = ["SETTINGS", "Recommender"]
