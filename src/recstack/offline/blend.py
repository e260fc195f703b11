"""Tuning how much the re-ranker counts, on the validation split, once per export.

The served order is ``(1 - w) * z(retrieval score) + w * z(ranker score)`` over the candidates
(:class:`recstack.serving.pipeline.PipelineConfig`). A pointwise ranker trained on random negatives can order the
retrieval model's hard candidates worse than retrieval does, so ``w`` is chosen by the served pipeline's own
validation NDCG@10 (never the test split) and recorded in the bundle's manifest
(:func:`recstack.bundle.writer.record_blend`), where serving reads it. The same holds for either kind of ranker
(ONNX Wide & Deep, item-item EASE).

A bundle with a content section is tuned as the service runs it, content attached: items without a training
interaction leave the collaborative search and come in through the content stage. Where the validation split judges
such items (``split=new_items``; a catalogue that grew since training), ``content_trust`` (how far a cold candidate's
content z moves its ranker score, :class:`recstack.serving.pipeline.PipelineConfig`) is then chosen on
:data:`CONTENT_GRID` at the chosen weight, by the same validation NDCG@10 over all items: content earns slots in the
re-ranked top-k only as far as it pays on validation.
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
CONTENT_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


def tune_blend_weight(
    bundle: Bundle,
    split: PreparedSplit,
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    content_grid: Sequence[float] = CONTENT_GRID,
    k: int = 10,
) -> Blend:
    """The grid weight with the best validation NDCG@k of the served pipeline (ties: the smaller weight), and the
    content trust where it applies (module docstring; ties: the smaller trust)."""
    if bundle.ranker_path is None:
        raise ValueError(f"{bundle.root} has no re-ranker (ranker.onnx or item_item.npy): there is no blend to tune")
    check_unseen_stage(bundle, "valid")
    base = Pipeline.from_bundle(bundle, PipelineConfig(rerank_weight=1.0, content_trust=0.0))
    if bundle.content is not None:
        base.attach_content(bundle.content.vectors[: bundle.content.info.n_catalogue])
    valid = split.matrix("valid")
    users = np.flatnonzero(np.diff(valid.indptr) > 0)
    metric = f"ndcg@{k}"
    # Masked by the split's training items, not the bundle's seen lists (a deployed bundle's hold everything), and an
    # item-item ranker reads them as the history, for the same reason.
    train = split.matrix("train")

    def validation_score(**settings: float) -> float:
        pipeline = copy.copy(base)
        pipeline.config = replace(base.config, **settings)
        topk = offline_topk(pipeline, users, k, rerank=True, exclude_seen=False, extra_exclude=train, history=train)
        return float(evaluate_topk(topk, users, split, "valid", (k,)).metrics[metric])

    scores = {float(w): validation_score(rerank_weight=float(w)) for w in grid}
    best = max(scores, key=lambda w: (round(scores[w], 6), -w))
    judged_cold = np.intersect1d(base.cold_rows, valid.indices) if len(base.cold_rows) else base.cold_rows
    if not len(judged_cold) or not content_grid:
        return Blend(weight=best, metric=f"valid/{metric}", grid=tuple(scores.items()))
    trusts = {float(c): validation_score(rerank_weight=best, content_trust=float(c)) for c in content_grid}
    trust = max(trusts, key=lambda c: (round(trusts[c], 6), -c))
    return Blend(
        weight=best,
        metric=f"valid/{metric}",
        grid=tuple(scores.items()),
        content_trust=trust,
        content_grid=tuple(trusts.items()),
    )


def tune_and_record(bundle_dir: str | Path, split: PreparedSplit, **kwargs: object) -> Blend:
    """Tune the blend weight of the bundle at ``bundle_dir`` on ``split`` and record it in its manifest."""
    blend = tune_blend_weight(Bundle.load(bundle_dir), split, **kwargs)  # type: ignore[arg-type]
    record_blend(bundle_dir, blend)
    return blend
