"""``train(cfg)``: prepare the split, build the model, train it (or fit a baseline), evaluate, write the run folder.

Callable from Python and tests with a composed config (``recstack.config.compose("train", [...])``); the
``recstack-train`` / ``python training/train.py`` entry points only wrap it in ``@hydra.main``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from recstack.data.prepared import PreparedSplit
from recstack.models.base import Recommender
from recstack.training import ranks, refit, runs
from recstack.training.build import build_model
from recstack.training.module import RecommenderModule
from recstack.training.signals import InterruptHandler, SecondSignalExits, interrupt_handling

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    model: Recommender


def _model_name(cfg: DictConfig) -> str:
    """The model group's choice under Hydra (``mf``, ``itemknn``), else the model's module name."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("model")
        if choice:
            return str(choice)
    return str(cfg.model._target_).split(".")[-2]


def _run_dir(cfg: DictConfig, split: PreparedSplit) -> Path:
    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    inherited = ranks.inherited_run_dir()  # a DDP rank that rank 0 started: rank 0's folder
    if inherited is not None:
        return inherited
    suffix = ""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        suffix = f"-{HydraConfig.get().job.num}"  # sweep jobs can start within the same second
    return runs.default_run_dir(_model_name(cfg), split.dataset, cfg.get("runs_root", "outputs/runs"), suffix)


def _save_config(cfg: DictConfig, run_dir: Path, split: PreparedSplit) -> None:
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(resolved):
        resolved.run_dir = str(run_dir)
        resolved.prepared_split = str(split.root)
    OmegaConf.save(resolved, run_dir / runs.CONFIG_FILE)


def _refuse_silent_resume(run_dir: Path, ckpt_path: str | None) -> None:
    """A run folder that already holds checkpoints is only reused to resume, and then explicitly: Lightning would
    otherwise pick the newest of ``last.ckpt`` / ``interrupted.ckpt`` on its own, or overwrite the earlier run."""
    existing = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    if existing and not ckpt_path:
        raise ValueError(
            f"run_dir={run_dir} already holds checkpoints {existing}. To resume it, pass "
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'} (the last finished epoch); to start afresh, choose "
            "another run_dir (or leave run_dir unset for a new timestamped folder)"
        )


def _close_process_group(trainer: L.Trainer) -> None:
    """After a DDP run, every rank waits for the others and closes the process group Lightning opened: left open, gloo's
    threads can abort the interpreter at exit ("terminate called without an active exception", status 134) after a
    run that went well."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _fit_baseline(cfg: DictConfig, model: Recommender, split: PreparedSplit, run_dir: Path) -> TrainResult:
    from recstack.evaluation.evaluator import evaluate

    ks = tuple(cfg.ks)
    start = time.perf_counter()
    model.fit(split)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - start
    metrics = {
        # A refit's validation interactions are training data (recstack.training.refit): nothing to evaluate.
        "valid": None if refit.is_refit(cfg) else dict(evaluate(model, split, "valid", ks).metrics),
        "test": dict(evaluate(model, split, "test", ks).metrics) if cfg.get("evaluate_test", True) else None,
        "train_seconds": seconds,
        "epochs": 1,
        "seconds_per_epoch": seconds,
        "best_epoch": 0,
        "best_epoch_is_last": False,
    }
    if refit.is_refit(cfg):
        metrics["refit"] = refit.refit_record(cfg, split)
    if ranks.is_rank_zero():
        runs.write_metrics(run_dir, metrics)
    return TrainResult(run_dir=run_dir, metrics=metrics, model=model)


def train(
    cfg: DictConfig, split: PreparedSplit | None = None, *, extra_callbacks: Sequence[Callback] = ()
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` / ``cfg.split`` and write its run folder (see :mod:`recstack.training.runs`).

    ``split``: an already prepared split to use instead of preparing ``cfg.data`` / ``cfg.split`` (tests, notebooks).
    ``extra_callbacks``: trainer callbacks added after the configured ones (``recstack-tune``'s pruning and deadline);
    baselines, which have no trainer, ignore them.

    Under DDP (``trainer=ddp``, ``trainer=ddp_cpu``) every rank runs this function; the ranks share rank 0's run folder
    (:mod:`recstack.training.ranks`), only rank 0 writes into it, and every rank returns rank 0's metrics.

    Ctrl-C or SIGTERM during ``trainer.fit`` stops the run with ``checkpoints/interrupted.ckpt`` and exit status 1
    (resume from ``checkpoints/last.ckpt``); before or after the trainer it raises ``SystemExit(128 + signal)``, without
    a traceback; a second one exits at once (see :mod:`recstack.training.signals`).
    """
    threads = torch.get_num_threads()
    if cfg.get("torch_threads"):
        # On a CPU shared with other jobs, 2 spinning intra-op threads ran ~15x slower than 1 (measured on the 2-core
        # dev machine at load 7); null keeps torch's default. Restored afterwards: it is process-wide.
        torch.set_num_threads(int(cfg.torch_threads))
    interrupts: InterruptHandler | None = None
    try:
        with interrupt_handling() as interrupts:
            return _train(cfg, split, interrupts, extra_callbacks)
    except KeyboardInterrupt:
        # Inside the trainer Lightning turns our KeyboardInterrupt into sys.exit(1); one that gets here came outside
        # it, and the handler has already said what was kept.
        status = interrupts.exit_status() if interrupts is not None else None
        if status is None:  # not a signal our handler took (no handler outside the main thread)
            raise
        raise SystemExit(status) from None
    finally:
        torch.set_num_threads(threads)


