"""One bundle as a worker serves it: the pipeline, the segment cache over its item index, its live-items feed.

The service holds one :class:`ServedBundle` per experiment arm (one in all when there is no experiment) and replaces
it whole on a reload (recstack.serving.reloads): a request takes the reference once, so a request in flight finishes
on the bundle it started with, and the swap itself is one attribute assignment.

:func:`load_served` does everything a reload must do before the swap, and refuses a bundle that fails any of it with
:class:`ReloadRefused` (the service answers 4xx with the reason and keeps serving the old one):

* **missing**: neither a folder nor a model in the BentoML store (404);
* **tampered**: a file whose sha256 differs from the manifest, or a manifest whose digest does not match (422);
* **incompatible**: a format version, dimensions or ranker contract this code cannot serve (422), or a bundle
  without a content section while the service holds live items (``POST /items``) it could no longer serve (409);
* **fails the smoke test**: a few trained users and a cold one answered through the whole pipeline must give ``k``
  distinct, finite-scored, in-range items outside the user's seen set (422).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recstack.bundle.layout import BundleError
from recstack.collect.records import segments_key
from recstack.serving.item_feed import ItemFeed
from recstack.serving.pipeline import Pipeline, PipelineConfig, Query
from recstack.serving.segment_targeting import SegmentCache

if TYPE_CHECKING:
    from recstack.bundle.reader import Bundle
    from recstack.serving.online_store import RedisOnlineStore
    from recstack.serving.settings import ServeSettings

SMOKE_USERS = 5
SMOKE_K = 10


class ReloadRefused(Exception):
    """A bundle the service will not swap in: ``status`` is the HTTP status, the message the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServedBundle:
    ref: str
    """What was asked for: a bundle folder or a BentoML model tag."""
    path: str
    """The folder it was loaded from (absolute; a model tag's folder in the BentoML store): ``GET /admin/metadata``."""
    tag: str
    """What answers carry as ``model``: the model tag, else ``<folder name>@<manifest digest[:12]>`` (never a path)."""
    digest: str
    pipeline: Pipeline
    segments: SegmentCache
    items_feed: ItemFeed | None


def resolve(ref: str) -> tuple[Path, str | None]:
    """``(bundle folder, model tag or None)`` of a folder or a BentoML model tag; :class:`ReloadRefused` (404) when
    it is neither."""
    if not ref:
        raise ReloadRefused(400, "bundle: give a bundle folder or a BentoML model tag")
    path = Path(ref)
    if path.exists():
        return path.resolve(), None
    import bentoml

    try:
        model = bentoml.models.get(ref)
    except Exception as error:  # NotFound, or a malformed tag
        raise ReloadRefused(
            404,
            f"bundle {ref!r} is neither a folder nor a model in the BentoML store ({type(error).__name__}); pass a "
            "bundle folder or the tag recstack-export / recstack-retrain registered",
        ) from None
    return Path(model.path), str(model.tag)


def load_served(
    ref: str,
    settings: ServeSettings,
    store: RedisOnlineStore,
    *,
    verify: bool = True,
    live_items_now: int = 0,
    tag: str | None = None,
) -> ServedBundle:
    """Load, check and warm one bundle (blocking: a reload runs it in a thread). ``live_items_now``: the live items
    the bundle being replaced serves; a bundle that could not serve them is refused. ``tag``: the model tag of a
    folder that is a stored model (a Bento's packed model)."""
    from recstack.bundle.reader import Bundle

    path, found_tag = resolve(ref)
    tag = tag or found_tag
    try:
        bundle = Bundle.load(path, verify=verify, index_params={"ef_search": settings.ef_search})
    except BundleError as error:
        raise ReloadRefused(422, f"bundle {ref!r} failed its checks: {error}") from None
    except (OSError, ValueError) as error:
        raise ReloadRefused(422, f"bundle {ref!r} could not be read: {type(error).__name__}: {error}") from None
    if live_items_now and bundle.content is None:
        raise ReloadRefused(
            409,
            f"the service serves {live_items_now} live item(s) added with POST /items, which bundle {ref!r} could not "
            "serve (it has no content section): export it with content (content.enabled=true)",
        )
    digest = bundle.manifest.digest()
    config = PipelineConfig(n_candidates=settings.n_candidates, max_recent=settings.recent_max)
    try:
        pipeline = Pipeline.from_bundle(bundle, config)
    except BundleError as error:
        raise ReloadRefused(422, f"bundle {ref!r} is incompatible: {error}") from None
    items_feed = _live_items(bundle, pipeline, settings, store)
    smoke_test(pipeline)
    meta = segments_key(settings.collector.names, "meta")
    segments = SegmentCache(
        lambda: store.call_async(lambda client: client.hgetall(meta)),
        pipeline.item_index,
        settings.segments_cache_ttl_s,
    )
    return ServedBundle(
        ref=found_tag or str(path),  # absolute: another worker or replica resolves the same bundle
        path=str(path),
        tag=tag or f"{path.name}@{digest[:12]}",
        digest=digest,
        pipeline=pipeline,
        segments=segments,
        items_feed=items_feed,
    )


def _live_items(
    bundle: Bundle, pipeline: Pipeline, settings: ServeSettings, store: RedisOnlineStore
) -> ItemFeed | None:
    """POST /items needs the bundle's content section (text vectors, their index, the ONNX text encoder). The
    upserts already in Redis are applied before the bundle serves: a restarted or reloaded server serves them."""
    if bundle.content is None:
        return None
    from recstack.serving.live_items import LiveItems

    live = LiveItems.from_bundle(pipeline, bundle, neighbours=settings.items_neighbours)
    feed = ItemFeed(store, settings.collector.names, live, poll_s=settings.items_poll_s)
    feed.snapshot_sync()  # None (Redis away): the background poll takes the snapshot once it is back
    return feed


def smoke_test(pipeline: Pipeline, n_users: int = SMOKE_USERS, k: int = SMOKE_K) -> None:
    """Answer a few trained users (re-ranked and not) and a cold one through the whole pipeline; :class:`ReloadRefused`
    (422) naming what is wrong if any answer is short, repeated, out of range, seen, or not finite. Also warms the
    lazy allocations of ONNX Runtime, FAISS and numpy before the bundle takes traffic."""
    k = min(k, pipeline.n_items)
    users = list(pipeline.user_index.items())[:n_users]
    queries = [(Query(user_id="", k=k), None)]
    for user_id, row in users:
        queries += [(Query(user_id=user_id, k=k, rerank=True), row), (Query(user_id=user_id, k=k, rerank=False), row)]
    for query, row in queries:
        try:
            ranked = pipeline.recommend(query)
        except Exception as error:  # any failure here is the bundle's, reported, not raised into the request path
            raise ReloadRefused(
                422, f"smoke test: user {query.user_id!r} failed: {type(error).__name__}: {error}"
            ) from None
        items, scores = ranked.items, ranked.scores
        problem = None
        if len(items) != k or len(np.unique(items)) != k:
            problem = f"{len(items)} items ({len(np.unique(items))} distinct), expected {k}"
        elif items.min() < 0 or items.max() >= pipeline.n_items:
            problem = "an item index outside the catalogue"
        elif not np.all(np.isfinite(scores)):
            problem = "non-finite scores"
        elif (
            row is not None
            and np.isin(items, pipeline.seen.indices[pipeline.seen.indptr[row] : pipeline.seen.indptr[row + 1]]).any()
        ):
            problem = "an item the user has already seen"
        if problem:
            raise ReloadRefused(422, f"smoke test: user {query.user_id!r} ({ranked.stage}): {problem}")
