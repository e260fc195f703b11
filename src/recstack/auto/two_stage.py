"""The two-stage candidates: each exportable candidate's retrieval (MF, LightGCN: user/item vectors), re-ranked by
the best item-item candidate (EASE: ``item_item_weights()``), blended as the service blends them.

It is judged as it would be served: a bundle from the two best trials' run folders (``recstack-export``'s
``export_run`` with ``ranker_run``), its blend weight tuned on validation
(:func:`recstack.offline.blend.tune_and_record`), then the served pipeline's validation NDCG@10 (the re-rank row of
:func:`recstack.offline.report.evaluate_bundle`). It trains nothing, so it costs seconds and runs in the reserve,
after the search; it is ranked with the single models by that score. When it wins, both parts are finished
(:func:`recstack.auto.finish.refit_winner`: the retrieval's best trial copied as it is, the re-ranker fitted again,
neither reading the test split), exported as the bundle, the blend re-tuned on validation (both parts trained on the
training split only, like the trials) and the test split read once, through the bundle's pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig

from recstack.auto.candidates import Candidate
from recstack.auto.finish import Export, Refit, has_vectors, refit_winner
from recstack.auto.search import CandidateResult
from recstack.bundle.manifest import Blend
from recstack.data.prepared import PreparedSplit
from recstack.export.erasure import Erasures
from recstack.retrieval.index import IndexConfig

log = logging.getLogger(__name__)

TWO_STAGE_DIR = Path("two_stage")  # under the output folder: <retrieval>-valid-bundle, one per candidate


def is_item_item(model_cfg: DictConfig) -> bool:
    """The exporter's condition on an item-item re-ranker, asked of the model's class: ``item_item_weights()``."""
    return hasattr(get_class(str(model_cfg._target_)), "item_item_weights")


def two_stage_name(retrieval: str, ranker: str) -> str:
    return f"{retrieval} -> {ranker}"


def pick_parts(
    ranked: Sequence[CandidateResult], candidates: Mapping[str, Candidate]
) -> list[tuple[CandidateResult, CandidateResult]]:
    """Every exportable candidate that completed a trial (best validation score first; ``ranked``: best first), each
    paired with the best item-item one; empty when either kind has none.

    Every exportable candidate, not only the best: the retrieval model that is best alone is not always the one that
    blends best, and a deep candidate whose trial its deadline cut (LightGCN on a loaded machine: still improving,
    0.0006 under MF on ML-100K's validation) would otherwise never be judged re-ranked. Each pair costs an export and a
    blend tuning (seconds on ML-100K), in the reserve."""
    done = [r for r in ranked if r.valid_score is not None and r.run_dir is not None and r.name in candidates]
    ranker = next((r for r in done if is_item_item(candidates[r.name].cfg.model)), None)
    if ranker is None:
        return []
    return [(r, ranker) for r in done if has_vectors(candidates[r.name].cfg.model)]


def valid_bundle_dir(retrieval: str) -> Path:
    """Where the two-stage candidate with ``retrieval`` is exported for its validation score (under the output
    folder)."""
    return TWO_STAGE_DIR / f"{retrieval}-valid-bundle"


def _bundle(
    retrieval_run: str,
    ranker_run: str,
    out_dir: Path,
    split: PreparedSplit,
    *,
    index_config: IndexConfig,
    text: bool,
    seen: str,
    erasures: Erasures | None,
) -> tuple[Path, Blend]:
    """Export the pipeline's bundle and tune (and record) its blend weight on validation."""
    from recstack.export.exporter import export_run
    from recstack.offline.blend import tune_and_record

    bundle = export_run(
        retrieval_run,
        out_dir,
        index_config=index_config,
        ranker_run=ranker_run,
        text=text,
        seen=seen,  # type: ignore[arg-type]
        erasures=erasures,
    )
    blend = tune_and_record(bundle, split)
    log.info("two-stage bundle %s: blend weight %.1f (%s)", bundle, blend.weight, blend.metric)
    return bundle, blend


def _reranked(bundle: Path, split: PreparedSplit, stage: str, ks: Sequence[int]) -> dict[str, float]:
    """The served pipeline's metrics on ``stage``, re-rank included (evaluate_bundle's second row)."""
    from recstack.offline.report import evaluate_bundle

    rows = evaluate_bundle(bundle, split, stage, ks)  # type: ignore[arg-type]
    return {k: float(v) for k, v in rows[-1].result.metrics.items()}


def score_two_stage(
    retrieval: CandidateResult,
    ranker: CandidateResult,
    split: PreparedSplit,
    out_dir: Path,
    *,
    ks: Sequence[int],
    index_config: IndexConfig,
    erasures: Erasures | None = None,
) -> CandidateResult:
    """The two-stage candidate's row: the served pipeline of the two best trials, scored on validation (see the module
    docstring). A failure is recorded in the row (status "failed"), as for any candidate."""
    assert retrieval.run_dir is not None and ranker.run_dir is not None
    name = two_stage_name(retrieval.name, ranker.name)
    start = time.time()
    blend = None
    bundle = None
    valid: dict[str, float] | None = None
    note = ""
    try:
        # seen=train: the lists hold what the trials trained on; no text vectors (no cold start to judge here).
        bundle, blend = _bundle(
            retrieval.run_dir,
            ranker.run_dir,
            out_dir / valid_bundle_dir(retrieval.name),
            split,
            index_config=index_config,
            text=False,
            seen="train",
            erasures=erasures,  # no bundle on disk holds a user erased since the data was collected
        )
        valid = _reranked(bundle, split, "valid", ks)
    except Exception as error:  # one candidate failing must not end the job
        log.exception("candidate %s failed", name)
        note = f"{type(error).__name__}: {error}"
    score = None if valid is None else valid["ndcg@10"]
    log.info("%s: valid ndcg@10 %s (%.0f s)", name, "none" if score is None else f"{score:.4f}", time.time() - start)
    return CandidateResult(
        name=name,
        kind="two_stage",
        status="failed" if valid is None else "done",
        valid_score=score,
        valid=valid,
        best_trial=None,
        params={},
        run_dir=None,
        seconds=time.time() - start,
        given_s=0.0,
        phases=("reserve",),
        completed=0 if valid is None else 1,
        pruned=0,
        failed=0,
        exhausted=True,
        epochs=None,
        best_epoch=None,
        best_epoch_is_last=False,
        cut_by_budget=False,
        trials_best_is_last=0,
        study_dir=None,
        note=note,
        parts=(retrieval.name, ranker.name),
        blend_weight=None if blend is None else blend.weight,
        bundle=None if bundle is None else str(bundle),
    )


def refit_two_stage(
    winner: CandidateResult,
    parts: tuple[tuple[Candidate, CandidateResult], tuple[Candidate, CandidateResult]],
    split: PreparedSplit,
    winner_dir: Path,
    bundle_dir: Path,
    *,
    ks: Sequence[int],
    index_config: IndexConfig,
    text: bool,
    erasures: Erasures | None,
) -> tuple[Refit, Export]:
    """Refit both parts (``<winner_dir>/<part>/``), export their bundle at ``bundle_dir``, re-tune its blend on
    validation and read the test split once, through its pipeline."""
    start = time.time()
    (retrieval, retrieval_result), (ranker, ranker_result) = parts
    refits = tuple(
        refit_winner(c, r, split, winner_dir / c.name, evaluate_test=False)
        for c, r in ((retrieval, retrieval_result), (ranker, ranker_result))
    )
    bundle, blend = _bundle(
        refits[0].run_dir,
        refits[1].run_dir,
        bundle_dir,
        split,
        index_config=index_config,
        text=text,
        seen="all",  # as auto exports a single winner (recstack-export's default)
        erasures=erasures,
    )
    valid = _reranked(bundle, split, "valid", ks)
    test = _reranked(bundle, split, "test", ks)  # the only reading of the test split
    refit = Refit(
        name=winner.name,
        run_dir=str(winner_dir),
        params={},
        valid=valid,
        test=test,
        seconds=time.time() - start,
        epochs=refits[0].epochs,
        best_epoch=refits[0].best_epoch,
        best_epoch_is_last=refits[0].best_epoch_is_last,
        parts=refits,
        blend_weight=blend.weight,
    )
    note = (
        f"the winner, the two-stage pipeline {winner.name}: {retrieval.name} retrieval and {ranker.name} re-ranking "
        f"(item_item.npy), both from their refits, blend weight {blend.weight:.1f} tuned on validation"
    )
    export = Export(
        bundle=str(bundle),
        model=winner.name,
        run_dir=refits[0].run_dir,
        is_winner=True,
        note=note,
        ranker_run=refits[1].run_dir,
        blend_weight=blend.weight,
    )
    return refit, export