def _train(
    cfg: DictConfig, split: PreparedSplit | None, interrupts: InterruptHandler, extra_callbacks: Sequence[Callback] = ()
) -> TrainResult:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if split is None:
        from recstack.config import prepare_from_config

        split = prepare_from_config(cfg, progress=cfg.get("progress", True))
    refit_epochs = refit.refit_epochs(cfg)
    if refit_epochs is not None:  # refit for deployment: every interaction, a fixed epoch count, no validation
        split, cfg = refit.refit_split(split), refit.refit_config(cfg, refit_epochs)
        log.info("refit: %d epoch(s) on all %d interactions, no validation", refit_epochs, len(split.train))
    run_dir = _run_dir(cfg, split)
    _refuse_silent_resume(run_dir, cfg.get("ckpt_path"))
    cfg = copy.deepcopy(cfg)  # the caller's config stays as it was
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)  # callbacks and loggers interpolate ${run_dir}
    if ranks.is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        _save_config(cfg, run_dir, split)
    log.info("run folder %s; %r", run_dir, split)

    model = build_model(
        cfg.model,
        split,
        text_side_input=cfg.fit.text_side_input,
        text_cache_dir=cfg.text_cache_dir,
        progress=cfg.get("progress", True),
    )
    if not hasattr(model, "loss"):
        return _fit_baseline(cfg, model, split, run_dir)

    datamodule = instantiate(cfg.datamodule, _partial_=True)(split=split)
    module = RecommenderModule(model, optimizer=instantiate(cfg.optimizer), split=split, ks=tuple(cfg.ks))
    # First, so that a second signal can end a shutdown that hangs in a later callback's on_exception hook.
    callbacks = [SecondSignalExits(interrupts)]
    callbacks += [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    callbacks += list(extra_callbacks)
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values() if c is not None]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_="all")

    start = time.perf_counter()
    with interrupts.inside_trainer(), ranks.handed_down(run_dir):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    train_seconds = time.perf_counter() - start
    epochs = max(trainer.current_epoch, 1)

    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    if cfg.get("evaluate_test", True):
        # The test split is read once, with the best weights restored (without checkpoints: the last weights).
        with interrupts.inside_trainer():
            trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
    elif best_path:  # tuning: restore the best weights, never look at the test split
        module.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=False)["state_dict"])
    module.to(torch.device("cpu"))
    metrics: dict[str, Any] | None = None
    if trainer.is_global_zero:  # under DDP the other ranks hold the same weights: rank 0 evaluates and writes
        best_epoch = None
        if best_path:
            best_epoch = int(torch.load(best_path, map_location="cpu", weights_only=False)["epoch"])
        metrics = {
            "valid": None if refit.is_refit(cfg) else module.evaluate("valid"),
            "test": module.last_metrics.get("test"),
            "train_seconds": train_seconds,
            "epochs": epochs,
            "seconds_per_epoch": train_seconds / epochs,
            "best_epoch": best_epoch,
            # Still improving when it stopped: the cap (or a deadline) ended it, not early stopping.
            "best_epoch_is_last": best_epoch is not None and best_epoch == epochs - 1,
        }
        if refit.is_refit(cfg):  # its last epoch is its best by definition
            metrics.update(best_epoch_is_last=False, refit=refit.refit_record(cfg, split))
        if metrics["best_epoch_is_last"]:
            log.warning(
                "the best validation epoch is the last one (epoch %d of %d, max_epochs=%s): the run was still "
                "improving, so the cap is too low; raise fit.max_epochs",
                best_epoch,
                epochs,
                trainer.max_epochs,
            )
        runs.write_metrics(run_dir, metrics)
    metrics = trainer.strategy.broadcast(metrics, src=0)  # one process: returns its argument
    assert metrics is not None
    _close_process_group(trainer)
    if metrics["test"] is not None:
        log.info("test %s", {k: round(v, 4) for k, v in metrics["test"].items()})
    return TrainResult(run_dir=run_dir, metrics=metrics, model=model.eval())
