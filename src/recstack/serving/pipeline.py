"""The recommendation pipeline: one function, used by the HTTP service and by offline evaluation alike.

    user vector   trained embedding; else the weighted mean of the vectors of the user's recent items (fold-in);
                  else none, and the candidates come from popularity (of the user's segment when one is given)
    retrieval     one FAISS search for the top-N candidates, seen items excluded inside the index
    filter        include / exclude categories on the candidates (widening the search when too few survive)
    rerank        the bundle's re-ranker over the candidates, blended with retrieval by the weight tuned at export:
                  ONNX: one ONNX Runtime call of the Wide & Deep ranker, with context features (trained users only:
                  it knows cold users as one out-of-vocabulary row);
                  item_item: ``B[history, candidates].sum(0)`` (EASE's weights, numpy), where the history is the
                  user's seen items in the bundle plus their recent activity, so cold users with recent activity are
                  re-ranked too
    top-k         the k best by the last stage's score

Everything the request path needs is precomputed in :meth:`Pipeline.from_bundle`: the category matrix, the popularity
rankings, the ranker session. Imports stay serving-light: numpy, scipy, faiss/onnxruntime via the bundle, never torch.

Live items (``POST /items``, :mod:`recstack.serving.live_items`): :meth:`Pipeline.upsert_item` appends an item the
bundle does not hold, with a collaborative vector estimated from its content neighbours, to the per-item arrays and
to the retrieval index (FAISS ``add``, no rebuild), so the next request retrieves it like any other item. The ranker
knows only the bundle's items: a live candidate gets the mean ranker score of the others, moved by ``content_trust``
times its content z (below; 0 by default: z = 0 in the blend), and live items in a history add nothing to the
item-item scores.
A live item upserted again gets a new row; the old one is dead (excluded from every search). Rows of bundle items keep
their trained vector; an upsert changes their title, categories and text vector only.

Cold catalogue items: a bundle item without a training interaction (a catalogue item nobody had used before the
training split, e.g. ``split=new_items``) has an untrained vector and no ranker weights. Once content vectors are
attached it is served as a live item is: left out of the collaborative search, brought in by the content stage,
given the ranker score a live item gets. Without a content section it stays in the search as before.

The content stage (with content vectors attached, and only while live or cold items exist): a vector estimated from
neighbours serves items like their neighbours, which for a tail item is not enough to reach the user whose history
reads exactly like it. So each live item's text similarity to the user's history (its best cosine with the user's
recent items, else up to ``max_recent`` trained ones) is computed, the most similar live items join the candidates,
and each is scored on the retrieval scale by that similarity's z-score among the retrieved candidates' own:
``mean(r) + std(r) * (sim - mean(sims)) / std(sims)``. A live item that reads like the user's history far more than
the usual candidate ranks near the top; a loose match ranks mid-list.

The re-ranker cannot score a live or cold item, so without more it would sit at z = 0 on the ranker's side of the
blend, which in practice drops it from a re-ranked top-k however well its text matches. ``content_trust`` (``c``,
0..1) gives it the ranker score ``mean(k) + c * std(k) * z``, with ``z`` its content z above: 0 keeps it at the mean,
1 trusts its text match as much on the ranker's scale as on retrieval's. It is tuned on the validation split at export
with the blend weight where the validation split judges items without a training interaction
(:func:`recstack.offline.blend.tune_blend_weight`), and recorded in ``manifest.ranker.blend.content_trust``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from recstack.bundle.contract import ranker_contract, score_ranker
from recstack.bundle.item_item import ItemItemRanker
from recstack.bundle.layout import BundleError
from recstack.serving.fallbacks import PopularityFallback
from recstack.serving.growing import GrowingRows
from recstack.serving.metrics import StageObserver, null_observer
from recstack.serving.online_store import Event
from recstack.serving.segment_targeting import Target
from recstack.serving.settings import serve_yaml_default

if TYPE_CHECKING:
    from recstack.bundle.reader import Bundle

Stage = Literal["rerank", "retrieval", "popularity"]
UserSource = Literal["trained", "recent_activity", "popularity", "segment_popularity"]

DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"view": 0.5, "click": 1.0, "rating": 1.0, "dwell": 1.0, "add_to_cart": 1.5, "purchase": 2.0}
)


class BadQuery(ValueError):
    """A query the pipeline cannot answer because of one field (the service maps it to a 400 naming the field)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


class UnknownItem(KeyError):
    """An item id that is not in the bundle (the service maps it to a 404)."""

    def __init__(self, item_id: str) -> None:
        super().__init__(item_id)
        self.item_id = item_id

    def __str__(self) -> str:
        return f"item_id {self.item_id!r} is not in the served bundle; use an item id from the bundle's items table"


