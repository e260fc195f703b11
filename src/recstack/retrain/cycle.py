"""One retrain run, step by step (each timed, each failure its exit code: :mod:`.outcome`):

1. **prepare** the window's split (``data`` / ``split`` as ``recstack-train`` composes them; the lake's newest days as
   the hold-out: :mod:`.window`);
2. **serving**: find the bundle now serving: the service's own answer (``GET <service_url>/admin/metadata``) when a
   service is configured, else ``serving_bundle``, else the registry's last deployed one (:func:`find_serving`);
3. **holdout**: the split's test stage without what that bundle has seen (:func:`.holdout.build_holdout`);
4. **train** the candidate: :func:`recstack.training.train.train` on the composed config (validation picks its epoch);
   **train_ranker**, with ``ranker`` set: the Wide & Deep re-ranker on the same split (:func:`ranker_config`);
5. **evaluate** the candidate (exported with ``seen=train_valid`` and its re-ranker, whose blend weight is tuned on
   validation, judged through the served pipeline) and the serving bundle on the same hold-out, by id
   (:func:`.holdout.score_bundle`);
6. **gate** (:func:`.gate.decide`): refused -> exit 99, the serving bundle stays;
7. **refit** on every interaction for the candidate's best epoch count (``refit.from_run``, :mod:`recstack.training.refit`),
   and **refit_ranker** the re-ranker likewise for its own;
8. **export** the deploy bundle (``export.seen=all``, the re-ranker with the blend weight tuned in step 5) to
   ``<bundles_root>/<run name>``;
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
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from recstack.bundle.layout import MANIFEST
from recstack.config import config_dir
from recstack.retrain.gate import GateDecision, decide
from recstack.retrain.holdout import HoldoutScore
from recstack.retrain.outcome import ExitCode, RetrainError
from recstack.retrain.registry import DEPLOYED, RunRegistry, tracking_uri_for, training_logger
from recstack.retrain.steps import Steps

if TYPE_CHECKING:
    from recstack.bundle.reader import Bundle
    from recstack.data.prepared import PreparedSplit

log = logging.getLogger("recstack.retrain")
# How a run that did not deploy is tagged in the registry, by exit code (anything else: "failed").
_DECISION_TAGS = {ExitCode.GATE_REFUSED: "refused", ExitCode.HOLDOUT_NOT_FRESH: "not_fresh"}
RANKER_MODEL = "wide_deep"
# Settings the re-ranker shares with the candidate: overriding them would train it on another split (refused).
_RANKER_SHARED = ("data", "split", "processed_root", "run_dir", "refit", "ranker")


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
    serving_source: str | None = None
    """Where ``serving`` came from: ``service`` (its /admin/metadata), ``serving_bundle``, ``registry``, or ``none``."""
    holdout: dict[str, Any] = field(default_factory=dict)
    candidate: dict[str, Any] = field(default_factory=dict)
    ranker: dict[str, Any] | None = None
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


@dataclass(frozen=True)
class ServingRef:
    """The bundle now serving, as found: a folder or a model tag, where it came from, and (from the service) the
    manifest digest the service reports, which the bundle read here must have."""

    ref: str | None
    source: str
    digest: str | None = None


def _readable(path: Path) -> bool:
    try:
        return (path / MANIFEST).is_file() and bool((path / MANIFEST).read_bytes())
    except OSError:
        return False


def _from_service(cfg: DictConfig, key: str | None) -> ServingRef | None:
    """What the service at ``service_url`` says it serves on ``reload.arm`` (its first arm when null); None when it
    cannot say (unreachable, or a service without ``/admin/metadata``), after a warning."""
    from recstack.retrain.reload import METADATA_PATH, ServiceError, served_bundles

    url = str(cfg.service_url)
    assert key is not None  # _check_settings found one
    try:
        arms = served_bundles(url, key, timeout_s=float(cfg.reload.timeout_s))
    except ServiceError as exc:
        if exc.status in (401, 403):
            raise RetrainError(
                ExitCode.CONFIG,
                f"{exc}: the service refuses this admin key, so it would refuse the reload too; give a key of role "
                "admin ($RECSTACK_ADMIN_KEY or reload.key_file)",
            ) from None
        log.warning(
            "the service could not say which bundle it serves (%s); falling back to serving_bundle, else the registry",
            exc,
        )
        return None
    wanted = cfg.reload.get("arm")
    chosen = next((a for a in arms if wanted is None or a.arm == str(wanted)), None)
    if chosen is None:
        known = ", ".join(str(a.arm) for a in arms) or "none"
        raise RetrainError(
            ExitCode.CONFIG,
            f"reload.arm={wanted}: the service at {url} serves no such arm (its arms: {known}); name one of them",
        )
    if _readable(Path(chosen.bundle)):
        return ServingRef(chosen.bundle, "service", chosen.digest)
    # Served from the BentoML store (named by its tag, or packed in a Bento): that model in this machine's store will
    # do (load_serving checks its digest).
    tags = list(dict.fromkeys(t for t in (chosen.ref, chosen.tag) if t != chosen.bundle and ":" in t))
    for tag in tags:
        try:
            return ServingRef(str(resolve_bundle(tag)), "service", chosen.digest)
        except RetrainError:
            pass
    raise RetrainError(
        ExitCode.CONFIG,
        f"the service at {url} serves {chosen.tag} from {chosen.bundle} (arm {chosen.arm}), which this machine cannot "
        f"read{f', and the model {tags[0]} is not in its BentoML store' if tags else ''}: "
        "run the retrain where that folder (or the model store) is mounted at the same path, or stop asking the "
        f"service ({METADATA_PATH}) with service_url=null and name the bundle with serving_bundle=<folder or tag>",
    )


def find_serving(cfg: DictConfig, registry: RunRegistry, key: str | None) -> ServingRef:
    """The bundle now serving: what the service reports when ``service_url`` is set, else ``serving_bundle``, else
    the registry's last deployed bundle, else none (the first deployment)."""
    if cfg.get("service_url"):
        found = _from_service(cfg, key)
        if found is not None:
            if cfg.get("serving_bundle"):
                log.info("serving_bundle=%s not used: the service says what it serves", cfg.serving_bundle)
            return found
    if cfg.get("serving_bundle"):
        return ServingRef(str(cfg.serving_bundle), "serving_bundle")
    last = registry.last_deployed()
    if last is None:
        return ServingRef(None, "none")
    if last.bundle and (Path(last.bundle) / MANIFEST).is_file():
        return ServingRef(last.bundle, "registry")
    if last.model_tag:
        return ServingRef(last.model_tag, "registry")
    raise RetrainError(
        ExitCode.CONFIG,
        f"the registry's last deployed run {last.run_id} names bundle {last.bundle!r}, which no longer exists and has "
        "no model tag; name the bundle now serving with serving_bundle=<folder or tag>",
    )


