"""The one full-ranking evaluator every recommender is judged by, the way RecBole's full-sort evaluation judges its own.

For each user with at least one relevant item in the stage: score every item (``model.score_all``), mask the items the
user has already seen (train, plus valid when evaluating on test) with ``-inf``, keep the top ``max(ks)``, and compute
the metrics of :mod:`recstack.evaluation.metrics` at each ``k``. Users are scored in chunks sized from a memory bound,
so peak memory does not grow with the number of users; top-K runs on the scores' device (CPU or GPU), and hits are
looked up in the stage's sparse relevant set (never a dense users x items boolean matrix).

Pipelines that produce ranked lists instead of scores (re-rankers, the serving pipeline) call :func:`evaluate_topk`
with their lists; :func:`evaluate` itself goes through it, so both report identical numbers for identical lists.

Both take ``relevant_items``: metrics restricted to a subset of the catalogue, e.g. the cold items of
``split=new_items`` (:func:`untrained_items`). Only those items count as relevant ground truth, and only users with at
least one of them in the stage are evaluated; ranking, masking and the popularity/coverage metrics stay over the
full catalogue, so a model is still free to rank any item first and pays for it when that item is not relevant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from recstack.data.prepared import PreparedSplit
from recstack.evaluation.metrics import RANKING_METRICS, average_popularity, coverage, novelty
from recstack.models.base import FoldsIn, Recommender

EvalStage = Literal["valid", "test"]
# Per-user metrics the evaluator averages (ranking metrics, then the two per-user popularity metrics); coverage is a
# catalogue-level number. Every result reports each of these as ``<name>@<k>``.
METRIC_NAMES: tuple[str, ...] = (*RANKING_METRICS, "avg_pop", "novelty")
ALL_METRIC_NAMES: tuple[str, ...] = (*METRIC_NAMES, "coverage")
# Bytes held per scored (user, item) pair: the float32 score, plus room for top-K's workspace and the model's own
# intermediate of the same size (e.g. the matmul output before it is returned).
_BYTES_PER_SCORE = 4 * 3


@dataclass(frozen=True)
class PerUserResults:
    """What the report's breakdowns need, one row per evaluated user (same order in every array).

    ``topk`` holds item indices ranked best first (``-1`` = empty slot); ``hits[u, j]`` says whether ``topk[u, j]``
    is relevant; ``metrics`` maps ``<name>@<k>`` to the per-user values whose mean is the reported figure."""

    users: np.ndarray
    topk: np.ndarray
    hits: np.ndarray
    n_relevant: np.ndarray
    metrics: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationResult:
    """Mean metrics over the evaluated users, e.g. ``metrics["ndcg@10"]``; users with no relevant item in the stage are
    not evaluated and are counted in ``n_users_skipped``."""

    metrics: dict[str, float]
    stage: str
    ks: tuple[int, ...]
    n_users_evaluated: int
    n_users_skipped: int
    per_user: PerUserResults | None = None

    def __getitem__(self, name: str) -> float:
        return self.metrics[name]


def evaluate(
    model: Recommender,
    split: PreparedSplit,
    stage: EvalStage = "test",
    ks: Sequence[int] = (10, 20),
    *,
    max_memory_bytes: int = 1 << 30,
    device: str | torch.device | None = None,
    keep_per_user: bool = False,
    progress: bool = False,
    relevant_items: np.ndarray | Sequence[int] | None = None,
    fold_in: bool = False,
    users: np.ndarray | Sequence[int] | None = None,
) -> EvaluationResult:
    """Full-ranking evaluation of ``model`` on ``split``'s ``stage`` at each cut-off in ``ks``.

    ``max_memory_bytes`` bounds the score chunk (users per chunk = bound / (n_items * 12 bytes)); ``device`` is where
    masking and top-K run (default: the model's device). ``keep_per_user`` keeps the per-user lists, hits and values
    (for reports). ``relevant_items``: item indices that alone count as relevant (see the module docstring); None:
    every item. Seen items are masked by writing ``-inf`` into the returned scores in place (saving a copy per
    chunk); views (e.g. a broadcast popularity row) are copied first, so ``score_all`` must only avoid returning a
    whole tensor it keeps. ``fold_in``: on the test stage, a model that reads interactions at inference
    (:class:`~recstack.models.base.FoldsIn`: LightGCN, EASE, ItemKNN, UserKNN) reads each user's train + valid
    interactions, everything known before the test split, as a deployed model would; it is restored to the training
    matrix afterwards. Nothing changes on the validation stage or for other models. Off by default: RecBole and the
    published figures read the training matrix only. ``users``: evaluate only these user indices (e.g. a seeded
    sample of a million-user split); those of them without a relevant item count as skipped. None: every user.
    Raises ``ValueError`` when the model and split disagree on users or items, when a ``k`` exceeds the catalogue, when
    ``relevant_items`` or ``users`` holds an index outside the catalogue or the user table, or when no user has a
    relevant item in the stage.
    """
    _check_stage(stage)
    ks = _checked_ks(ks, split.n_items)
    _check_id_space(model, split)
    relevant = relevant_matrix(split, stage, relevant_items)
    has_relevant = np.diff(relevant.indptr) > 0
    chosen = _chosen_users(users, split.n_users)
    users = np.flatnonzero(has_relevant) if chosen is None else chosen[has_relevant[chosen]]
    n_skipped = (split.n_users if chosen is None else len(chosen)) - users.size
    if users.size == 0:
        among = "" if chosen is None else f" among the {len(chosen)} chosen users"
        raise ValueError(
            f"no user{among} has a {stage} interaction{_among(relevant_items)} in {split!r}; nothing to evaluate"
        )
    seen = _seen_items(split, stage)
    if fold_in and stage == "test" and isinstance(model, FoldsIn):
        model.fold_in(seen)
        try:
            topk = _ranked_lists(model, users, seen, max(ks), max_memory_bytes, device, progress)
        finally:
            model.fold_in(split.matrix("train"))
    else:
        topk = _ranked_lists(model, users, seen, max(ks), max_memory_bytes, device, progress)
    return _result(topk, users, split, stage, ks, keep_per_user, n_skipped, relevant)


def _chosen_users(users: np.ndarray | Sequence[int] | None, n_users: int) -> np.ndarray | None:
    """``users`` as sorted distinct int64 indices, checked against the user table; None stays None."""
    if users is None:
        return None
    chosen = np.unique(np.asarray(users, dtype=np.int64))
    if chosen.size and (chosen[0] < 0 or chosen[-1] >= n_users):
        bad = chosen[0] if chosen[0] < 0 else chosen[-1]
        raise ValueError(f"users holds index {bad}, outside the split's {n_users} users")
    return chosen


def evaluate_topk(
    topk: np.ndarray,
    users: np.ndarray,
    split: PreparedSplit,
    stage: EvalStage = "test",
    ks: Sequence[int] = (10, 20),
    keep_per_user: bool = False,
    relevant_items: np.ndarray | Sequence[int] | None = None,
) -> EvaluationResult:
    """The metrics of :func:`evaluate` for ready-made ranked lists: ``topk[r]`` (item indices best first, ``-1`` for an
    empty slot) is the list of user ``users[r]``. Rows whose user has no relevant item in the stage (among
    ``relevant_items`` when given) are skipped and counted. The lists must be at least ``max(ks)`` long; nothing is
    masked here (the caller decides what to exclude).
    """
    _check_stage(stage)
    topk = np.asarray(topk)
    users = np.asarray(users)
    if topk.ndim != 2 or users.ndim != 1 or len(users) != len(topk):
        raise ValueError(
            f"topk must be (n_users, K) and users (n_users,) with the same length; got {topk.shape} and {users.shape}"
        )
    ks = _checked_ks(ks, split.n_items)
    if max(ks) > topk.shape[1]:
        raise ValueError(f"k={max(ks)} is longer than the ranked lists ({topk.shape[1]} items); pass longer lists")
    if users.size and (users.min() < 0 or users.max() >= split.n_users):
        raise ValueError(f"user indices must be in [0, {split.n_users}) for {split!r}")
    if topk.size and (topk.min() < -1 or topk.max() >= split.n_items):
        raise ValueError(f"item indices must be in [0, {split.n_items}) (or -1 for an empty slot) for {split!r}")
    ordered = np.sort(topk, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    if repeated.any():
        row = int(np.flatnonzero(repeated.any(axis=1))[0])
        raise ValueError(
            f"the list of user {int(users[row])} repeats an item; each ranked list must hold distinct items"
        )
    relevant = relevant_matrix(split, stage, relevant_items)
    has_relevant = np.diff(relevant.indptr)[users] > 0
    n_skipped = int((~has_relevant).sum())
    if not has_relevant.any():
        raise ValueError(
            f"none of the {len(users)} users has a {stage} interaction{_among(relevant_items)} in {split!r}; "
            "nothing to evaluate"
        )
    return _result(topk[has_relevant], users[has_relevant], split, stage, ks, keep_per_user, n_skipped, relevant)


def untrained_items(split: PreparedSplit) -> np.ndarray:
    """Indices of the items without a training interaction (sorted): what no collaborative model has seen. Under
    ``split=new_items`` these are the held-out items, plus the few warm items whose pairs all fell outside train."""
    return np.flatnonzero(split.item_popularity == 0)


def relevant_matrix(
    split: PreparedSplit, stage: EvalStage, relevant_items: np.ndarray | Sequence[int] | None = None
) -> sp.csr_matrix:
    """The stage's binary user x item matrix, keeping only the columns in ``relevant_items`` (None: all of them)."""
    relevant = split.matrix(stage)
    if relevant_items is None:
        return relevant
    items = np.asarray(relevant_items)
    if items.ndim != 1 or (items.size and not np.issubdtype(items.dtype, np.integer)):
        raise ValueError(
            f"relevant_items must be a 1-D sequence of item indices; got shape {items.shape}, {items.dtype}"
        )
    if items.size and (items.min() < 0 or items.max() >= split.n_items):
        raise ValueError(f"relevant_items must be item indices in [0, {split.n_items}) for {split!r}")
    keep = np.zeros(split.n_items, dtype=bool)
    keep[items.astype(np.int64)] = True
    restricted = relevant.copy()
    restricted.data = restricted.data * keep[restricted.indices]
    restricted.eliminate_zeros()
    return restricted


def _among(relevant_items: np.ndarray | Sequence[int] | None) -> str:
    return "" if relevant_items is None else f" with one of the {len(np.unique(relevant_items))} relevant_items"


def _check_stage(stage: str) -> None:
    if stage not in ("valid", "test"):
        raise ValueError(f"stage={stage!r}: evaluate on 'valid' or 'test'")


def _checked_ks(ks: Sequence[int], n_items: int) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks:
        raise ValueError("ks is empty; pass at least one cut-off, e.g. ks=(10, 20)")
    if min(ks) < 1:
        raise ValueError(f"ks={ks}: every cut-off must be >= 1")
    if max(ks) > n_items:
        raise ValueError(f"k={max(ks)} is larger than the catalogue ({n_items} items); use ks <= {n_items}")
    return ks


def _check_id_space(model: Recommender, split: PreparedSplit) -> None:
    for what in ("n_users", "n_items"):
        mine, theirs = getattr(model, what, None), getattr(split, what)
        if mine != theirs:
            raise ValueError(
                f"{type(model).__name__}.{what}={mine} but the split has {what}={theirs} ({split!r}); "
                "the model was trained on a different split: evaluate it on the split it was trained on"
            )


def _seen_items(split: PreparedSplit, stage: EvalStage) -> sp.csr_matrix:
    """The items each user must not be recommended: train, plus valid when evaluating on test."""
    seen = split.matrix("train")
    if stage == "test":
        seen = (seen + split.matrix("valid")).tocsr()
    return seen


def _model_device(model: Recommender) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
    return torch.device("cpu")


def _ranked_lists(
    model: Recommender,
    users: np.ndarray,
    seen: sp.csr_matrix,
    k: int,
    max_memory_bytes: int,
    device: str | torch.device | None,
    progress: bool,
) -> np.ndarray:
    """Top-``k`` unseen items for each of ``users`` (sorted), ``-1`` where fewer than ``k`` items are left."""
    n_items = seen.shape[1]
    chunk = int(max(1, min(len(users), max_memory_bytes // (n_items * _BYTES_PER_SCORE))))
    model_device = _model_device(model)
    target = torch.device(device) if device is not None else model_device
    out = np.empty((len(users), k), dtype=np.int64)
    starts = range(0, len(users), chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="evaluate", unit="chunk")
    was_training = isinstance(model, torch.nn.Module) and model.training
    if was_training:
        model.eval()  # type: ignore[attr-defined]
    try:
        with torch.no_grad():
            for start in starts:
                batch = users[start : start + chunk]
                scores = model.score_all(torch.from_numpy(batch).to(model_device)).to(target, torch.float32)
                if scores.shape != (len(batch), n_items):
                    raise ValueError(
                        f"{type(model).__name__}.score_all returned shape {tuple(scores.shape)} for {len(batch)} users; "
                        f"expected ({len(batch)}, {n_items})"
                    )
                # Masking writes in place: never into the model's own tensor (a view of a cache, a broadcast row).
                if not scores.is_contiguous():
                    scores = scores.contiguous()  # already a fresh copy
                elif scores._base is not None:
                    scores = scores.clone()
                rows_seen = seen[batch]
                rows = np.repeat(np.arange(len(batch)), np.diff(rows_seen.indptr))
                scores[
                    torch.from_numpy(rows).to(target), torch.from_numpy(rows_seen.indices.astype(np.int64)).to(target)
                ] = float("-inf")
                values, items = top_k(scores, k)
                items[values == float("-inf")] = -1
                out[start : start + len(batch)] = items.cpu().numpy()
                del scores, values, items  # else the next chunk's scores are allocated while these still live
    finally:
        if was_training:
            model.train()  # type: ignore[attr-defined]
    return out


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(scores, k, dim=1)`` (same values, sorted), faster on wide CPU rows.

    Columns are folded into ``L`` strided groups ``{c, c + L, c + 2L, ...}``; a column in the row's top k lies in a
    group whose maximum is in the top k of the ``L`` group maxima, so top-k over those ``k`` groups' members (plus the
    few columns left over by the fold) is exact, and reads each score once instead of running a selection over it."""
    n_rows, n = scores.shape
    groups = int(math.sqrt(n / k)) if k > 0 else 1
    width = n // max(groups, 1)
    if groups < 4 or width < k or not scores.is_contiguous():
        return torch.topk(scores, k, dim=1)
    folded = scores.as_strided((n_rows, groups, width), (n, width, 1)).amax(dim=1)
    _, cols = torch.topk(folded, k, dim=1, sorted=False)
    offsets = width * torch.arange(groups, device=scores.device).view(1, groups, 1)
    candidates = (cols.unsqueeze(1) + offsets).reshape(n_rows, -1)
    if groups * width < n:
        rest = torch.arange(groups * width, n, device=scores.device).expand(n_rows, -1)
        candidates = torch.cat([candidates, rest], dim=1)
    values, picked = torch.topk(torch.gather(scores, 1, candidates), k, dim=1)
    return values, torch.gather(candidates, 1, picked)


def _hits(topk: np.ndarray, users: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """``hits[r, j] = topk[r, j] in relevant[users[r]]`` by binary search over the sorted (user, item) keys."""
    n_items = relevant.shape[1]
    relevant = relevant if relevant.has_sorted_indices else relevant.sorted_indices()
    keys = np.repeat(np.arange(relevant.shape[0], dtype=np.int64), np.diff(relevant.indptr)) * n_items
    keys += relevant.indices
    queries = users.astype(np.int64)[:, None] * n_items + topk
    pos = np.searchsorted(keys, queries).clip(max=max(len(keys) - 1, 0))
    return (keys[pos] == queries) & (topk >= 0) if len(keys) else np.zeros(topk.shape, dtype=bool)


def _result(
    topk: np.ndarray,
    users: np.ndarray,
    split: PreparedSplit,
    stage: str,
    ks: tuple[int, ...],
    keep_per_user: bool,
    n_skipped: int,
    relevant: sp.csr_matrix,
) -> EvaluationResult:
    n_relevant = np.diff(relevant.indptr)[users]
    hits = _hits(topk, users, relevant)
    train = split.matrix("train")
    interactions = split.item_popularity
    distinct_users = np.bincount(train.indices, minlength=split.n_items)  # binary matrix: users per item
    means: dict[str, float] = {}
    per_user: dict[str, np.ndarray] = {}
    for k in ks:
        values = {name: fn(hits, n_relevant, k) for name, fn in RANKING_METRICS.items()}
        values["avg_pop"] = average_popularity(topk, interactions, k)
        values["novelty"] = novelty(topk, distinct_users, split.n_users, k)
        for name, v in values.items():
            means[f"{name}@{k}"] = float(v.mean())
            if keep_per_user:
                per_user[f"{name}@{k}"] = v
        means[f"coverage@{k}"] = coverage(topk, split.n_items, k)
    return EvaluationResult(
        metrics=means,
        stage=stage,
        ks=ks,
        n_users_evaluated=len(users),
        n_users_skipped=int(n_skipped),
        per_user=PerUserResults(users, topk, hits, n_relevant, per_user) if keep_per_user else None,
    )
