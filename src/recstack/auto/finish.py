"""After the search: the winner trained once more (or taken as its best trial trained it) and read on test once, and
the bundle exported.

A trained model (MF, LightGCN) is not trained again: its best trial already trained the winning configuration with
the run's seed, and its ``checkpoints/best.ckpt`` holds the weights of its best validation epoch. Training again with
the same configuration, seed and epoch count would reproduce those weights at the cost of the whole trial (383 s for
a LightGCN winner on ML-100K, past the 180 s reserve of ``budget=20m``). So the trial's run folder is copied to
``<out>/winner/``, its checkpoint loaded, validation scored again (the same figure as the trial's, a check on the
copy) and the test split read once; ``metrics.json`` records ``from_trial``. A trial that left no checkpoint is
trained again, as before, with as many epochs as it ran. Baselines (popularity, ItemKNN, EASE) are refitted in
``<out>/winner/`` with ``evaluate_test=true``: a fit of seconds. Either way this is the only run that reads the test
split.

The bundle (:func:`recstack.export.exporter.export_run`) needs user and item vectors whose dot products are the
model's scores: MF and LightGCN have them; popularity, ItemKNN and EASE do not. When the winner cannot be exported,
the bundle holds the best exportable candidate by validation score instead (its best trial's checkpoint, not refitted
and never scored on test), and the report says so.

A two-stage winner (:mod:`.two_stage`) is finished part by part here too (:func:`refit_winner` with
``evaluate_test=false``: the pipeline, not its parts, reads the test split).
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict

from recstack.auto.candidates import Candidate
from recstack.auto.search import CandidateResult
from recstack.data.prepared import PreparedSplit
from recstack.export.erasure import Erasures
from recstack.retrieval.index import IndexConfig
from recstack.training import runs
from recstack.training.train import train
from recstack.tuning.objective import trial_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refit:
    """The winner's final run (its best trial's weights for a trained model, a new fit for a baseline), and its one
    reading of the test split.

    A two-stage winner's record holds its ``parts`` (each part's refit, which read no test: ``test`` empty), the blend
    weight re-tuned on validation, and the served pipeline's validation and test metrics (its bundle's)."""

    name: str
    run_dir: str
    params: dict[str, Any]
    valid: dict[str, float]
    test: dict[str, float]
    seconds: float
    epochs: int | None
    best_epoch: int | None
    best_epoch_is_last: bool
    parts: tuple[Refit, ...] = ()  # a two-stage winner: the retrieval part's refit, then the re-ranker's
    blend_weight: float | None = None


@dataclass(frozen=True)
class Export:
    """What the bundle holds, or why there is none."""

    bundle: str | None
    model: str | None  # the candidate exported
    run_dir: str | None
    is_winner: bool
    note: str
    ranker_run: str | None = None  # a two-stage bundle's re-ranker (item-item) run
    blend_weight: float | None = None  # recorded in its manifest, tuned on validation


def refit_winner(
    candidate: Candidate, result: CandidateResult, split: PreparedSplit, run_dir: Path, *, evaluate_test: bool = True
) -> Refit:
    """The winning configuration's final run in ``run_dir``, scored on test (see the module docstring): a trained
    model's best trial taken as it is, a baseline fitted again; ``evaluate_test`` false: a two-stage winner's part,
    whose ``test`` stays empty."""
    trial = Path(result.run_dir) if result.run_dir else None
    if candidate.trainable and trial is not None and (trial / runs.CHECKPOINT_DIR / runs.BEST_CHECKPOINT).is_file():
        return _from_trial(candidate, result, trial, split, run_dir, evaluate_test=evaluate_test)
    cfg = trial_config(candidate.cfg, result.params, run_dir) if candidate.tuned else copy.deepcopy(candidate.cfg)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
        cfg.evaluate_test = evaluate_test
        if candidate.trainable and result.epochs:
            cfg.fit.max_epochs = int(result.epochs)
    log.info("refit of the winner, %s (%s), in %s", candidate.name, result.params or "its config", run_dir)
    start = time.time()
    out = train(cfg, split)
    m = out.metrics
    return Refit(
        name=candidate.name,
        run_dir=str(out.run_dir),
        params=dict(result.params),
        valid=dict(m["valid"]),
        test=dict(m["test"] or {}),
        seconds=time.time() - start,
        epochs=m.get("epochs") if candidate.trainable else None,
        best_epoch=m.get("best_epoch") if candidate.trainable else None,
        best_epoch_is_last=bool(m.get("best_epoch_is_last", False)),
    )


def _from_trial(
    candidate: Candidate,
    result: CandidateResult,
    trial: Path,
    split: PreparedSplit,
    run_dir: Path,
    *,
    evaluate_test: bool,
) -> Refit:
    """The best trial's run folder copied to ``run_dir``, its best weights scored on validation again and, once, on
    test."""
    from recstack.evaluation.evaluator import evaluate

    log.info(
        "the winner, %s (%s): its best trial's weights, from %s, into %s", candidate.name, result.params, trial, run_dir
    )
    start = time.time()
    shutil.copytree(trial, run_dir, ignore=shutil.ignore_patterns("last.ckpt", "interrupted.ckpt"))
    config_path = run_dir / runs.CONFIG_FILE
    cfg = OmegaConf.load(config_path)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)  # the folder's own record points at itself, as a trained run's does
        cfg.evaluate_test = evaluate_test
    OmegaConf.save(cfg, config_path)
    model = runs.load_run(run_dir, split=split).model
    ks = tuple(cfg.ks)
    metrics = runs.read_metrics(run_dir)
    metrics["valid"] = {k: float(v) for k, v in evaluate(model, split, "valid", ks).metrics.items()}
    if evaluate_test:
        metrics["test"] = {k: float(v) for k, v in evaluate(model, split, "test", ks).metrics.items()}
    metrics["from_trial"] = str(trial)
    runs.write_metrics(run_dir, metrics)
    if metrics["test"]:
        log.info("test %s", {k: round(v, 4) for k, v in metrics["test"].items()})
    return Refit(
        name=candidate.name,
        run_dir=str(run_dir),
        params=dict(result.params),
        valid=dict(metrics["valid"]),
        test=dict(metrics["test"] or {}),
        seconds=time.time() - start,
        epochs=metrics.get("epochs"),
        best_epoch=metrics.get("best_epoch"),
        best_epoch_is_last=bool(metrics.get("best_epoch_is_last", False)),
    )


def has_vectors(model_cfg: DictConfig) -> bool:
    """The exporter's condition on a model, asked of its class: ``user_embeddings()`` and ``item_embeddings()``."""
    cls = get_class(str(model_cfg._target_))
    return hasattr(cls, "user_embeddings") and hasattr(cls, "item_embeddings")