def load_serving(found: ServingRef) -> Bundle | None:
    """The bundle ``found`` names, loaded (None: nothing serves yet); one the service reported must have the digest
    it reported, else this machine's folder of that name is another bundle (``ExitCode.CONFIG``)."""
    from recstack.bundle.reader import Bundle

    if found.ref is None:
        return None
    bundle = Bundle.load(resolve_bundle(found.ref))
    if found.digest is not None and bundle.manifest.digest() != found.digest:
        raise RetrainError(
            ExitCode.CONFIG,
            f"{found.ref} on this machine is not the bundle the service serves (manifest digest "
            f"{bundle.manifest.digest()[:12]}, the service's {found.digest[:12]}): mount the service's bundles here "
            "at the same path, or name the bundle with serving_bundle=<folder or tag> and service_url=null",
        )
    return bundle


def ranker_config(cfg: DictConfig) -> DictConfig | None:
    """The re-ranker's training config, None when ``cfg.ranker`` is null: the candidate's (the same data and split;
    by default the same seed, trainer and callbacks) with Wide & Deep's model (``configs/model/wide_deep.yaml``) and training settings (train.yaml's
    ``fit`` under ``configs/fit/wide_deep.yaml``, as ``recstack-train model=wide_deep`` composes them) in place of the
    candidate's, and ``cfg.ranker`` merged over it. Refused (``ExitCode.CONFIG``): anything but a mapping, a key the
    training config does not have, or one it shares with the candidate (``_RANKER_SHARED``)."""
    node = cfg.get("ranker")
    if node is None:
        return None
    if not isinstance(node, DictConfig):
        raise RetrainError(
            ExitCode.CONFIG,
            f"ranker={node!r}: give null (no re-ranker) or a mapping of Wide & Deep training overrides ({{}} for its "
            "defaults, e.g. ranker={fit: {max_epochs: 10}})",
        )
    shared = sorted(set(node) & set(_RANKER_SHARED))
    if shared:
        raise RetrainError(
            ExitCode.CONFIG,
            f"ranker.{shared[0]}: the re-ranker trains on the candidate's window and split (the bundle pairs them "
            "by split); set it at the top level for both",
        )
    root = config_dir()
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.model = OmegaConf.load(root / "model" / f"{RANKER_MODEL}.yaml")
        out.fit = OmegaConf.merge(
            OmegaConf.load(root / "train.yaml").fit, OmegaConf.load(root / "fit" / f"{RANKER_MODEL}.yaml")
        )
        out.ranker = None
    try:
        merged = OmegaConf.merge(out, node)
    except Exception as exc:  # omegaconf's ConfigKeyError / ValidationError: a key or value the config refuses
        reason = str(exc).splitlines()[0]
        raise RetrainError(
            ExitCode.CONFIG, f"ranker: {reason} (its keys are the training config's: model, fit, trainer, ...)"
        ) from None
    assert isinstance(merged, DictConfig)
    return merged


