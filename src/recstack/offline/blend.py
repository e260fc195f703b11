"""Tuning how much the re-ranker counts, on the validation split, once per export.

The served order is ``(1 - w) * z(retrieval score) + w * z(ranker score)`` over the candidates
(:class:`recstack.serving.pipeline.PipelineConfig`). A pointwise ranker trained on random negatives can order the
retrieval model's hard candidates worse than retrieval does, so ``w`` is chosen by the served pipeline's own
validation NDCG@10 (never the test split) and recorded in the bundle's manifest
(:func:`recstack.bundle.writer.record_blend`), where serving reads it. The same holds for either kind of ranker
(ONNX Wide & Deep, item-item EASE).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from recstack.bundle.manifest import Blend
from recstack.bundle.reader import Bundle
from recstack.bundle.writer import record_blend
from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate_topk
from recstack.offline.topk import check_unseen_stage, offline_topk
from recstack.serving.pipeline import Pipeline, PipelineConfig

DEFAULT_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


def tune_blend_weight(
    bundle: Bundle, split: PreparedSplit, *, grid: Sequence[float] = DEFAULT_GRID, k: int = 10
) -> Blend:
    """The grid weight with the best validation NDCG@k of the served pipeline (ties: the smaller weight)."""
    if bundle.ranker_path is None:
        raise ValueError(f"{bundle.root} has no re-ranker (ranker.onnx or item_item.npy): there is no blend to tune")
    check_unseen_stage(bundle, "valid")
    base = Pipeline.from_bundle(bundle, PipelineConfig(rerank_weight=1.0))
    users = np.flatnonzero(np.diff(split.matrix("valid").indptr) > 0)
    metric = f"ndcg@{k}"
    scores: dict[float, float] = {}
    for w in grid:
        pipeline = copy.copy(base)
        pipeline.config = replace(base.config, rerank_weight=float(w))
        # Masked by the split's training items, not the bundle's seen lists (a deployed bundle's hold everything),
        # and an item-item ranker reads them as the history, for the same reason.
        train = split.matrix("train")
        topk = offline_topk(pipeline, users, k, rerank=True, exclude_seen=False, extra_exclude=train, history=train)
        scores[float(w)] = float(evaluate_topk(topk, users, split, "valid", (k,)).metrics[metric])
    best = max(scores, key=lambda w: (round(scores[w], 6), -w))
    return Blend(weight=best, metric=f"valid/{metric}", grid=tuple(scores.items()))


def tune_and_record(bundle_dir: str | Path, split: PreparedSplit, **kwargs: object) -> Blend:
    """Tune the blend weight of the bundle at ``bundle_dir`` on ``split`` and record it in its manifest."""
    blend = tune_blend_weight(Bundle.load(bundle_dir), split, **kwargs)  # type: ignore[arg-type]
    record_blend(bundle_dir, blend)
    return blend
