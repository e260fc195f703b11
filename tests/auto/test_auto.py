"""recstack-auto end to end on the tiny synthetic data (configs/data/synthetic.yaml): real studies, a winner chosen
on validation, refitted and read on test once, a bundle, the reports; and the bad input refused before any data."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from recstack.auto.auto import AutoResult, auto
from recstack.auto.candidates import build_candidates
from recstack.auto.finish import refit_winner
from recstack.bundle.reader import Bundle
from recstack.config import compose
from recstack.training.runs import load_run, load_split

pytestmark = pytest.mark.slow

# Trial limits, not the budget, end every study here on an idle machine, so the run is short (~30 s) and the same
# each time; a loaded machine may cut trials by the deadlines, and nothing below depends on how many ran.
FAST = [
    "data=synthetic",
    "models=[pop,ease,mf,lightgcn]",  # one of each kind (untuned, cheap, deep x2 for halving); ItemKNN runs as EASE does
    "torch_threads=1",
    "export.text=false",
    "cheap_trials=2",
    "deep_trials=2",
    "cheap_share=0.3",
    "+per_model.ease.tune.min_trial=1s",
    "+per_model.mf.tune.min_trial=2s",
    "+per_model.mf.fit.max_epochs=3",
    "+per_model.lightgcn.tune.min_trial=2s",
    "+per_model.lightgcn.fit.max_epochs=1",  # its best epoch is always its last: the flag must reach the reports
]


def auto_config(tmp: Path, *overrides: str):
    return compose("auto", [f"processed_root={tmp / 'processed'}", f"out={tmp / 'auto'}", *FAST, *overrides])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> AutoResult:
    return auto(auto_config(tmp_path_factory.mktemp("auto"), "budget=2m"))


def test_every_candidate_ranked_with_its_cost_and_the_best_wins(run: AutoResult) -> None:
    names = [c.name for c in run.candidates if not c.parts]
    assert sorted(names) == ["ease", "lightgcn", "mf", "pop"]
    scores = [c.valid_score for c in run.candidates if c.valid_score is not None]
    assert scores == sorted(scores, reverse=True) and len(scores) >= 2
    assert run.winner == run.candidates[0].name and run.candidates[0].valid_score == max(scores)
    by_name = {c.name: c for c in run.candidates}
    assert by_name["pop"].kind == "untuned" and by_name["pop"].completed == 1
    assert by_name["ease"].kind == "cheap" and by_name["mf"].kind == "deep"
    for c in run.candidates:
        if c.status == "done" and c.kind in ("cheap", "deep"):
            assert 1 <= c.completed <= 2 and c.seconds > 0 and c.given_s > 0 and c.phases
            assert Path(c.study_dir, "report.html").is_file()
    # Cheap ones ran first, in the cheap phase; deep ones in rung 0.
    assert by_name["ease"].phases[0] == "cheap" and by_name["mf"].phases[0] == "rung 0"
    # Each study's first trial is the model's default configuration (configs/model/ease.yaml: l2 300).
    ease = optuna.load_study(
        study_name=Path(by_name["ease"].study_dir).name, storage=f"sqlite:///{by_name['ease'].study_dir}/study.db"
    )
    assert ease.trials[0].params == {"model.l2": 300.0}


def test_test_split_read_once_by_the_winners_refit(run: AutoResult) -> None:
    readings = [p for p in run.out_dir.rglob("metrics.json") if json.loads(p.read_text()).get("test") is not None]
    assert run.refit is not None and run.refit.name == run.winner
    assert set(run.refit.test) >= {"ndcg@10", "recall@10", "map@10"}
    winner = run.candidates[0]
    if winner.parts:  # the two-stage pipeline is read on test through its bundle (test_two_stage.py), not its parts
        assert readings == []
        return
    assert readings == [run.out_dir / "winner" / "metrics.json"]
    # The same configuration and seed, and as many epochs as its trial: the same validation score.
    assert abs(run.refit.valid["ndcg@10"] - winner.valid_score) < 0.002
    if winner.epochs is not None:
        assert run.refit.epochs == winner.epochs


def test_a_trained_winner_is_its_best_trial_not_trained_again(run: AutoResult, tmp_path: Path) -> None:
    # Whichever model won the fixture's run, MF's best trial is finished as a trained winner would be.
    mf = next(c for c in run.candidates if c.name == "mf")
    assert mf.run_dir is not None and mf.valid_score is not None
    trial, winner = Path(mf.run_dir), tmp_path / "winner"
    candidate = next(c for c in build_candidates(auto_config(tmp_path)) if c.name == "mf")
    split = load_split(OmegaConf.load(trial / "config.yaml"))
    finished = refit_winner(candidate, mf, split, winner)
    # The trial's best weights, byte for byte, and no training: no new epoch log, no last.ckpt.
    assert (winner / "checkpoints" / "best.ckpt").read_bytes() == (trial / "checkpoints" / "best.ckpt").read_bytes()
    assert not (winner / "checkpoints" / "last.ckpt").exists()
    metrics = json.loads((winner / "metrics.json").read_text())
    assert metrics["from_trial"] == str(trial) and metrics["test"] == finished.test
    assert abs(finished.valid["ndcg@10"] - mf.valid_score) < 1e-6  # the same weights, the same evaluator
    assert set(finished.test) >= {"ndcg@10", "recall@10", "map@10"} and finished.epochs == mf.epochs
    # The copy is a run folder of its own: it loads, and its config names it.
    assert Path(OmegaConf.load(winner / "config.yaml").run_dir) == winner
    assert load_run(winner).model is not None


def test_the_bundle_holds_the_winner_or_says_which_model_instead(run: AutoResult) -> None:
    assert run.export is not None and run.export.bundle is not None
    bundle = Bundle.load(run.export.bundle)  # verified: every file's sha256
    assert bundle.manifest.model_kind in ("mf", "lightgcn")
    if run.candidates[0].parts:  # the two-stage winner: its own bundle (test_two_stage.py)
        assert run.export.is_winner and run.export.model == run.winner and bundle.item_item is not None
        return
    assert run.export.model == bundle.manifest.model_kind
    if run.winner in ("mf", "lightgcn"):
        assert run.export.is_winner and run.export.run_dir == run.refit.run_dir
    else:  # EASE, ItemKNN, popularity have no vectors to serve: the best exportable candidate, said so
        assert not run.export.is_winner and "best exportable candidate" in run.export.note
        exportable = [c for c in run.candidates if c.name in ("mf", "lightgcn") and c.valid_score is not None]
        assert run.export.model == exportable[0].name


def test_reports_rank_every_candidate_and_flag_the_last_epoch(run: AutoResult) -> None:
    data = json.loads(run.summary_json.read_text())
    assert data["winner"] == run.winner
    assert [c["name"] for c in data["candidates"]] == [c.name for c in run.candidates]
    assert {"seconds", "completed", "pruned", "valid_score", "given_s"} <= set(data["candidates"][0])
    html = run.report.read_text()
    for part in (
        "Candidates",
        "(winner)",
        "How the budget was spent",
        "read once",
        "<svg",
        *data["settings"]["models"],
    ):
        assert part in html, part
    lightgcn = next(c for c in run.candidates if c.name == "lightgcn")
    if lightgcn.completed:  # one epoch: the best is the last, in every trial
        assert lightgcn.best_epoch_is_last and lightgcn.trials_best_is_last == lightgcn.completed
        assert "lightgcn: " in html and "fit.max_epochs" in html
        study_report = Path(lightgcn.study_dir, "report.html").read_text()
        assert "had their best epoch at their last" in study_report and "1 (0) last" in study_report


def test_a_budget_below_one_trial_each_is_refused_naming_the_minimum(tmp_path: Path) -> None:
    # No data is read first: the data home does not exist.
    cfg = compose(
        "auto", [f"processed_root={tmp_path}", "data=ml100k", "data.source.data_home=/nonexistent", "budget=30s"]
    )
    with pytest.raises(ValueError, match=r"budget=30s is too small .* the minimum is 333s .*lightgcn.*budget=6m"):
        auto(cfg)
    assert not list(tmp_path.iterdir())


def test_an_unknown_candidate_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    cfg = compose(
        "auto", [f"processed_root={tmp_path}", "data.source.data_home=/nonexistent", "models=[pop,ease,sasrec]"]
    )
    with pytest.raises(
        ValueError, match=r"unknown candidate model\(s\) \['sasrec'\].*known: ease, itemknn, lightgcn, mf, pop"
    ):
        auto(cfg)
    bad = compose("auto", ["data.source.data_home=/nonexistent", "+per_model.mf.fit.lrr=0.1"])
    with pytest.raises(ValueError, match=r"per_model.mf: fit.lrr is not a setting"):
        auto(bad)
    stray = compose("auto", ["data.source.data_home=/nonexistent", "models=[pop]", "+per_model.mf.fit.lr=0.1"])
    with pytest.raises(ValueError, match=r"per_model names \['mf'\], which are not among models=\['pop'\]"):
        auto(stray)


def test_the_two_stage_pipeline_is_ranked_as_a_candidate(run: AutoResult) -> None:
    # Both kinds completed a trial: one more row per deep candidate, its retrieval re-ranked by EASE, scored as served.
    rows = [c for c in run.candidates if c.parts]
    deep = [c.name for c in run.candidates if c.name in ("mf", "lightgcn") and c.valid_score is not None]
    assert sorted(r.parts for r in rows) == sorted((name, "ease") for name in deep)
    best_deep = next(c for c in run.candidates if c.name in deep)
    (row,) = [r for r in rows if r.parts[0] == best_deep.name]
    assert row.name == f"{best_deep.name} -> ease"
    assert row.kind == "two_stage" and row.status == "done" and row.seconds > 0 and row.phases == ("reserve",)
    assert row.valid_score == row.valid["ndcg@10"] and row.blend_weight is not None
    bundle = Bundle.load(row.bundle)
    assert (
        Path(row.bundle) == run.out_dir / "two_stage" / f"{best_deep.name}-valid-bundle"
        and bundle.item_item is not None
    )
    assert bundle.manifest.ranker.blend is not None and bundle.manifest.ranker.blend.weight == row.blend_weight
    assert bundle.manifest.metrics["export"]["seen"] == "train"
    data = json.loads(run.summary_json.read_text())
    (named,) = [c for c in data["candidates"] if c["parts"] and c["parts"][0] == best_deep.name]
    assert named["parts"] == [best_deep.name, "ease"] and named["valid_score"] == row.valid_score
    assert data["settings"]["two_stage"] is True
    html = run.report.read_text()
    assert f"{best_deep.name} -&gt; ease" in html and "re-rank ease" in html
