"""Tuning how much the re-ranker counts, on the validation split, once per export.

The served order is ``(1 - w) * z(retrieval score) + w * z(ranker score)`` over the candidates
(:class:`recstack.serving.pipeline.PipelineConfig`). A pointwise ranker trained on random negatives can order the
retrieval model's hard candidates worse than retrieval does, so ``w`` is chosen by the served pipeline's own
validation NDCG@10 (never the test split) and written into the bundle's manifest, where serving reads it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate_topk
from recstack.export.bundle import MANIFEST, Bundle
from recstack.serving.pipeline import Pipeline, PipelineConfig, offline_topk

DEFAULT_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass(frozen=True)
class BlendTuning:
    weight: float
    metric: str
    scores: dict[float, float]


def tune_blend_weight(
    bundle: Bundle, split: PreparedSplit, *, grid: Sequence[float] = DEFAULT_GRID, k: int = 10
) -> BlendTuning:
    """The grid weight with the best validation NDCG@k of the served pipeline (ties: the smaller weight)."""
    if bundle.ranker_path is None:
        raise ValueError(f"{bundle.root} has no ranker.onnx: there is no blend to tune")
    base = Pipeline.from_bundle(bundle, PipelineConfig(rerank_weight=1.0))
    users = np.flatnonzero(np.diff(split.matrix("valid").indptr) > 0)
    metric = f"ndcg@{k}"
    scores: dict[float, float] = {}
    for w in grid:
        pipeline = copy.copy(base)
        pipeline.config = replace(base.config, rerank_weight=float(w))
        topk = offline_topk(pipeline, users, k, rerank=True)
        scores[float(w)] = evaluate_topk(topk, users, split, "valid", (k,)).metrics[metric]
    best = max(scores, key=lambda w: (round(scores[w], 6), -w))
    return BlendTuning(weight=best, metric=f"valid/{metric}", scores=scores)


def record_blend_weight(bundle_dir: str | Path, tuning: BlendTuning) -> None:
    """Write the tuned weight into ``manifest.ranker`` (the manifest is not among the hashed files)."""
    path = Path(bundle_dir) / MANIFEST
    raw = json.loads(path.read_text())
    raw["ranker"]["blend_weight"] = tuning.weight
    raw["ranker"]["blend_tuning"] = {"metric": tuning.metric, "scores": {str(w): s for w, s in tuning.scores.items()}}
    path.write_text(json.dumps(raw, indent=2) + "\n")