def export_bundle(
    order: Sequence[tuple[Candidate, str]],
    out_dir: Path,
    *,
    winner: str,
    index_config: IndexConfig,
    text: bool,
    erasures: Erasures | None,
) -> Export:
    """Export the first of ``order`` (``(candidate, run folder)``, the winner's refit first, then the others by
    validation score) that the exporter accepts, as ``out_dir``."""
    from recstack.export.exporter import ExportError, export_run

    passed: list[str] = []
    for candidate, run_dir in order:
        if not has_vectors(candidate.cfg.model):
            passed.append(candidate.name)
            continue
        try:
            bundle = export_run(run_dir, out_dir, index_config=index_config, text=text, erasures=erasures)
        except ExportError as error:
            log.warning("%s cannot be exported: %s", candidate.name, error)
            passed.append(f"{candidate.name} ({error})")
            continue
        if candidate.name == winner:
            note = f"the winner, {winner}, from its refit"
        else:
            note = (
                f"the winner, {winner}, has no user/item vectors to serve from an index (the exporter takes MF and "
                f"LightGCN), so the bundle holds the best exportable candidate, {candidate.name} (its best trial, "
                "not refitted, never scored on test)"
            )
        return Export(str(bundle), candidate.name, str(run_dir), candidate.name == winner, note)
    return Export(
        None,
        None,
        None,
        False,
        f"no bundle: no candidate could be exported (tried in order, none passed: {', '.join(passed) or 'none ran'}); "
        "include mf or lightgcn in models= and give them budget",
    )
