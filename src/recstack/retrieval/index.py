"""Candidate retrieval: a FAISS index built from config, saved and loaded beside the embeddings, searched with
per-query exclusion lists. Torch-free on purpose: serving imports this module, and the index never lives inside an
``nn.Module`` (the torchrec artifact boundary).

Metric: ``ip`` (inner product) matches the models' dot-product scores exactly. ``cosine`` L2-normalises the item
vectors at build time and every query at search time, then uses inner product; scores are then cosines.

Kinds and their FAISS factory strings:

* ``flat`` -> ``Flat``: exact search, the reference the others are measured against.
* ``exact_below`` (``configs/index/*.yaml``: 20,000): an approximate kind over fewer vectors is built as ``flat``.
  One query with 100 excluded ids, 64 dimensions, k=200 on this 2-core machine (2026-12-07): 2,000 vectors flat
  p50 0.04 ms vs HNSW32 0.07 ms; 20,000 vectors 0.16 vs 0.14 ms; 50,000 0.35 vs 0.17 ms. Below that size the graph
  buys no speed and costs recall: on ML-100K (1,682 items) HNSW with ef_search=128 lost 0.004 NDCG@10 of the served
  pipeline against exact search (benchmarks/RESULTS.md, the served pipeline).
* ``hnsw`` -> ``HNSW{hnsw_m},Flat``: graph search; ``ef_search`` trades recall for speed at query time.
* ``ivf_flat`` -> ``IVF{nlist},Flat``; ``ivf_pq`` -> ``IVF{nlist},PQ{pq_m}x{pq_bits}``: inverted lists; ``nprobe``
  lists are scanned per query. ``nlist`` is capped at ``n_vectors // 39`` (FAISS's minimum points per centroid) so
  that a small catalogue still builds; the effective value is what :attr:`RetrievalIndex.config` reports.

Determinism: k-means (IVF coarse quantiser and PQ codebooks) is seeded from ``config.seed``; HNSW insertion runs on
one OpenMP thread because multi-threaded insertion order may depend on thread timing. The same vectors and config
therefore give the same index and the same search results (tested).

Exclusions (e.g. a user's training items): by default each query runs with
``SearchParameters(sel=IDSelectorNot(IDSelectorBatch(excluded)))`` (one FAISS call per query), so excluded ids are
skipped inside the search. ``exclusion="overfetch"`` instead asks one batched call for ``k + len(exclude)`` neighbours
and drops excluded ids afterwards. ``benchmarks/retrieval.py`` measures both for 100 excluded ids (figures in
``benchmarks/RESULTS.md``): for single HNSW queries the selector was about 1.5x as fast at 1M items, because over-fetching
raises HNSW's effective ``efSearch`` to ``k + 100``; for exact search they cost the same. Serving searches one user
at a time, so the selector is the default.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

Kind = Literal["flat", "hnsw", "ivf_flat", "ivf_pq"]
Metric = Literal["ip", "cosine"]
Exclusion = Literal["overfetch", "selector"]
KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf_flat", "ivf_pq")
MIN_POINTS_PER_CENTROID = 39  # below this FAISS warns that k-means is under-trained


class IndexConfigError(ValueError):
    """An index configuration that cannot work (bad kind, metric, or a PQ that does not fit the data)."""


@dataclass(frozen=True)
class IndexConfig:
    """What index to build (see the module docstring); ``configs/index/*.yaml`` hold one each."""

    kind: Kind = "flat"
    metric: Metric = "ip"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    nlist: int = 1024
    nprobe: int = 32
    pq_m: int = 16
    pq_bits: int = 8
    seed: int = 0
    # An approximate kind over fewer vectors than this is built as ``flat``: exact, and no slower at that size.
    exact_below: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise IndexConfigError(f"index kind {self.kind!r} is unknown; use one of {KINDS}")
        if self.metric not in ("ip", "cosine"):
            raise IndexConfigError(f"index metric {self.metric!r} is unknown; use 'ip' or 'cosine'")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe", "pq_m", "pq_bits"):
            if int(getattr(self, name)) < 1:
                raise IndexConfigError(f"index {name}={getattr(self, name)} must be a positive integer")
        if int(self.exact_below) < 0:
            raise IndexConfigError(f"index exact_below={self.exact_below} must be >= 0 (0: never)")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> IndexConfig:
        """From a Hydra/JSON mapping; ``_target_`` and keys that are not fields (e.g. ``factory``) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(values).items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def factory_string(self) -> str:
        """The ``faiss.index_factory`` description of this config."""
        if self.kind == "flat":
            return "Flat"
        if self.kind == "hnsw":
            return f"HNSW{self.hnsw_m},Flat"
        if self.kind == "ivf_flat":
            return f"IVF{self.nlist},Flat"
        return f"IVF{self.nlist},PQ{self.pq_m}x{self.pq_bits}"

    def fitted_to(self, n_vectors: int, dim: int) -> IndexConfig:
        """This config adjusted to the data: ``flat`` below ``exact_below`` vectors; ``nlist`` capped so every
        centroid gets enough training points."""
        if self.kind != "flat" and n_vectors < self.exact_below:
            return replace(self, kind="flat")
        if self.kind not in ("ivf_flat", "ivf_pq"):
            return self
        nlist = max(1, min(self.nlist, n_vectors // MIN_POINTS_PER_CENTROID))
        if self.kind == "ivf_pq":
            if dim % self.pq_m:
                raise IndexConfigError(f"ivf_pq: pq_m={self.pq_m} must divide the vector dimension {dim}")
            if n_vectors < 2**self.pq_bits:
                raise IndexConfigError(
                    f"ivf_pq: {n_vectors} vectors cannot train {2**self.pq_bits} PQ centroids (pq_bits="
                    f"{self.pq_bits}); lower pq_bits or use index=ivf_flat / flat for a catalogue this small"
                )
        return replace(self, nlist=nlist, nprobe=min(self.nprobe, nlist))


@contextmanager
def omp_threads(n: int) -> Iterator[None]:
    """FAISS's OpenMP thread count set to ``n`` for the block, restored afterwards (benchmarks use it too)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _as_matrix(vectors: np.ndarray, dim: int | None, what: str) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (n, d) array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{what} have dimension {x.shape[1]}, the index has {dim}")
    return x


def _normalised(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class RetrievalIndex:
    """A FAISS index plus the config it was built from; search is thread-safe (parameters go per call)."""

    def __init__(self, index: faiss.Index, config: IndexConfig) -> None:
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexConfigError(f"expected an inner-product FAISS index, got metric_type={index.metric_type}")
        self.index = index
        self.config = config
        self._check_kind()

    def _check_kind(self) -> None:
        expected = {
            "flat": faiss.IndexFlat,
            "hnsw": faiss.IndexHNSW,
            "ivf_flat": faiss.IndexIVFFlat,
            "ivf_pq": faiss.IndexIVFPQ,
        }[self.config.kind]
        if not isinstance(self.index, expected):
            raise IndexConfigError(
                f"index is a {type(self.index).__name__}, config says kind={self.config.kind!r}; "
                "rebuild the index or pass the config it was built with"
            )

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def set_params(self, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Change search-time parameters (not thread-safe against concurrent searches; do it at load time)."""
        updates: dict[str, int] = {}
        if ef_search is not None:
            updates["ef_search"] = int(ef_search)
        if nprobe is not None:
            updates["nprobe"] = int(nprobe)
        if updates:
            self.config = replace(self.config, **updates)

    def _params(self, selector: faiss.IDSelector | None = None, k: int = 0) -> faiss.SearchParameters | None:
        kind = self.config.kind
        if kind == "hnsw":
            # HNSW returns at most efSearch candidates, so it must be at least k.
            p = faiss.SearchParametersHNSW(efSearch=max(self.config.ef_search, k))
        elif kind in ("ivf_flat", "ivf_pq"):
            p = faiss.SearchParametersIVF(nprobe=self.config.nprobe)
        elif selector is None:
            return None
        else:
            p = faiss.SearchParameters()
        if selector is not None:
            p.sel = selector
        return p

    def _raw_search(self, x: np.ndarray, k: int, params: faiss.SearchParameters | None):
        if params is None:
            return self.index.search(x, k)
        return self.index.search(x, k, params=params)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None = None,
        *,
        exclusion: Exclusion = "selector",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` of shape ``(B, k)`` per query; ``exclude[b]`` lists ids query ``b`` must not
        get. Rows with fewer than ``k`` results (tiny catalogue, IVF lists too few) are padded with id -1 and score
        -inf."""
        if k < 1:
            raise ValueError(f"k={k} must be at least 1")
        x = _as_matrix(queries, self.dim, "queries")
        if self.config.metric == "cosine":
            x = _normalised(x)
        if exclude is not None and len(exclude) != len(x):
            raise ValueError(f"exclude has {len(exclude)} lists for {len(x)} queries; give one (maybe empty) per query")
        if exclude is None or all(len(e) == 0 for e in exclude):
            scores, ids = self._raw_search(x, k, self._params(k=k))
            return _pad(scores, ids)
        excl = [np.asarray(e, dtype=np.int64).ravel() for e in exclude]
        if exclusion == "selector":
            return self._search_selector(x, k, excl)
        if exclusion == "overfetch":
            return self._search_overfetch(x, k, excl)
        raise ValueError(f"exclusion={exclusion!r} is unknown; use 'overfetch' or 'selector'")

    def _search_selector(self, x: np.ndarray, k: int, excl: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        scores = np.empty((len(x), k), dtype=np.float32)
        ids = np.empty((len(x), k), dtype=np.int64)
        for b in range(len(x)):
            # The selector must outlive the search call; SWIG does not keep the inner batch alive for us.
            batch = faiss.IDSelectorBatch(excl[b])
            sel = faiss.IDSelectorNot(batch)
            scores[b], ids[b] = self._raw_search(x[b : b + 1], k, self._params(sel, k=k))
        return _pad(scores, ids)

    def _search_overfetch(self, x: np.ndarray, k: int, excl: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        fetch = min(self.ntotal, k + max(len(e) for e in excl))
        raw_scores, raw_ids = self._raw_search(x, fetch, self._params(k=fetch))
        scores = np.full((len(x), k), -np.inf, dtype=np.float32)
        ids = np.full((len(x), k), -1, dtype=np.int64)
        for b in range(len(x)):
            keep = (raw_ids[b] >= 0) & ~np.isin(raw_ids[b], excl[b])
            kept_ids = raw_ids[b][keep][:k]
            ids[b, : len(kept_ids)] = kept_ids
            scores[b, : len(kept_ids)] = raw_scores[b][keep][:k]
        return scores, ids

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Append ``vectors`` (n, d) to the index without rebuilding it; returns their ids (the next row numbers).

        ``flat`` and ``hnsw`` take new vectors as they are (HNSW links them into its graph); ``ivf_*`` assigns them to
        the lists trained on the original vectors, which serves a few additions well and many poorly (rebuild then).
        Cosine indexes normalise them first, as at build time. Not thread-safe against concurrent searches: serving
        adds on its event loop, between requests."""
        x = _as_matrix(vectors, self.dim, "added vectors")
        if self.config.metric == "cosine":
            x = _normalised(x)
        start = self.ntotal
        with omp_threads(1):  # HNSW insertion order stays deterministic, as in build_index
            self.index.add(x)
        return np.arange(start, self.ntotal, dtype=np.int64)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        faiss.write_index(self.index, os.fspath(path))
        return path

    @classmethod
    def load(
        cls, path: str | Path, config: IndexConfig, *, ef_search: int | None = None, nprobe: int | None = None
    ) -> RetrievalIndex:
        """Read an index written by :meth:`save`; ``ef_search`` / ``nprobe`` override the config's search values."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"FAISS index {path} does not exist; export the bundle again")
        out = cls(faiss.read_index(os.fspath(path)), config)
        out.set_params(ef_search=ef_search, nprobe=nprobe)
        return out

    def __repr__(self) -> str:
        return f"RetrievalIndex({self.config.factory_string()!r}, metric={self.config.metric}, n={self.ntotal:,})"


def _pad(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    return scores, ids.astype(np.int64)


def build_index(vectors: np.ndarray, config: IndexConfig, *, build_threads: int | None = 1) -> RetrievalIndex:
    """Build (train + add) the index ``config`` describes over ``vectors`` (n, d); ids are row numbers.

    ``build_threads=1`` (the default) makes HNSW insertion deterministic; ``None`` keeps FAISS's thread count
    (faster on many cores; HNSW insertion order then depends on thread timing, so graphs may differ between builds;
    a 20k-vector check on 2 threads happened to give identical results, single-threaded is what guarantees it).
    """
    x = _as_matrix(vectors, None, "index vectors")
    n, d = x.shape
    if n == 0:
        raise ValueError("cannot build an index over 0 vectors")
    config = config.fitted_to(n, d)
    if config.metric == "cosine":
        x = _normalised(x)
    index = faiss.index_factory(d, config.factory_string(), faiss.METRIC_INNER_PRODUCT)
    if config.kind == "hnsw":
        index.hnsw.efConstruction = config.ef_construction
        index.hnsw.efSearch = config.ef_search
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.seed = config.seed
        ivf.nprobe = config.nprobe
        if config.kind == "ivf_pq":
            ivfpq = faiss.downcast_index(ivf)
            ivfpq.pq.cp.seed = config.seed
            # Polysemous training reorders codes for Hamming pre-filtering, which we never use; it is most of the
            # training time (seconds even for a few thousand vectors).
            ivfpq.do_polysemous_training = False
    threads = build_threads if build_threads is not None else faiss.omp_get_max_threads()
    with omp_threads(threads):
        if not index.is_trained:
            index.train(x)
        index.add(x)
    return RetrievalIndex(index, config)
