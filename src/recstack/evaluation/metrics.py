"""Top-K ranking metrics as pure, vectorised numpy functions, defined exactly as RecBole 1.2 defines them.

Every ranking metric shares one signature, ``metric(hits, n_relevant, k) -> (U,)`` per-user values, so
:data:`RANKING_METRICS` calls them uniformly and the evaluator averages over users:

* ``hits``: boolean ``(U, K_max)``; ``hits[u, j]`` is True when the item ranked ``j+1`` for user ``u`` is relevant
  (a padded slot, "no item", is simply False). Only the first ``k`` columns are read.
* ``n_relevant``: ``(U,)`` number of relevant items of each user, ``|R(u)|``, counted over the whole stage (not capped
  by ``k``). It must be >= 1 for every row: users with nothing relevant are skipped by the evaluator, never divided by.

Catalogue metrics read the top-K item matrix itself (``-1`` = an empty slot, ignored): :func:`coverage`,
:func:`average_popularity` and :func:`novelty`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RankingMetric = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def _checked(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` columns of ``hits`` (bool) and ``n_relevant`` as float64, after checking shapes."""
    hits = np.asarray(hits)
    n_relevant = np.asarray(n_relevant)
    if hits.ndim != 2:
        raise ValueError(f"hits must be a 2-D (users, K) boolean matrix, got shape {hits.shape}")
    if n_relevant.shape != (hits.shape[0],):
        raise ValueError(f"n_relevant must have shape ({hits.shape[0]},) to match hits, got {n_relevant.shape}")
    if not 1 <= k <= hits.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the length of the ranked lists ({hits.shape[1]})")
    if n_relevant.size and n_relevant.min() < 1:
        raise ValueError("every user needs at least one relevant item; drop users with none before computing metrics")
    return hits[:, :k].astype(bool, copy=False), n_relevant.astype(np.float64)


def _discounts(k: int) -> np.ndarray:
    """``1 / log2(i + 1)`` for ranks ``i = 1..k``."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def precision(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Precision@K = |top-K ∩ R(u)| / K (RecBole divides by K even when fewer than K items were ranked)."""
    h, _ = _checked(hits, n_relevant, k)
    return h.sum(axis=1) / k


def recall(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Recall@K = |top-K ∩ R(u)| / |R(u)| (not capped by K, as in RecBole)."""
    h, n = _checked(hits, n_relevant, k)
    return h.sum(axis=1) / n


def ndcg(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Binary-relevance NDCG@K = DCG / IDCG with DCG = sum over hit ranks i <= K of 1 / log2(i + 1) and IDCG the same
    sum over ranks 1..min(|R(u)|, K), i.e. a perfect list of min(|R(u)|, K) relevant items."""
    h, n = _checked(hits, n_relevant, k)
    disc = _discounts(k)
    dcg = h @ disc
    ideal = np.cumsum(disc)[np.minimum(n, k).astype(np.int64) - 1]
    return dcg / ideal


def map_(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """MAP@K's per-user average precision: AP@K = sum over hit ranks i <= K of Precision@i, divided by
    min(|R(u)|, K) (RecBole's normalisation, so a user with more relevant items than K can still reach 1)."""
    h, n = _checked(hits, n_relevant, k)
    precision_at_i = np.cumsum(h, axis=1) / np.arange(1, k + 1)
    return (precision_at_i * h).sum(axis=1) / np.minimum(n, k)


def hit(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """HitRate@K = 1 if at least one relevant item is in the top K, else 0."""
    h, _ = _checked(hits, n_relevant, k)
    return h.any(axis=1).astype(np.float64)


def mrr(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """MRR@K = 1 / rank of the first relevant item within the top K, 0 when there is none."""
    h, _ = _checked(hits, n_relevant, k)
    first = h.argmax(axis=1)
    return np.where(h.any(axis=1), 1.0 / (first + 1), 0.0)


RANKING_METRICS: dict[str, RankingMetric] = {
    "precision": precision,
    "recall": recall,
    "ndcg": ndcg,
    "map": map_,
    "hit": hit,
    "mrr": mrr,
}


def _valid_topk(topk: np.ndarray, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    topk = np.asarray(topk)
    if topk.ndim != 2:
        raise ValueError(f"topk must be a 2-D (users, K) matrix of item indices, got shape {topk.shape}")
    if k is not None:
        if not 1 <= k <= topk.shape[1]:
            raise ValueError(f"k={k} must be between 1 and the length of the ranked lists ({topk.shape[1]})")
        topk = topk[:, :k]
    return topk, topk >= 0


def coverage(topk: np.ndarray, n_items: int, k: int | None = None) -> float:
    """Catalogue coverage@K = |union over users of their top-K items| / n_items (RecBole's ItemCoverage).

    ``topk`` is ``(U, K)`` item indices, ``-1`` for an empty slot; ``k`` reads only its first ``k`` columns."""
    topk, valid = _valid_topk(topk, k)
    if n_items < 1:
        raise ValueError(f"n_items={n_items}: the catalogue is empty")
    return float(np.unique(topk[valid]).size / n_items)


def average_popularity(topk: np.ndarray, popularity: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per-user average popularity of the recommended items, mean over the user's (non-empty) top-K slots of
    ``popularity[item]`` (training interactions per item, RecBole's AveragePopularity); 0 for an empty list."""
    topk, valid = _valid_topk(topk, k)
    pop = np.asarray(popularity, dtype=np.float64)
    values = np.where(valid, pop[np.where(valid, topk, 0)], 0.0)
    return values.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def novelty(topk: np.ndarray, popularity: np.ndarray, n_users: int, k: int | None = None) -> np.ndarray:
    """Per-user novelty: mean over the user's top-K items of the item's self-information
    ``-log2(popularity[item] / n_users)``, where ``popularity`` counts the distinct training users of each item, so
    ``popularity / n_users`` is the chance a random user knows the item (Zhou et al. 2010; the "discovery" model of
    Castells et al. 2011). Items nobody trained on count as known to one user (finite, maximal novelty). 0 for an empty
    list. Higher means less popular recommendations."""
    topk, valid = _valid_topk(topk, k)
    if n_users < 1:
        raise ValueError(f"n_users={n_users} must be >= 1")
    known = np.clip(np.asarray(popularity, dtype=np.float64), 1.0, float(n_users))
    info = -np.log2(known / n_users)
    values = np.where(valid, info[np.where(valid, topk, 0)], 0.0)
    return values.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


# The public name the brief's uniform signature uses; ``map_`` stays for code that must not shadow the builtin.
map = map_