def _check_settings(cfg: DictConfig) -> tuple[str | None, DictConfig | None]:
    """Settings that would fail hours later, refused up front; returns the admin key when a service is configured and
    the re-ranker's training config when one is (:func:`ranker_config`)."""
    tolerance = float(cfg.gate.tolerance)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise RetrainError(ExitCode.CONFIG, f"gate.tolerance={cfg.gate.tolerance}: give a number >= 0 (e.g. 0.005)")
    metric = str(cfg.gate.metric)
    k = metric.rpartition("@")[2]
    if not k.isdigit() or int(k) not in [int(x) for x in cfg.ks]:
        raise RetrainError(ExitCode.CONFIG, f"gate.metric={metric}: name a metric at one of ks={list(cfg.ks)}")
    if cfg.export.get("ranker_run"):
        raise RetrainError(
            ExitCode.CONFIG,
            f"export.ranker_run={cfg.export.ranker_run}: a re-ranker trained on another split cannot join the "
            "candidate; set ranker={} (or ranker={fit: {...}}) to train one with it on the same window",
        )
    ranker = ranker_config(cfg)
    if not cfg.get("service_url"):
        return None, ranker
    from recstack.retrain.reload import admin_key

    try:
        return admin_key(cfg.reload.get("key_env"), cfg.reload.get("key_file")), ranker
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


def _refit(
    cfg: DictConfig,
    from_run: Path,
    folder: Path,
    name: str,
    registry: RunRegistry,
    run_id: str,
    split: PreparedSplit,
    *,
    metrics_key: str,
) -> Path:
    """Train ``cfg`` again in ``folder / name`` as the refit of ``from_run`` (see ``cfg.refit``), log its ``refit``
    metrics under ``metrics_key`` and return its run folder."""
    from recstack.training.train import train

    refit_cfg = _train_config(cfg, folder / name, registry, run_id, name)
    with open_dict(refit_cfg):
        refit_cfg.refit.from_run = str(from_run)
    refitted = train(refit_cfg, split=split)
    registry.log_metrics(run_id, {metrics_key: refitted.metrics.get("refit", {})})
    return refitted.run_dir


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
    key, ranker_cfg = _check_settings(cfg)
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
        found = find_serving(cfg, registry, key)
        ref = found.ref
        result.serving, result.serving_source = ref, found.source
        serving = load_serving(found)
        registry.set_tags(run_id, {"serving": ref, "serving_source": found.source})
        log.info("serving bundle: %s", f"{ref} (from {found.source})" if ref else "none (the first deployment)")
        if serving is not None and serving.ranker_path is not None and ranker_cfg is None:
            log.warning("the serving bundle has a re-ranker and ranker=null: the candidate is judged without one")

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

    ranked = None
    if ranker_cfg is not None:
        with steps.step("train_ranker", ExitCode.TRAIN):
            ranked = train(_train_config(ranker_cfg, folder / "ranker", registry, run_id, "ranker"), split=split)
            result.ranker = {"run": str(ranked.run_dir), "offline": ranked.metrics}
            registry.log_metrics(run_id, {"ranker": ranked.metrics})

    with steps.step("evaluate", ExitCode.EVALUATE):
        from recstack.export.from_config import export_bundle_from_config

        judged = folder / "candidate-bundle"
        # seen=train_valid: what the offline evaluator masks on the test stage; no text vectors or content section,
        # which change no answer here (no live items), to keep it quick; no fold-in, so the blend weight is tuned on
        # what the candidate knew (export.fold_in applies to the deployed bundle).
        export_bundle_from_config(
            _export_config(
                cfg,
                trained.run_dir,
                judged,
                ranker_run=None if ranked is None else str(ranked.run_dir),
                seen="train_valid",
                fold_in=False,
                text=False,
                content={"enabled": False},
            )
        )
        blend = None
        if ranked is not None:  # tuned on validation, as recstack-export does; the refit takes the same weight
            from recstack.offline.blend import tune_and_record

            blend = tune_and_record(judged, split)
            assert result.ranker is not None
            result.ranker["blend"] = {"weight": blend.weight, "metric": blend.metric, "grid": dict(blend.grid)}
            registry.log_metrics(run_id, {"ranker": {"blend_weight": blend.weight}})
            log.info("re-ranker blend weight %.1f (%s)", blend.weight, blend.metric)
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
            deploy_run = _refit(cfg, trained.run_dir, folder, "refit", registry, run_id, split, metrics_key="refit")

    deploy_ranker = None if ranked is None else ranked.run_dir
    if ranked is not None and ranker_cfg is not None and cfg.get("deploy_refit", True):
        with steps.step("refit_ranker", ExitCode.TRAIN):
            deploy_ranker = _refit(
                ranker_cfg, ranked.run_dir, folder, "ranker-refit", registry, run_id, split, metrics_key="ranker_refit"
            )

    with steps.step("export", ExitCode.EXPORT):
        from recstack.bundle.writer import record_blend

        bundle = export_bundle_from_config(
            _export_config(
                cfg,
                deploy_run,
                Path(cfg.bundles_root) / result.name,
                ranker_run=None if deploy_ranker is None else str(deploy_ranker),
            )
        )
        if blend is not None:  # a refit has no validation left to tune on: the validation runs' weight
            record_blend(bundle, blend)
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
