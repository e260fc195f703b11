"""recstack-retrain end to end on the synthetic data set (real training, export, BentoML store and MLflow registry):
a first deployment, a full cycle judging the candidate against the serving bundle, a refused gate (exit 99), a
serving bundle that has seen the whole hold-out (exit 10), and a cycle that retrains a Wide & Deep re-ranker too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from recstack.config import compose
from recstack.retrain.cycle import CycleResult, run_cycle
from recstack.retrain.outcome import ExitCode

pytestmark = [
    pytest.mark.slow,
    # Lightning's MLFlowLogger renames val/ndcg@10 to val/ndcg10 (MLflow allows no '@') and says so for every metric.
    pytest.mark.filterwarnings("ignore:MLFlow only allows:RuntimeWarning"),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("retrain")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(folder / "bentoml"))
        mp.setenv("RECSTACK_LAKE", str(folder / "no-lake"))  # erasures: a lake with no audit rows
        mp.delenv("RECSTACK_ADMIN_KEY", raising=False)
        yield folder


def config(root: Path, *extra: str):  # type: ignore[no-untyped-def]
    return compose(
        "retrain",
        [
            "data=synthetic",  # 200 users, 100 items, 5,000 interactions
            f"processed_root={root / 'processed'}",
            "fit.max_epochs=3",
            "report=false",  # drawn once, by the full cycle
            f"out={root / 'out'}",
            f"bundles_root={root / 'bundles'}",
            f"registry.dir={root / 'mlruns'}",
            "export.text=false",
            "export.content.enabled=false",
            "export.erasure.redis_url=",
            "index@export.index=flat",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def first(root: Path) -> CycleResult:
    """The first deployment (nothing serving yet): the validation run itself, seen=train_valid, so that it has not
    seen the test stage and can be judged on it by the runs after it."""
    return run_cycle(config(root, "deploy_refit=false", "export.seen=train_valid", "store.enabled=false"))


def steps(result: CycleResult) -> list[str]:
    return [s["step"] for s in result.steps]


def test_the_first_run_deploys_without_comparison(first: CycleResult) -> None:
    assert (first.code, first.decision, first.serving, first.serving_scores) == (ExitCode.OK, "deployed", None, None)
    assert first.gate is not None and first.gate["deploy"] and "no bundle is serving" in first.gate["reason"]
    assert steps(first) == ["registry", "prepare", "serving", "holdout", "train", "evaluate", "gate", "export"]
    assert first.holdout["dropped_seen_by_serving"] == 0 and first.holdout["users"] > 100


def test_a_full_cycle_judges_both_refits_exports_and_registers(root: Path, first: CycleResult) -> None:
    import bentoml

    from recstack.bundle.reader import Bundle
    from recstack.data.prepared import PreparedSplit
    from recstack.retrain.registry import RunRegistry, tracking_uri_for

    result = run_cycle(config(root, "report=true"))  # serving: the registry's last deployed bundle, the first run's
    assert result.code == ExitCode.OK and result.decision == "deployed", result.message
    assert result.serving == first.bundle
    assert steps(result) == [
        "registry", "prepare", "serving", "holdout", "train", "evaluate", "gate", "refit", "export", "register"
    ]  # fmt: skip
    assert all(s["ok"] and s["seconds"] >= 0 for s in result.steps)
    # Both judged on the same hold-out users; the same config and seed trains the same model (delta within tolerance).
    assert result.serving_scores is not None and result.serving_scores["users"] == result.candidate["holdout"]["users"]
    assert result.gate is not None and result.gate["deploy"] and abs(result.gate["delta"]) <= 0.005

    # The deploy bundle: a refit on every interaction, seen lists holding each user's valid and test items.
    bundle = Bundle.load(result.bundle)
    split = PreparedSplit.load(root / "processed" / "synthetic" / result.window["split"])
    assert bundle.manifest.split_hash == split.config_hash + "-refit"
    assert bundle.manifest.metrics["export"]["seen"] == "all"
    everything = (split.matrix("train") + split.matrix("valid") + split.matrix("test")).tocsr()
    assert bundle.seen.nnz == everything.nnz
    refit = json.loads((Path(result.folder) / "refit" / "metrics.json").read_text())["refit"]
    assert refit["epochs"] == result.candidate["offline"]["best_epoch"] + 1 and refit["interactions"] == 5000

    # Registered in the BentoML store, with its metrics; recorded in the run registry with the decision.
    model = bentoml.models.get(result.model_tag)
    assert model.info.labels["split_hash"] == bundle.manifest.split_hash
    assert model.info.metadata["metric/export/seen"] == "all"
    registry = RunRegistry(tracking_uri_for(root / "mlruns"))
    history = registry.history()
    assert list(history["tag:decision"])[-2:] == ["deployed", "deployed"]
    last = history.iloc[-1]
    assert last["tag:model_tag"] == result.model_tag and last["param:window/split"] == result.window["split"]
    assert last["holdout/candidate/ndcg_at_10"] == pytest.approx(result.candidate["holdout"]["metrics"]["ndcg@10"])
    assert "holdout/serving/ndcg_at_10" in history.columns and last["time/refit"] > 0
    assert "candidate-val/ndcg10" in history.columns  # the training curve, through Lightning's MLFlowLogger
    assert registry.last_deployed().bundle == result.bundle  # type: ignore[union-attr]
    report = (root / "out" / "report.html").read_text()
    assert result.name in report and first.name in report and "<svg" in report


def test_a_refused_gate_exits_99_and_deploys_nothing(
    root: Path, first: CycleResult, capsys: pytest.CaptureFixture[str]
) -> None:
    from recstack.cli.retrain import retrain

    before = sorted(p.name for p in (root / "bundles").iterdir())
    # A candidate that learned nothing (learning rate ~0, one epoch) against the first run's bundle.
    status = retrain(config(root, f"serving_bundle={first.bundle}", "fit.lr=1e-9", "fit.max_epochs=1"))
    assert status == ExitCode.GATE_REFUSED == 99
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["decision"] == "refused" and summary["exit"] == 99 and summary["bundle"] is None
    assert "worse than the serving bundle by more than 0.005" in summary["gate"]
    assert list(summary["seconds"]) == ["registry", "prepare", "serving", "holdout", "train", "evaluate", "gate"]
    assert sorted(p.name for p in (root / "bundles").iterdir()) == before


def test_a_serving_bundle_that_saw_the_holdout_ends_the_run_with_exit_10(root: Path, first: CycleResult) -> None:
    from recstack.export.exporter import export_run
    from recstack.retrieval.index import IndexConfig

    saw_all = export_run(first.candidate["run"], root / "saw-all", index_config=IndexConfig(kind="flat"), text=False)
    result = run_cycle(config(root, f"serving_bundle={saw_all}"))
    assert (result.code, result.decision) == (ExitCode.HOLDOUT_NOT_FRESH, "not_fresh")
    assert "has already seen all" in result.message and steps(result)[-1] == "holdout"  # before any training


def test_settings_that_would_fail_late_are_refused_first(root: Path) -> None:
    result = run_cycle(config(root, "service_url=http://127.0.0.1:9"))  # no admin key anywhere
    assert result.code == ExitCode.CONFIG and "no admin API key" in result.message
    assert run_cycle(config(root, "gate.metric=ndcg@5")).code == ExitCode.CONFIG  # not at one of ks
    # A re-ranker on another split than the candidate's: a fixed run, or its own data.
    fixed = run_cycle(config(root, "export.ranker_run=/some/old/run"))
    assert fixed.code == ExitCode.CONFIG and "ranker={}" in fixed.message and steps(fixed) == ["registry"]
    own_data = run_cycle(config(root, "ranker={data: {name: other}}"))
    assert own_data.code == ExitCode.CONFIG and "ranker.data" in own_data.message
    typo = run_cycle(config(root, "ranker={fitt: {max_epochs: 2}}"))
    assert typo.code == ExitCode.CONFIG and "fitt" in typo.message


def test_a_cycle_with_a_ranker_retrains_refits_and_exports_it_with_the_candidate(
    root: Path, first: CycleResult
) -> None:
    from omegaconf import OmegaConf

    from recstack.bundle.reader import Bundle

    # gate.tolerance=1: this is about the re-ranker's path through the cycle, not whether it helps on 200 users.
    cfg = config(
        root,
        f"serving_bundle={first.bundle}",
        "ranker={fit: {max_epochs: 1, negatives: 1}}",
        "gate.tolerance=1",
        "store.enabled=false",
    )
    result = run_cycle(cfg)
    assert result.code == ExitCode.OK and result.decision == "deployed", result.message
    assert steps(result) == [
        "registry", "prepare", "serving", "holdout", "train", "train_ranker", "evaluate", "gate", "refit",
        "refit_ranker", "export",
    ]  # fmt: skip
    assert (result.serving, result.serving_source) == (first.bundle, "serving_bundle")
    assert result.ranker is not None
    ranker_run = OmegaConf.load(Path(result.ranker["run"]) / "config.yaml")
    assert ranker_run.model._target_ == "recstack.models.wide_deep.WideAndDeep" and ranker_run.fit.max_epochs == 1
    # The candidate was judged as served, re-ranked; the serving bundle (no ranker) by retrieval alone.
    assert result.candidate["holdout"]["stages"].get("rerank", 0) > 0
    assert result.serving_scores is not None and "rerank" not in result.serving_scores["stages"]

    # The deploy bundle pairs the two refits, with the blend weight tuned on the validation runs.
    bundle = Bundle.load(result.bundle)
    assert bundle.ranker_path is not None and bundle.manifest.split_hash.endswith("-refit")
    assert bundle.manifest.ranker is not None and bundle.manifest.ranker.blend is not None
    assert bundle.manifest.ranker.blend.weight == result.ranker["blend"]["weight"]
    refit = json.loads((Path(result.folder) / "ranker-refit" / "metrics.json").read_text())["refit"]
    assert refit["epochs"] == result.ranker["offline"]["best_epoch"] + 1 and refit["interactions"] == 5000