@dataclass(frozen=True)
class PipelineConfig:
    """How the pipeline answers. The two serving settings default to ``configs/serve.yaml`` (their one home): the
    service passes its :class:`~recstack.serving.settings.ServeSettings`; offline callers get the same values."""

    n_candidates: int = field(default_factory=lambda: int(serve_yaml_default("n_candidates")))
    """Top-N retrieved before filtering and re-ranking (serve.yaml ``n_candidates``)."""
    rerank: bool = True
    """Default for queries that do not say; False gives retrieval order (the ablation)."""
    rerank_weight: float | None = None
    """Share of the ranker in the final order, 0..1: ``(1 - w) * z(retrieval) + w * z(ranker)``, both z-scored over
    the candidates. None: the value tuned on the validation split at export (``manifest.ranker.blend.weight``),
    else 1 (the ranker alone)."""
    content_trust: float | None = None
    """How far a live or cold candidate's content z moves its ranker score from the others' mean, 0..1 (module
    docstring). None: the value tuned on validation at export (``manifest.ranker.blend.content_trust``), else 0."""
    max_recent: int = field(default_factory=lambda: int(serve_yaml_default("recent_max")))
    """Recent events read for fold-in and exclusion (serve.yaml ``recent_max``)."""
    event_weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_EVENT_WEIGHTS)
    widen_factor: int = 4
    """When filters leave fewer than k candidates, search again with N times this (a few times at most)."""


@dataclass(frozen=True)
class Query:
    user_id: str
    k: int = 10
    hour: int = 12
    dow: int = 0
    exclude_seen: bool = True
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    segment: tuple[tuple[str, str], ...] = ()
    rerank: bool | None = None
    """None: the pipeline's default."""
    popular: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False)
    """A cold user's own popularity ranking ``(item rows, scores)`` (its segments': segment_targeting), used instead of
    the demographic or global one."""
    target: Target | None = field(default=None, compare=False)
    """A named segment's items to restrict the answer to, or to boost (segment_targeting.Target)."""


@dataclass(frozen=True)
class Ranked:
    """Top-k answer: item indices (best first), the score that ordered them, and how they were produced."""

    items: np.ndarray
    scores: np.ndarray
    stage: Stage
    user_source: UserSource


@dataclass(frozen=True)
class Neighbours:
    embedding_items: np.ndarray
    embedding_scores: np.ndarray
    text_items: np.ndarray | None
    text_scores: np.ndarray | None


