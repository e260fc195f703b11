"""The served two-stage pipeline judged offline by the same metrics as every model.

The bundle's :class:`~recstack.serving.pipeline.Pipeline` (the very code the service runs) ranks each user's items
with and without the re-ranker; :func:`~recstack.evaluation.evaluator.evaluate_topk` scores both lists, so a report
shows retrieval-only beside retrieval + re-ranking on the same split. On the test stage the user's validation items
are excluded too, exactly as the full-ranking evaluator masks them for a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recstack.bundle.reader import Bundle
from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import EvalStage, evaluate_topk
from recstack.evaluation.report import RunEvaluation
from recstack.offline.topk import check_unseen_stage, offline_topk
from recstack.serving.pipeline import Pipeline


def evaluate_bundle(
    bundle_dir: str | Path,
    split: PreparedSplit,
    stage: EvalStage = "test",
    ks: Sequence[int] = (10, 20),
    *,
    name: str | None = None,
    content: bool = False,
) -> list[RunEvaluation]:
    """``[retrieval only, retrieval + re-rank]`` evaluations of the bundle's pipeline (the second only with a ranker).

    Each evaluation's details name the bundle's index kind (``flat``, ``hnsw``, ...). ``content``: the pipeline runs
    with the bundle's content section attached, as the service runs it (items without a training interaction are then
    served by their text: :class:`~recstack.serving.pipeline.Pipeline`). Each result keeps its per-user lists
    (``result.per_user``), so other judgements of the same lists (only some items relevant, say) need no second run."""
    bundle = Bundle.load(bundle_dir)
    if bundle.manifest.split_hash and bundle.manifest.split_hash != split.config_hash:
        raise ValueError(
            f"bundle {bundle_dir} was exported from split {bundle.manifest.split_hash}, not {split.config_hash} "
            f"({split!r}); evaluate it on the split its run was trained on"
        )
    check_unseen_stage(bundle, stage)
    pipeline = Pipeline.from_bundle(bundle)
    if content:
        if bundle.content is None:
            raise ValueError(f"bundle {bundle_dir} has no content section; export it with content.enabled=true")
        pipeline.attach_content(bundle.content.vectors[: bundle.content.info.n_catalogue])
    users = np.flatnonzero(np.diff(split.matrix(stage).indptr) > 0)
    # The split decides what is masked, not the bundle's seen lists: a deployed bundle's lists hold every interaction
    # (export seen=all), test items included. Train, plus valid on the test stage, as the evaluator masks for a model.
    train = split.matrix("train")
    seen = train
    if stage == "test":
        seen = (seen + split.matrix("valid")).tocsr()
    label = name or Path(bundle_dir).name
    modes = [("retrieval", False)] + ([("retrieval + re-rank", True)] if pipeline.ranker is not None else [])
    out = []
    for mode, rerank in modes:
        # An item-item ranker reads what is known before the stage (train; train + valid on test: its fold-in, as
        # the service reads a deployed bundle's seen lists), never the bundle's lists, which may hold the items judged.
        topk = offline_topk(
            pipeline, users, max(ks), rerank=rerank, exclude_seen=False, extra_exclude=seen, history=seen
        )
        result = evaluate_topk(topk, users, split, stage, ks, keep_per_user=True)
        info = {"index": bundle.manifest.index.kind}
        if content:
            info["content"] = "attached"
        if rerank and bundle.manifest.ranker is not None:
            info["ranker"] = bundle.manifest.ranker.kind
        out.append(RunEvaluation(f"{label}: {mode}", result, info))
    return out
