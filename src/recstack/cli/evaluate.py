"""``recstack-evaluate``: fit baselines and/or load trained runs, evaluate them all on one split, write the report.

    recstack-evaluate models=[pop,itemknn,userknn] data=ml100k split=random
    recstack-evaluate runs=[outputs/runs/a,outputs/runs/b] models=[pop]
    recstack-evaluate runs=[outputs/runs/mf-...] bundles=[data/bundles/mf-...]   # + the served pipeline
    recstack-evaluate models=[pop,itemknn] segment_set=outputs/segments/membership.parquet  # + per segment

:func:`evaluate_models` is the plain function (tests and notebooks call it with a composed config); :func:`main` is
the Hydra wrapper around ``configs/evaluate.yaml``.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from recstack.config import config_dir
from recstack.data.prepared import PreparedSplit
from recstack.evaluation.breakdown import read_segment_set
from recstack.evaluation.evaluator import evaluate
from recstack.evaluation.report import ReportPaths, RunEvaluation, write_report
from recstack.models.base import Recommender

INFO_KEYS = ("train_seconds", "epochs", "best_epoch", "seconds_per_epoch")


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def model_config(name: str) -> DictConfig:
    """``configs/model/<name>.yaml``, with a clear error listing the available names."""
    path = config_dir() / "model" / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
        raise ValueError(f"models=[...{name}...]: no configs/model/{name}.yaml; available: {available}")
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    return cfg


def fit_baseline(name: str, split: PreparedSplit) -> tuple[Recommender, float]:
    """Instantiate ``configs/model/<name>.yaml`` for ``split`` and fit it; returns the model and the fit seconds."""
    cfg = model_config(name)
    cls = get_class(cfg._target_)
    if hasattr(cls, "loss") or not hasattr(cls, "fit"):
        raise ValueError(
            f"model {name!r} ({cfg._target_}) is trained by gradient descent, not fitted here: train it with "
            f"`recstack-train model={name}` and pass its folder as runs=[outputs/runs/<run>]"
        )
    model = instantiate(cfg, n_users=split.n_users, n_items=split.n_items)
    started = time.perf_counter()
    model.fit(split)
    return model, time.perf_counter() - started


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    taken.add(candidate)
    return candidate


def evaluate_models(cfg: DictConfig) -> ReportPaths:
    """Everything ``recstack-evaluate`` does, from a composed ``evaluate`` config; returns the report's paths."""
    models = list(cfg.get("models") or [])
    run_dirs = [Path(str(d)) for d in (cfg.get("runs") or [])]
    bundle_dirs = [Path(str(d)) for d in (cfg.get("bundles") or [])]
    if not models and not run_dirs and not bundle_dirs:
        raise ValueError(
            "nothing to evaluate: pass models=[pop,itemknn,userknn] (fitted here), "
            "runs=[outputs/runs/<run>,...] (trained by recstack-train) and/or bundles=[data/bundles/<name>,...] "
            "(the served pipeline, exported by recstack-export)"
        )
    stage = str(cfg.stage)
    table_ks = [int(k) for k in cfg.table_ks]
    headline = str(cfg.headline)
    device = resolve_device(cfg.get("device"))
    max_memory = int(float(cfg.max_memory_gb) * (1 << 30))
    progress = bool(cfg.get("progress", False))
    # Read before any model is fitted, so a bad membership table fails in a second, not after the evaluation.
    segment_set = read_segment_set(str(cfg.segment_set)) if cfg.get("segment_set") else None
    segment_metrics = [str(m) for m in cfg.get("segment_metrics") or []] or None
    split: PreparedSplit | None = None
    entries: list[tuple[str, Recommender, dict]] = []
    names: set[str] = set()

    if run_dirs:
        from recstack.training.runs import load_run, read_metrics  # only the runs path needs the training package

        for run_dir in run_dirs:
            loaded = load_run(run_dir, device=device)
            if split is None:
                split = loaded.split
            elif loaded.split.config_hash != split.config_hash:
                raise ValueError(
                    f"runs were trained on different splits: {run_dirs[0]} on {split!r}, {run_dir} on "
                    f"{loaded.split!r}; compare runs of one split (same data and split config) per report"
                )
            try:
                recorded = read_metrics(run_dir)
            except (FileNotFoundError, ValueError):
                recorded = {}
            info = {k: recorded[k] for k in INFO_KEYS if k in recorded}
            entries.append((_unique(loaded.name, names), loaded.model, info))
    if models or bundle_dirs:
        if split is None:
            from recstack.config import prepare_from_config

            split = prepare_from_config(cfg, progress=progress)
        for name in models:
            model, seconds = fit_baseline(str(name), split)
            entries.append((_unique(str(name), names), model, {"train_seconds": seconds}))
    assert split is not None

    max_k = min(int(cfg.max_k), split.n_items)
    headline_k = int(headline.rsplit("@", 1)[-1]) if "@" in headline else max_k
    ks = sorted({*(k for k in table_ks if k <= max_k), headline_k, max_k})
    evaluations = []
    for name, model, info in entries:
        started = time.perf_counter()
        result = evaluate(
            model,
            split,
            stage,  # type: ignore[arg-type]
            ks,
            max_memory_bytes=max_memory,
            device=device,
            keep_per_user=True,
            progress=False,
        )
        info = {**info, "eval_seconds": time.perf_counter() - started}
        evaluations.append(RunEvaluation(name, result, info))
        if progress:
            print(f"{name}: {headline} = {result.metrics[headline]:.4f}")
    for bundle_dir in bundle_dirs:
        from recstack.offline.report import evaluate_bundle

        for evaluation in evaluate_bundle(bundle_dir, split, stage, ks):  # type: ignore[arg-type]
            evaluations.append(evaluation)
            if progress:
                print(f"{evaluation.name}: {headline} = {evaluation.result.metrics[headline]:.4f}")
    paths = write_report(
        evaluations,
        split,
        Path(str(cfg.out_dir)),
        table_ks=[k for k in table_ks if k <= max_k],
        headline=headline,
        title=cfg.get("title"),
        segment_set=segment_set,
        segment_metrics=segment_metrics,
    )
    print(f"report: {paths.html}\n        {paths.markdown}\n        {paths.metrics_json}")
    print(f"out_dir: {paths.out_dir}")
    return paths


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate_models(cfg)


if __name__ == "__main__":
    main()