class Pipeline:
    """The bundle's arrays and sessions, arranged for one request at a time. Read-only after construction."""

    def __init__(
        self,
        *,
        user_index: Mapping[str, int],
        item_index: MutableMapping[str, int],
        item_ids: np.ndarray,
        item_titles: np.ndarray,
        item_categories: Sequence[Sequence[str]],
        user_embeddings: np.ndarray,
        item_embeddings: np.ndarray,
        seen: Any,
        index: Any,
        popularity: PopularityFallback,
        ranker: Any | None,
        item_text_embeddings: np.ndarray | None = None,
        config: PipelineConfig | None = None,
    ) -> None:
        self.config = config if config is not None else PipelineConfig()
        self.user_index = user_index
        self.item_index = item_index
        self.item_ids = item_ids
        self.item_titles = item_titles
        self.user_embeddings = np.ascontiguousarray(user_embeddings, dtype=np.float32)
        self.item_embeddings = np.ascontiguousarray(item_embeddings, dtype=np.float32)
        self.n_users, self.n_items = len(self.user_embeddings), len(self.item_embeddings)
        self.n_ranked = self.n_items  # the bundle's items: the ranker's contract; rows from here on are live items
        self.dead_rows = np.empty(0, np.int64)  # rows of live items replaced by a newer row: never retrieved
        self.seen = seen.tocsr()
        self.index = index
        self.popularity = popularity
        self.ranker = ranker
        names = sorted({str(c) for cats in item_categories for c in cats})
        self.category_ids: dict[str, int] = {name: i for i, name in enumerate(names)}
        # Bool matrix, read only on the <= N candidate rows, so its cost does not grow with the catalogue.
        self.category_matrix = np.zeros((self.n_items, max(1, len(names))), dtype=bool)
        for item, cats in enumerate(item_categories):
            for c in cats:
                self.category_matrix[item, self.category_ids[str(c)]] = True
        self.text_embeddings = None
        if item_text_embeddings is not None:
            text = np.asarray(item_text_embeddings, dtype=np.float32)
            norms = np.linalg.norm(text, axis=1, keepdims=True)
            self.text_embeddings = np.ascontiguousarray(text / np.maximum(norms, 1e-12))
        self._grow: dict[str, GrowingRows] | None = None  # created by the first upsert_item
        self.content_vectors: np.ndarray | None = None  # per row, the content section's text vector (attach_content)
        # Bundle items without a training interaction (the popularity count 0: their vectors and ranker weights are
        # untrained). Once content is attached they are served as live items are (see the module docstring).
        self.untrained_rows = np.empty(0, np.int64)
        self.cold_rows = np.empty(0, np.int64)  # the untrained rows, once served by content
        self.collaborative = np.ones(self.n_items, dtype=bool)  # per bundle row: its vector and weights are trained

    def attach_content(self, vectors: np.ndarray) -> None:
        """Give every item row its content text vector (unit rows, ``(n_items, dim)``): the content stage then lets
        live items and the bundle's untrained items reach users whose history reads like them
        (:meth:`_live_by_content`); the untrained ones leave the collaborative retrieval and the ranker."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != self.n_items:
            raise ValueError(f"content vectors of shape {vectors.shape}; expected ({self.n_items}, dim)")
        if self._grow is not None:
            raise RuntimeError("attach content vectors before any item is upserted")
        self.content_vectors = vectors.copy()
        self.cold_rows = self.untrained_rows.copy()
        self.collaborative[self.cold_rows] = False

    def _trained(self, items: np.ndarray) -> np.ndarray:
        """Boolean mask over ``items``: a bundle row with a trained vector and ranker weights (not live, not cold)."""
        known = items < self.n_ranked
        known[known] = self.collaborative[items[known]]
        return known

    # -- live items -----------------------------------------------------------------------------------------------

    def upsert_item(
        self,
        item_id: str,
        title: str,
        categories: Sequence[str],
        embedding: np.ndarray | None,
        text_vector: np.ndarray | None = None,
    ) -> int:
        """Add or change one item; returns its row. A bundle item keeps its trained vector (``embedding`` is
        ignored) and gets the new title, categories and text vector. Any other item needs ``embedding`` (a vector
        in the retrieval space) and is appended to the arrays and the index: a new row, the previous one (if any)
        dead. ``item_index`` gains the item in place (every holder of the map, e.g. the segment cache, sees it).
        Not thread-safe against concurrent requests: the service calls it on its event loop, between them."""
        row = self.item_index.get(item_id)
        if row is not None and row < self.n_ranked:
            self.item_titles[row] = title
            self._set_categories(row, categories)
            if text_vector is not None and self.text_embeddings is not None:
                self.text_embeddings[row] = self._text_row(text_vector)
            if text_vector is not None and self.content_vectors is not None:
                self.content_vectors[row] = text_vector
            return row
        if embedding is None:
            raise ValueError(f"item {item_id!r} is not in the bundle: a live item needs a retrieval vector")
        grow = self._growing()
        vector = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        (new_row,) = self.index.add(vector)
        if int(new_row) != self.n_items:
            raise RuntimeError(f"retrieval index has {self.index.ntotal} rows, the pipeline {self.n_items + 1}")
        grow["embeddings"].append(vector[0])
        grow["ids"].append(item_id)
        grow["titles"].append(title)
        grow["categories"].append(np.zeros(self.category_matrix.shape[1], dtype=bool))
        if "text" in grow:
            grow["text"].append(self._text_row(text_vector))
        if "content" in grow:
            if text_vector is None:
                raise ValueError(f"item {item_id!r}: a live item needs its text vector when content is attached")
            grow["content"].append(np.asarray(text_vector, dtype=np.float32))
        self.item_embeddings, self.item_ids = grow["embeddings"].view, grow["ids"].view
        self.item_titles, self.category_matrix = grow["titles"].view, grow["categories"].view
        if "text" in grow:
            self.text_embeddings = grow["text"].view
        if "content" in grow:
            self.content_vectors = grow["content"].view
        self.n_items += 1
        self._set_categories(self.n_items - 1, categories)
        if row is not None:
            self.dead_rows = np.union1d(self.dead_rows, [row]).astype(np.int64)
        self.item_index[item_id] = self.n_items - 1  # last: a request sees the item only once every array has it
        return self.n_items - 1

    def _growing(self) -> dict[str, GrowingRows]:
        if self._grow is None:
            self._grow = {
                "embeddings": GrowingRows(self.item_embeddings),
                "ids": GrowingRows(np.asarray(self.item_ids, dtype=object)),
                "titles": GrowingRows(np.asarray(self.item_titles, dtype=object)),
                "categories": GrowingRows(self.category_matrix),
            }
            if self.text_embeddings is not None:
                self._grow["text"] = GrowingRows(self.text_embeddings)
            if self.content_vectors is not None:
                self._grow["content"] = GrowingRows(self.content_vectors)
        return self._grow

    def _text_row(self, vector: np.ndarray | None) -> np.ndarray:
        """A text vector as a row of ``text_embeddings`` (unit length); zeros when it has another dimension (a bundle
        whose text vectors come from another model: the item then has no text neighbours)."""
        assert self.text_embeddings is not None
        dim = self.text_embeddings.shape[1]
        if vector is None or np.asarray(vector).shape != (dim,):
            return np.zeros(dim, dtype=np.float32)
        v = np.asarray(vector, dtype=np.float32)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def _set_categories(self, row: int, categories: Sequence[str]) -> None:
        new = list(dict.fromkeys(str(c) for c in categories if str(c) not in self.category_ids))
        if new:  # a category no item had: a column of its own, so filters can name it
            missing = len(self.category_ids) + len(new) - self.category_matrix.shape[1]
            if missing > 0:  # (a catalogue without categories has one unused column: the first new one takes it)
                if self._grow is not None:
                    self._grow["categories"].widen(missing)
                    self.category_matrix = self._grow["categories"].view
                else:
                    wider = np.zeros((self.n_items, self.category_matrix.shape[1] + missing), dtype=bool)
                    wider[:, : self.category_matrix.shape[1]] = self.category_matrix
                    self.category_matrix = wider
            for name in new:
                self.category_ids[name] = len(self.category_ids)
        self.category_matrix[row] = False
        for c in categories:
            self.category_matrix[row, self.category_ids[str(c)]] = True

    @property
    def ranker_kind(self) -> str | None:
        """``item_item`` (EASE's weights), ``onnx`` (a Wide & Deep graph) or None (retrieval only)."""
        if self.ranker is None:
            return None
        return "item_item" if isinstance(self.ranker, ItemItemRanker) else "onnx"

    @classmethod
    def from_bundle(cls, bundle: Bundle, config: PipelineConfig | None = None, *, ranker: Any = None) -> Pipeline:
        """Precompute everything from a loaded bundle; ``ranker`` overrides the bundle's re-ranker (tests)."""
        config = config if config is not None else PipelineConfig()
        items = bundle.items.sort_values("item_idx")
        ranker_info = bundle.manifest.ranker
        if config.rerank_weight is None:
            tuned = None if ranker_info is None or ranker_info.blend is None else ranker_info.blend.weight
            config = replace(config, rerank_weight=1.0 if tuned is None else tuned)
        if config.content_trust is None:
            trust = None if ranker_info is None or ranker_info.blend is None else ranker_info.blend.content_trust
            config = replace(config, content_trust=0.0 if trust is None else trust)
        if ranker is None and ranker_info is not None:
            if ranker_info.kind == "item_item":
                if bundle.item_item is None:
                    raise BundleError(f"{bundle.root}: the manifest names an item_item ranker the bundle did not load")
                ranker = ItemItemRanker(bundle.item_item)
            else:
                assert bundle.ranker_path is not None
                ranker = ranker_session(bundle.ranker_path)
        onnx = ranker_info is not None and ranker_info.kind == "onnx"
        if ranker is not None and onnx and hasattr(ranker, "get_inputs"):
            check_ranker(bundle, ranker)
        popularity_counts = (
            items["popularity"].to_numpy(np.float64)
            if "popularity" in items.columns
            else np.asarray(bundle.seen.sum(axis=0)).ravel()
        )
        pipeline = cls(
            user_index=bundle.user_index,
            item_index=bundle.item_index,
            item_ids=items["item_id"].astype(str).to_numpy(object),
            item_titles=items["title"].fillna("").astype(str).to_numpy(object)
            if "title" in items.columns
            else items["item_id"].astype(str).to_numpy(object),
            item_categories=[list(c) if c is not None else [] for c in items["categories"]]
            if "categories" in items.columns
            else [[] for _ in range(len(items))],
            user_embeddings=bundle.user_embeddings,
            item_embeddings=bundle.item_embeddings,
            seen=bundle.seen,
            index=bundle.index,
            popularity=PopularityFallback.build(popularity_counts, bundle.seen, bundle.users),
            ranker=ranker,
            item_text_embeddings=bundle.item_text_embeddings,
            config=config,
        )
        if "popularity" in items.columns:  # the training counts (the exporter's): 0 means an untrained item
            pipeline.untrained_rows = np.flatnonzero(popularity_counts == 0).astype(np.int64)
        return pipeline

    # -- the pipeline ---------------------------------------------------------------------------------------------

    def recommend(
        self,
        query: Query,
        recent: Sequence[Event] = (),
        observe: StageObserver = null_observer,
        exclude_items: np.ndarray | None = None,
        history: np.ndarray | None = None,
    ) -> Ranked:
        """Top-``query.k`` items for one user; ``recent`` is the user's newest-first activity from the online store.

        ``exclude_items``: item indices never to return besides the seen ones (offline evaluation on the test stage
        passes the user's validation items, as the full-ranking evaluator masks them).
        ``history``: the item indices an item-item ranker and the content stage read for this user, instead of the
        bundle's seen items plus the recent activity (offline evaluation passes the split's training items, which the
        model was fitted on: a deployed bundle's seen lists also hold the items being judged)."""
        t0 = time.perf_counter()
        k = query.k
        if not 1 <= k <= self.n_items:
            raise BadQuery("k", f"must be between 1 and the catalogue size {self.n_items}, got {k}")
        include = self._category_columns("include_categories", query.include_categories)
        exclude_cats = self._category_columns("exclude_categories", query.exclude_categories)
        rerank = self.config.rerank if query.rerank is None else query.rerank

        user_row = self.user_index.get(query.user_id)
        recent_items, recent_weights = self._recent_items(recent)
        excluded = self._excluded(user_row, recent_items) if query.exclude_seen else np.empty(0, np.int64)
        if exclude_items is not None and len(exclude_items):
            excluded = np.union1d(excluded, exclude_items).astype(np.int64)
        if len(self.dead_rows):
            excluded = np.union1d(excluded, self.dead_rows).astype(np.int64)
        # cold rows reach the candidates through the content stage only (their vectors are untrained)
        searched = np.union1d(excluded, self.cold_rows).astype(np.int64) if len(self.cold_rows) else excluded
        vector: np.ndarray | None
        if user_row is not None:
            vector, source = self.user_embeddings[user_row], "trained"
        elif len(recent_items):
            vector = np.average(self.item_embeddings[recent_items], axis=0, weights=recent_weights)
            vector, source = vector.astype(np.float32), "recent_activity"
        else:
            vector, source = None, "popularity"
        t1 = time.perf_counter()
        observe("user_vector", t1 - t0)

        content_z: np.ndarray | None = None  # per candidate: its content z when the content stage brought it
        if vector is not None:
            candidates, cand_scores = self._retrieve(vector, k, searched, include, exclude_cats, observe)
            stage: Stage = "retrieval"
            if self.content_vectors is not None and (self.n_items > self.n_ranked or len(self.cold_rows)):
                t = time.perf_counter()
                if history is not None:  # offline: what is known before the judged stage, never the bundle's lists
                    read = np.asarray(history, dtype=np.int64)
                else:
                    read = recent_items if len(recent_items) else self._seen(user_row)
                candidates, cand_scores, content_z = self._live_by_content(
                    read, candidates, cand_scores, excluded, include, exclude_cats
                )
                observe("content", time.perf_counter() - t)
        else:
            if query.popular is not None:
                (ranking, pop_scores), segmented = query.popular, True
            else:
                ranking, pop_scores, segmented = self.popularity.ranking(dict(query.segment))
            source = "segment_popularity" if segmented else "popularity"
            t2 = time.perf_counter()
            keep = self._keep(ranking, excluded, include, exclude_cats)
            n = max(self.config.n_candidates, k)
            candidates, cand_scores = ranking[keep][:n], pop_scores[keep][:n]
            observe("filter", time.perf_counter() - t2)
            stage = "popularity"

        target = query.target
        if target is not None:
            n_before = len(candidates)
            candidates, cand_scores = self._targeted(
                target, vector, candidates, cand_scores, excluded, include, exclude_cats
            )
            if content_z is not None:  # restrict replaced the candidates; boost appended some (no content z)
                added = np.zeros(len(candidates) - n_before, np.float32)
                content_z = None if target.mode == "restrict" else np.concatenate([content_z, added])
            if target.mode == "restrict" and vector is None:
                source = "segment_popularity"  # ordered by the segment's own popularity

        # The ONNX ranker re-ranks only the users it was trained on: for a cold user it would score with its single
        # out-of-vocabulary row and replace the fold-in or segment signal with one global order. The item-item ranker
        # re-ranks anyone with a history (seen items, recent activity): it has no per-user row to miss.
        if rerank and self.ranker is not None and len(candidates):
            t3 = time.perf_counter()
            ranked = None
            if isinstance(self.ranker, ItemItemRanker):
                read = self._item_history(user_row, recent_items) if history is None else np.asarray(history)
                if len(read):
                    ranked = self._rerank_item_item(read, candidates, content_z)
            elif user_row is not None:
                ranked = self._rerank(user_row, candidates, query.hour, query.dow, content_z)
            if ranked is not None:
                w = 1.0 if self.config.rerank_weight is None else self.config.rerank_weight
                cand_scores = ranked if w >= 1.0 else (1.0 - w) * _zscore(cand_scores) + w * _zscore(ranked)
                stage = "rerank"
                observe("rerank", time.perf_counter() - t3)

        if target is not None and target.mode == "boost" and len(candidates):
            cand_scores = _zscore(cand_scores) + target.weight * _bonus(target, candidates)

        top = _top_k(cand_scores, k)
        observe("total", time.perf_counter() - t0)
        return Ranked(items=candidates[top], scores=cand_scores[top], stage=stage, user_source=source)

    def similar(self, item_id: str, k: int) -> Neighbours:
        """Nearest items of one item by collaborative embedding (FAISS) and, when the bundle has them, by title text."""
        item = self.item_index.get(item_id)
        if item is None:
            raise UnknownItem(item_id)
        k = min(k, self.n_items - 1 - len(self.dead_rows))
        skip = np.union1d([item], self.dead_rows).astype(np.int64)
        scores, ids = self.index.search(self.item_embeddings[item][None, :], k, exclude=[skip])
        valid = ids[0] >= 0
        text_items = text_scores = None
        if self.text_embeddings is not None:
            sims = self.text_embeddings @ self.text_embeddings[item]
            sims[skip] = -np.inf
            top = _top_k(sims, k)
            text_items, text_scores = top.astype(np.int64), sims[top].astype(np.float32)
        return Neighbours(ids[0][valid].astype(np.int64), scores[0][valid].astype(np.float32), text_items, text_scores)

    # -- stages ---------------------------------------------------------------------------------------------------

    def _recent_items(self, recent: Sequence[Event]) -> tuple[np.ndarray, np.ndarray]:
        items, weights = [], []
        for event in recent[: self.config.max_recent]:
            idx = self.item_index.get(event.item_id)
            if idx is not None:
                items.append(idx)
                weights.append(self.config.event_weights.get(event.event_type, 1.0))
        weights_arr = np.asarray(weights, dtype=np.float64)
        if len(weights_arr) and weights_arr.sum() <= 0:
            weights_arr = np.ones_like(weights_arr)
        return np.asarray(items, dtype=np.int64), weights_arr

    def _seen(self, user_row: int | None) -> np.ndarray:
        if user_row is None:
            return np.empty(0, np.int64)
        return self.seen.indices[self.seen.indptr[user_row] : self.seen.indptr[user_row + 1]].astype(np.int64)

    def _live_by_content(
        self,
        history: np.ndarray,
        candidates: np.ndarray,
        scores: np.ndarray,
        excluded: np.ndarray,
        include: np.ndarray | None,
        exclude_cats: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The content stage: live and cold items close in text to the user's recent items (else trained history) join
        the candidates, scored on the retrieval scale by how far their text similarity to that history stands above
        the candidates' own (see the module docstring). A live item already retrieved keeps the higher of its
        scores. Also returns each candidate's content z (0 for those it did not bring), for the ranker's side."""
        assert self.content_vectors is not None
        if not len(history) or not len(candidates):
            return candidates, scores, None
        # The newest (recent activity is newest first) or, for history, the first few: bounded work per request.
        history = history[: self.config.max_recent]
        known = self.content_vectors[history].T  # (dim, h)
        live = np.arange(self.n_ranked, self.n_items, dtype=np.int64)
        if len(self.cold_rows):
            live = np.concatenate([self.cold_rows, live])
        live = live[self._keep(live, excluded, include, exclude_cats)]
        if not len(live):
            return candidates, scores, None
        # An item's text similarity to the history: its best match there (a sequel, a remake, a near-copy of what the
        # user just read counts fully; an average over the history would blur it into the catalogue's common ground).
        live_sims = (self.content_vectors[live] @ known).max(axis=1)
        take = np.argsort(-live_sims, kind="stable")[: max(1, self.config.n_candidates // 4)]
        live, live_sims = live[take], live_sims[take]
        cand_sims = (self.content_vectors[candidates] @ known).max(axis=1)
        z = (live_sims - cand_sims.mean()) / max(float(cand_sims.std()), 1e-6)
        on_scale = (float(scores.mean()) + float(scores.std()) * z).astype(np.float32)
        scores = scores.copy()
        z_of = np.zeros(len(candidates), np.float32)
        position = {int(item): i for i, item in enumerate(candidates.tolist())}
        extra_items, extra_scores, extra_z = [], [], []
        for item, score, item_z in zip(live.tolist(), on_scale.tolist(), z.tolist(), strict=True):
            at = position.get(item)
            if at is None:
                extra_items.append(item)
                extra_scores.append(score)
                extra_z.append(item_z)
            else:
                scores[at] = max(scores[at], score)
                z_of[at] = item_z
        if not extra_items:
            return candidates, scores, z_of
        return (
            np.concatenate([candidates, np.asarray(extra_items, np.int64)]),
            np.concatenate([scores, np.asarray(extra_scores, np.float32)]),
            np.concatenate([z_of, np.asarray(extra_z, np.float32)]),
        )

    def _excluded(self, user_row: int | None, recent_items: np.ndarray) -> np.ndarray:
        if user_row is None:
            return np.unique(recent_items)
        seen = self.seen.indices[self.seen.indptr[user_row] : self.seen.indptr[user_row + 1]]
        if not len(recent_items):
            return seen.astype(np.int64)
        return np.union1d(seen, recent_items).astype(np.int64)

    def _category_columns(self, field_name: str, names: Sequence[str]) -> np.ndarray | None:
        if not names:
            return None
        unknown = [n for n in names if n not in self.category_ids]
        if unknown:
            known = ", ".join(list(self.category_ids)[:30])
            raise BadQuery(field_name, f"unknown categories {unknown}; known categories: {known}")
        return np.fromiter((self.category_ids[n] for n in names), dtype=np.int64)

    def _keep(
        self, items: np.ndarray, excluded: np.ndarray, include: np.ndarray | None, exclude: np.ndarray | None
    ) -> np.ndarray:
        """Boolean mask over ``items``: not excluded, in an included category, in no excluded category."""
        keep = ~np.isin(items, excluded) if len(excluded) else np.ones(len(items), dtype=bool)
        if include is not None or exclude is not None:
            cats = self.category_matrix[items]
            if include is not None:
                keep &= cats[:, include].any(axis=1)
            if exclude is not None:
                keep &= ~cats[:, exclude].any(axis=1)
        return keep

    def _retrieve(
        self,
        vector: np.ndarray,
        k: int,
        excluded: np.ndarray,
        include: np.ndarray | None,
        exclude_cats: np.ndarray | None,
        observe: StageObserver,
    ) -> tuple[np.ndarray, np.ndarray]:
        n = min(max(self.config.n_candidates, k), self.n_items)
        query = vector.reshape(1, -1).astype(np.float32, copy=False)
        for attempt in range(4):
            t = time.perf_counter()
            scores, ids = self.index.search(query, n, exclude=[excluded])
            observe("retrieval", time.perf_counter() - t)
            t = time.perf_counter()
            ids, scores = ids[0], scores[0]
            valid = ids >= 0
            ids, scores = ids[valid].astype(np.int64), scores[valid].astype(np.float32)
            if include is not None or exclude_cats is not None:
                keep = self._keep(ids, np.empty(0, np.int64), include, exclude_cats)
                ids, scores = ids[keep], scores[keep]
            observe("filter", time.perf_counter() - t)
            if len(ids) >= k or n >= self.n_items or attempt == 3:
                break
            n = min(n * self.config.widen_factor, self.n_items)
        keep = max(self.config.n_candidates, k)  # never fewer candidates than the answer needs
        return ids[:keep], scores[:keep]

    def _targeted(
        self,
        target: Target,
        vector: np.ndarray | None,
        candidates: np.ndarray,
        scores: np.ndarray,
        excluded: np.ndarray,
        include: np.ndarray | None,
        exclude_cats: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``restrict``: the segment's items (the same exclusions and filters) replace the candidates, scored by the
        user vector, else by their segment weight. ``boost``: they join the candidates (the bonus is added after the
        last stage). Scores by the vector are inner products, the retrieval score of an ``ip`` index."""
        keep = self._keep(target.items, excluded, include, exclude_cats)
        items, weights = target.items[keep], target.weights[keep]
        if target.mode == "restrict":
            own = self.item_embeddings[items] @ vector if vector is not None else weights
            return items, np.asarray(own, np.float32)
        extra = ~np.isin(items, candidates)
        if not extra.any():
            return candidates, scores
        added = items[extra]
        # Without a vector, added items rank below every popular candidate before the bonus (popularity scores >= 0).
        own = self.item_embeddings[added] @ vector if vector is not None else np.zeros(len(added), np.float32)
        return np.concatenate([candidates, added]), np.concatenate([scores, np.asarray(own, scores.dtype)])

    def _rerank(
        self, user: int, items: np.ndarray, hour: int, dow: int, content_z: np.ndarray | None = None
    ) -> np.ndarray:
        known = self._trained(items)
        if known.all():
            b = len(items)
            return score_ranker(self.ranker, np.full(b, user), items, np.full(b, hour), np.full(b, dow))
        # Live and cold items: the ranker knows nothing of them (:meth:`_unknown_scores`).
        scores = np.zeros(len(items), dtype=np.float32)
        if known.any():
            b = int(known.sum())
            scores[known] = score_ranker(self.ranker, np.full(b, user), items[known], np.full(b, hour), np.full(b, dow))
            scores[~known] = self._unknown_scores(scores[known], known, content_z)
        return scores

    def _unknown_scores(self, known_scores: np.ndarray, known: np.ndarray, content_z: np.ndarray | None) -> np.ndarray:
        """Ranker scores of the candidates it cannot score (``~known``): the mean of the others', moved by
        ``content_trust`` times their content z in the others' standard deviations (module docstring)."""
        mean = float(known_scores.mean())
        trust = self.config.content_trust or 0.0
        if content_z is None or trust == 0.0:
            return np.full(int((~known).sum()), mean, np.float32)
        return (mean + trust * float(known_scores.std()) * content_z[~known]).astype(np.float32)

    def _item_history(self, user_row: int | None, recent_items: np.ndarray) -> np.ndarray:
        """What the item-item ranker reads: the user's seen items in the bundle and their recent activity (binary,
        as EASE was fitted on)."""
        seen = self._seen(user_row)
        if not len(recent_items):
            return seen
        return np.union1d(seen, recent_items).astype(np.int64)

    def _rerank_item_item(
        self, history: np.ndarray, items: np.ndarray, content_z: np.ndarray | None = None
    ) -> np.ndarray:
        ranker = self.ranker
        assert isinstance(ranker, ItemItemRanker)
        history = history[self._trained(history)]  # live and cold items have no weights
        known = self._trained(items)
        if known.all():
            return ranker.score(history, items)
        # As for the ONNX ranker: live and cold candidates (:meth:`_unknown_scores`).
        scores = np.zeros(len(items), dtype=np.float32)
        if known.any():
            scores[known] = ranker.score(history, items[known])
            scores[~known] = self._unknown_scores(scores[known], known, content_z)
        return scores


def check_ranker(bundle: Bundle, session: Any) -> None:
    """The ONNX session has the inputs and output the bundle's manifest records, and the contract's ranges fit the
    bundle's catalogue; else a :class:`BundleError` saying what differs (the ranker would score garbage or fail on
    the first request)."""
    info = bundle.manifest.ranker
    assert info is not None
    source = str(bundle.root / info.file)
    contract = info.contract
    try:
        contract.check(session, source=source)
        expected = ranker_contract(bundle.manifest.n_users, bundle.manifest.n_items)
        if contract != expected:
            raise ValueError(
                f"{source}: the manifest's ranker contract {contract.to_dict()} does not fit the bundle's "
                f"{bundle.manifest.n_users} users x {bundle.manifest.n_items} items (expected {expected.to_dict()})"
            )
    except ValueError as error:
        raise BundleError(f"{error}; the ranker does not match its bundle: export the bundle again") from error


def ranker_session(path: Any) -> Any:
    """The ranker's ONNX Runtime session with one intra-op thread: a request scores <= N rows, where thread hand-offs
    cost more than they save, and worker processes (not threads) use the other cores."""
    from recstack.bundle.session import make_session

    return make_session(path, intra_op_threads=1, inter_op_threads=1)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best scores, best first; ties keep the earlier position (reproducible across processes)."""
    k = min(k, len(scores))
    if len(scores) > 4 * k:
        part = np.argpartition(-scores, k - 1)[:k]
        return part[np.lexsort((part, -scores[part]))]
    return np.argsort(-scores, kind="stable")[:k]


def _bonus(target: Target, candidates: np.ndarray) -> np.ndarray:
    """Each candidate's segment weight (0 for items outside the segment's popular items)."""
    order = np.argsort(target.items, kind="stable")
    sorted_items = target.items[order]
    pos = np.clip(np.searchsorted(sorted_items, candidates), 0, max(len(sorted_items) - 1, 0))
    hit = sorted_items[pos] == candidates if len(sorted_items) else np.zeros(len(candidates), bool)
    return np.where(hit, target.weights[order][pos] if len(sorted_items) else 0.0, 0.0).astype(np.float32)


def _zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return (x - x.mean()) / max(float(x.std()), 1e-6)
