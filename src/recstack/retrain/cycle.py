"""One retrain run, step by step (each timed, each failure its exit code: :mod:`.outcome`):

1. **prepare** the window's split (``data`` / ``split`` as ``recstack-train`` composes them; the lake's newest days as
   the hold-out: :mod:`.window`);
2. **serving**: find the bundle now serving (``serving_bundle``, else the registry's last deployed one);
3. **holdout**: the split's test stage without what that bundle has seen (:func:`.holdout.build_holdout`);
4. **train** the candidate: :func:`recstack.training.train.train` on the composed config (validation picks its epoch);
5. **evaluate** the candidate (exported with ``seen=train_valid``, judged through the served pipeline) and the serving
   bundle on the same hold-out, by id (:func:`.holdout.score_bundle`);
6. **gate** (:func:`.gate.decide`): refused -> exit 99, the serving bundle stays;
7. **refit** on every interaction for the candidate's best epoch count (``refit.from_run``, :mod:`recstack.training.refit`);
8. **export** the deploy bundle (``export.seen=all``) to ``<bundles_root>/<run name>``;
9. **register** it in the BentoML model store, with its metrics;
10. **reload**: ``POST <service_url>/admin/reload`` (skipped when ``service_url`` is null).

The run registry is opened first (step **registry**). Every run, whatever its outcome, is recorded there
(:mod:`.registry`) with its config, data window, metrics, gate decision and step times; ``<out>/<run name>/`` keeps
``steps.json`` and ``decision.json``, and the retrain report (:mod:`.report`) is rewritten over all runs.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from recstack.bundle.layout import MANIFEST
from recstack.retrain.gate import GateDecision, decide
from recstack.retrain.holdout import HoldoutScore
from recstack.retrain.outcome import ExitCode, RetrainError
from recstack.retrain.registry import DEPLOYED, RunRegistry, tracking_uri_for, training_logger
from recstack.retrain.steps import Steps

log = logging.getLogger("recstack.retrain")
# How a run that did not deploy is tagged in the registry, by exit code (anything else: "failed").
_DECISION_TAGS = {ExitCode.GATE_REFUSED: "refused", ExitCode.HOLDOUT_NOT_FRESH: "not_fresh"}


@dataclass
class CycleResult:
    """What one retrain run did (also ``decision.json`` in its folder)."""

    name: str
    code: ExitCode = ExitCode.OK
    message: str = ""
    decision: str = "running"
    run_id: str | None = None
    folder: str | None = None
    window: dict[str, Any] = field(default_factory=dict)
    serving: str | None = None
    holdout: dict[str, Any] = field(default_factory=dict)
    candidate: dict[str, Any] = field(default_factory=dict)
    serving_scores: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    bundle: str | None = None
    model_tag: str | None = None
    reload: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["code"] = int(self.code)
        return out


def open_registry(node: DictConfig) -> RunRegistry:
    uri = str(node.tracking_uri) if node.get("tracking_uri") else tracking_uri_for(node.dir)
    try:
        return RunRegistry(uri, str(node.experiment))
    except Exception as exc:  # the store's own errors (MlflowException, SQLAlchemy's) have no common base
        raise RetrainError(ExitCode.REGISTER, f"the run registry at {uri} cannot be opened: {exc}") from exc


def resolve_bundle(ref: str) -> Path:
    """A bundle folder, or the folder of a BentoML model tag (``recstack:latest``, ``recstack:<version>``)."""
    path = Path(ref)
    if (path / MANIFEST).is_file():
        return path
    try:
        from recstack.export.model_store import bundle_path

        return bundle_path(ref)
    except Exception as exc:  # bentoml's NotFound, or a malformed tag
        raise RetrainError(
            ExitCode.CONFIG,
            f"serving bundle {ref!r} is neither a bundle folder nor a model in the BentoML store ({exc}); name the "
            "bundle now serving with serving_bundle=<folder or tag>",
        ) from exc


def _serving_ref(cfg: DictConfig, registry: RunRegistry) -> str | None:
    if cfg.get("serving_bundle"):
        return str(cfg.serving_bundle)
    last = registry.last_deployed()
    if last is None:
        return None
    if last.bundle and (Path(last.bundle) / MANIFEST).is_file():
        return last.bundle
    if last.model_tag:
        return last.model_tag
    raise RetrainError(
        ExitCode.CONFIG,
        f"the registry's last deployed run {last.run_id} names bundle {last.bundle!r}, which no longer exists and has "
        "no model tag; name the bundle now serving with serving_bundle=<folder or tag>",
    )


def _check_settings(cfg: DictConfig) -> str | None:
    """Settings that would fail hours later, refused up front; returns the admin key when a reload is configured."""
    tolerance = float(cfg.gate.tolerance)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise RetrainError(ExitCode.CONFIG, f"gate.tolerance={cfg.gate.tolerance}: give a number >= 0 (e.g. 0.005)")
    metric = str(cfg.gate.metric)
    k = metric.rpartition("@")[2]
    if not k.isdigit() or int(k) not in [int(x) for x in cfg.ks]:
        raise RetrainError(ExitCode.CONFIG, f"gate.metric={metric}: name a metric at one of ks={list(cfg.ks)}")
    if cfg.export.get("ranker_run"):
        raise RetrainError(
            ExitCode.CONFIG, "export.ranker_run is not supported by recstack-retrain yet: retrain a retrieval model"
        )
    if not cfg.get("service_url"):
        return None
    from recstack.retrain.reload import admin_key

    try:
        return admin_key(cfg.reload.get("key_env"), cfg.reload.get("key_file"))
    except ValueError as exc:
        raise RetrainError(ExitCode.CONFIG, f"service_url is set but {exc}") from None


def _train_config(cfg: DictConfig, run_dir: Path, registry: RunRegistry, run_id: str, prefix: str) -> DictConfig:
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.run_dir = str(run_dir)
        out.refit = {"epochs": None, "from_run": None}
        if cfg.registry.get("log_training", True):
            out.logger = {**(out.get("logger") or {}), "mlflow": training_logger(registry, run_id, prefix)}
    return out


def _export_config(cfg: DictConfig, run: Path, out: Path, **values: Any) -> DictConfig:
    node = copy.deepcopy(cfg.export)
    with open_dict(node):
        node.run, node.out = str(run), str(out)
        for key, value in values.items():
            node[key] = value
    return node


def _scores(score: HoldoutScore) -> dict[str, Any]:
    return {
        "metrics": score.metrics,
        "users": score.n_users,
        "cold_users": score.cold_users,
        "unknown_items": score.unknown_items,
        "stages": score.stages,
    }


def _cycle(cfg: DictConfig, result: CycleResult, steps: Steps, registry: RunRegistry) -> None:
    # Each step imports what it needs, so that its wall time includes loading it (what a scheduled run pays).
    assert result.run_id is not None and result.folder is not None
    run_id, folder = result.run_id, Path(result.folder)
    key = _check_settings(cfg)
    ks = tuple(int(k) for k in cfg.ks)

    with steps.step("prepare", ExitCode.DATA):
        from recstack.config import prepare_from_config
        from recstack.retrain.window import data_window, holdout_split

        split_node = holdout_split(cfg, cfg.holdout.get("days"), cfg.holdout.get("valid_days"))
        if split_node is not None:
            cfg = copy.deepcopy(cfg)
            with open_dict(cfg):
                cfg.split = split_node
        split = prepare_from_config(cfg, progress=bool(cfg.get("progress", False)))
        result.window = data_window(split)
        registry.log_params(run_id, {"window": result.window})
        log.info("window %s", json.dumps(result.window))

    with steps.step("serving", ExitCode.EVALUATE):
        from recstack.bundle.reader import Bundle

        ref = _serving_ref(cfg, registry)
        serving = Bundle.load(resolve_bundle(ref)) if ref is not None else None
        result.serving = ref
        log.info("serving bundle: %s", ref or "none (the first deployment)")

    with steps.step("holdout", ExitCode.EVALUATE):
        from recstack.retrain.holdout import build_holdout, score_bundle

        holdout = build_holdout(
            split, serving=serving, max_users=cfg.holdout.get("max_users"), seed=int(cfg.holdout.get("seed", 0))
        )
        result.holdout = {
            "interactions": holdout.n_interactions,
            "users": len(holdout.users),
            "dropped_seen_by_serving": holdout.dropped,
        }
        registry.log_metrics(run_id, {"holdout": result.holdout})
        if not len(holdout.users):
            if holdout.dropped:
                raise RetrainError(
                    ExitCode.HOLDOUT_NOT_FRESH,
                    f"the serving bundle {ref} has already seen all {holdout.dropped} hold-out interactions (it was "
                    "trained on them), so it cannot be judged on them: wait for new data, or keep holdout.days no "
                    "longer than the time between retrains",
                )
            raise RetrainError(ExitCode.DATA, f"the hold-out (test stage) of {split!r} is empty")

    with steps.step("train", ExitCode.TRAIN):
        from recstack.training.train import train

        trained = train(_train_config(cfg, folder / "candidate", registry, run_id, "candidate"), split=split)
        result.candidate = {"run": str(trained.run_dir), "offline": trained.metrics}
        registry.log_metrics(run_id, {"candidate": trained.metrics})

    with steps.step("evaluate", ExitCode.EVALUATE):
        from recstack.export.from_config import export_bundle_from_config

        judged = folder / "candidate-bundle"
        # seen=train_valid: what the offline evaluator masks on the test stage; no text vectors or content section,
        # which change no answer here (no live items), to keep it quick.
        export_bundle_from_config(
            _export_config(cfg, trained.run_dir, judged, seen="train_valid", text=False, content={"enabled": False})
        )
        mine = score_bundle(judged, holdout, ks)
        shutil.rmtree(judged, ignore_errors=True)
        theirs = score_bundle(serving, holdout, ks) if serving is not None else None
        result.candidate["holdout"] = _scores(mine)
        result.serving_scores = None if theirs is None else _scores(theirs)
        registry.log_metrics(
            run_id, {"holdout": {"candidate": mine.metrics, **({"serving": theirs.metrics} if theirs else {})}}
        )

    with steps.step("gate", ExitCode.CONFIG):
        decision: GateDecision = decide(
            mine.metrics,
            None if theirs is None else theirs.metrics,
            metric=str(cfg.gate.metric),
            tolerance=float(cfg.gate.tolerance),
        )
        result.gate = {**asdict(decision), "delta": decision.delta}
        registry.log_metrics(run_id, {"gate": {"delta": decision.delta} if decision.delta is not None else {}})
        log.info("gate: %s: %s", "deploy" if decision.deploy else "REFUSED", decision.reason)
    if not decision.deploy:
        raise RetrainError(ExitCode.GATE_REFUSED, f"gate refused: {decision.reason}; the serving bundle stays")

    deploy_run = trained.run_dir
    if cfg.get("deploy_refit", True):
        with steps.step("refit", ExitCode.TRAIN):
            refit_cfg = _train_config(cfg, folder / "refit", registry, run_id, "refit")
            with open_dict(refit_cfg):
                refit_cfg.refit.from_run = str(trained.run_dir)
            refitted = train(refit_cfg, split=split)
            deploy_run = refitted.run_dir
            registry.log_metrics(run_id, {"refit": refitted.metrics.get("refit", {})})

    with steps.step("export", ExitCode.EXPORT):
        bundle = export_bundle_from_config(_export_config(cfg, deploy_run, Path(cfg.bundles_root) / result.name))
        result.bundle = str(bundle.resolve())
        registry.set_tags(run_id, {"bundle": result.bundle})

    if cfg.store.get("enabled", True):
        with steps.step("register", ExitCode.REGISTER):
            from recstack.export.model_store import save_to_store

            result.model_tag = save_to_store(bundle, name=str(cfg.store.name))
            registry.set_tags(run_id, {"model_tag": result.model_tag})

    if cfg.get("service_url"):
        with steps.step("reload", ExitCode.RELOAD):
            from recstack.retrain.reload import ReloadError, request_reload

            assert key is not None
            target = result.model_tag or result.bundle
            try:
                answer = request_reload(
                    str(cfg.service_url), target, key, arm=cfg.reload.get("arm"), timeout_s=float(cfg.reload.timeout_s)
                )
            except ReloadError as exc:
                raise RetrainError(
                    ExitCode.RELOAD, f"{exc}; the bundle {target} is registered but not served: reload it by hand"
                ) from None
            result.reload = {"bundle": answer.bundle, "previous": answer.previous}
            log.info("service serves %s (was %s)", answer.bundle, answer.previous)
    result.decision = DEPLOYED


def run_cycle(cfg: DictConfig) -> CycleResult:
    """Run one retrain (``cfg``: a composed ``configs/retrain.yaml``) and record it; never raises a
    :class:`RetrainError` (its code is the result's), other exceptions propagate after the run is recorded."""
    name = "retrain-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = Path(cfg.out) / name
    folder.mkdir(parents=True, exist_ok=True)
    result = CycleResult(name=name, folder=str(folder))
    steps = Steps()
    try:
        with steps.step("registry", ExitCode.REGISTER):
            registry = open_registry(cfg.registry)
            result.run_id = registry.start(name, {"decision": "running"})
    except RetrainError as exc:
        result.code, result.message, result.decision = exc.code, str(exc), "failed"
        _write(folder, result, steps)
        return result
    registry.log_dict(result.run_id, OmegaConf.to_container(cfg, resolve=True), "config.json")
    status = "FAILED"
    try:
        _cycle(cfg, result, steps, registry)
        status = "FINISHED"
    except RetrainError as exc:
        result.code, result.message = exc.code, str(exc)
        result.decision = _DECISION_TAGS.get(exc.code, "failed")
        if exc.code in _DECISION_TAGS:
            status = "FINISHED"  # a decision, not a failure
        log.log(logging.WARNING if status == "FINISHED" else logging.ERROR, "%s", exc)
    except BaseException as exc:  # a bug (traceback, exit 1) or an interruption: recorded, then raised on
        result.decision, result.message = "failed", f"{type(exc).__name__}: {exc}"
        status = "FAILED" if isinstance(exc, Exception) else "KILLED"
        raise
    finally:
        _record(registry, result, steps, status)
        _write(folder, result, steps)
        if cfg.get("report", True):
            _report(registry, Path(cfg.out), str(cfg.gate.metric))
    return result


def _record(registry: RunRegistry, result: CycleResult, steps: Steps, status: str) -> None:
    assert result.run_id is not None
    result.steps = steps.as_list()
    try:
        registry.log_metrics(result.run_id, {"time": steps.seconds(), "exit_code": int(result.code)})
        registry.set_tags(result.run_id, {"decision": result.decision, "exit_code": int(result.code)})
        registry.log_dict(result.run_id, result.to_json(), "decision.json")
        registry.finish(result.run_id, status)
    except Exception:  # the registry failing must not hide the run's own outcome; the folder keeps it
        log.exception("the run registry could not record %s", result.name)


def _write(folder: Path, result: CycleResult, steps: Steps) -> None:
    result.steps = steps.as_list()
    (folder / "steps.json").write_text(json.dumps(result.steps, indent=2) + "\n")
    (folder / "decision.json").write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")


def _report(registry: RunRegistry, out: Path, metric: str) -> None:
    from recstack.retrain.report import write_report

    try:
        path = write_report(registry.history(), out / "report.html", title=registry.experiment, gate_metric=metric)
        log.info("report: %s", path)
    except Exception:  # a report is a view: failing to draw it changes nothing about the run
        log.exception("the retrain report could not be written")
