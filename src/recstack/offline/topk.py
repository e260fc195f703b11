"""The served pipeline over many users: the very code the service runs, with no online store."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recstack.bundle.reader import Bundle
from recstack.serving.pipeline import Pipeline, Query


def offline_topk(
    source: Bundle | Pipeline,
    users: np.ndarray,
    k: int,
    *,
    rerank: bool,
    hour: int = 12,
    dow: int = 0,
    exclude_seen: bool = True,
    extra_exclude: sp.csr_matrix | None = None,
    history: sp.csr_matrix | None = None,
) -> np.ndarray:
    """The served pipeline over many users, for ``evaluate_topk``: ``(len(users), k)`` item indices, -1 padded.

    ``users`` are user indices of the bundle; no online store is involved (offline users have no recent activity).
    ``extra_exclude``: a users x items matrix of further items to drop per user (on the test stage: the validation
    items, so the pipeline is judged exactly as the full-ranking evaluator judges a model).
    ``history``: a users x items matrix of what an item-item ranker reads per user instead of the bundle's seen
    lists (the split's training items: the interactions its model was fitted on); ignored by an ONNX ranker.
    """
    pipeline = source if isinstance(source, Pipeline) else Pipeline.from_bundle(source)
    ids_by_row = _user_ids_by_row(pipeline)
    out = np.full((len(users), k), -1, dtype=np.int64)
    for row, user in enumerate(np.asarray(users, dtype=np.int64)):
        query = Query(user_id=ids_by_row[user], k=k, hour=hour, dow=dow, exclude_seen=exclude_seen, rerank=rerank)
        extra = None if extra_exclude is None else _row(extra_exclude, user)
        read = None if history is None else _row(history, user)
        ranked = pipeline.recommend(query, exclude_items=extra, history=read)
        out[row, : len(ranked.items)] = ranked.items
    return out


def check_unseen_stage(bundle: Bundle, stage: str) -> None:
    """Refuse to judge ``bundle`` on ``stage`` when its retrieval vectors were folded in over interactions that hold
    that stage (``recstack-export fold_in=true`` with ``seen=all``, or ``seen=train_valid`` judged on valid)."""
    export = (bundle.manifest.metrics or {}).get("export") or {}
    if not export.get("fold_in"):
        return
    seen = str(export.get("seen", "all"))
    if seen == "all" or (seen == "train_valid" and stage == "valid"):
        raise ValueError(
            f"{bundle.root}: its retrieval vectors were folded in over the seen={seen} interactions, which hold the "
            f"{stage} split, so it cannot be judged on {stage}; export it with fold_in=false, or with "
            "fold_in=true seen=train_valid to judge the test stage"
        )


def _user_ids_by_row(pipeline: Pipeline) -> np.ndarray:
    ids = np.empty(pipeline.n_users, dtype=object)
    for user_id, row in pipeline.user_index.items():
        ids[row] = user_id
    return ids


def _row(matrix: sp.csr_matrix, user: int) -> np.ndarray:
    return matrix.indices[matrix.indptr[user] : matrix.indptr[user + 1]]
