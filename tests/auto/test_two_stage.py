"""The two-stage candidate ("mf -> ease") of recstack-auto on the tiny synthetic data: when it wins, both parts are
refitted, exported together and the pipeline reads the test split once; ``two_stage=false`` leaves it out. Its row
among the others (both kinds completed) is checked in test_auto.py."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest

import recstack.auto.auto as auto_module
import recstack.auto.two_stage as two_stage_module
import recstack.export.exporter as exporter
import recstack.offline.report as offline_report
from recstack.auto.auto import AutoResult, auto, summary
from recstack.auto.candidates import build_candidates
from recstack.bundle.reader import Bundle
from recstack.config import compose

pytestmark = pytest.mark.slow

# One cheap and one deep candidate, one trial each: the smallest search with both parts.
SMALL = [
    "data=synthetic",
    "models=[ease,mf]",
    "torch_threads=1",
    "export.text=false",
    "cheap_trials=1",
    "deep_trials=1",
    "budget=1m",
    "+per_model.ease.tune.min_trial=1s",
    "+per_model.mf.tune.min_trial=2s",
    "+per_model.mf.fit.max_epochs=2",
]


def small_config(tmp: Path, *overrides: str):
    return compose("auto", [f"processed_root={tmp / 'processed'}", f"out={tmp / 'auto'}", *SMALL, *overrides])


@pytest.fixture(scope="module")
def won(tmp_path_factory: pytest.TempPathFactory) -> tuple[AutoResult, Counter, list[Path]]:
    """A run whose two-stage candidate wins: its validation score is raised after it is measured (the synthetic data
    cannot be relied on to make it win), and the stages read by the bundle evaluations and the bundles exported are
    counted."""
    stages: Counter = Counter()
    exported: list[Path] = []
    score, evaluate, export = auto_module.score_two_stage, offline_report.evaluate_bundle, exporter.export_run

    def winning(*args, **kwargs):
        row = score(*args, **kwargs)
        return dataclasses.replace(row, valid_score=row.valid_score + 1.0)

    def counted_evaluate(bundle, split, stage="test", *args, **kwargs):
        stages[stage] += 1
        return evaluate(bundle, split, stage, *args, **kwargs)

    def counted_export(run_dir, out_dir, **kwargs):
        exported.append(Path(out_dir))
        return export(run_dir, out_dir, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auto_module, "score_two_stage", winning)
        mp.setattr(offline_report, "evaluate_bundle", counted_evaluate)
        mp.setattr(exporter, "export_run", counted_export)
        result = auto(small_config(tmp_path_factory.mktemp("two-stage")))
    return result, stages, exported


def test_a_two_stage_winner_refits_both_parts_and_reads_test_once_through_its_bundle(
    won: tuple[AutoResult, Counter, list[Path]],
) -> None:
    run, stages, exported = won
    assert run.winner == "mf -> ease" and run.candidates[0].parts == ("mf", "ease")
    refit = run.refit
    assert refit is not None and refit.name == run.winner
    assert [p.name for p in refit.parts] == ["mf", "ease"]
    assert [Path(p.run_dir) for p in refit.parts] == [run.out_dir / "winner" / "mf", run.out_dir / "winner" / "ease"]
    assert all(p.test == {} for p in refit.parts)  # the parts read no test split ...
    readings = [p for p in run.out_dir.rglob("metrics.json") if json.loads(p.read_text()).get("test") is not None]
    assert readings == []
    assert stages["test"] == 1  # ... the pipeline does, once
    assert set(refit.test) >= {"ndcg@10", "recall@10", "map@10"} and set(refit.valid) >= {"ndcg@10"}
    # Exported twice: the candidate's bundle (best trials), then the winner's (the refits).
    assert exported == [run.out_dir / "two_stage" / "mf-valid-bundle", run.out_dir / "bundle"]
    export = run.export
    assert export is not None and export.is_winner and export.model == run.winner
    assert Path(export.bundle) == run.out_dir / "bundle"
    assert export.run_dir == refit.parts[0].run_dir and export.ranker_run == refit.parts[1].run_dir
    bundle = Bundle.load(export.bundle)
    assert bundle.manifest.model_kind == "mf" and bundle.manifest.ranker.kind == "item_item"
    assert (Path(export.bundle) / "item_item.npy").is_file() and bundle.item_item is not None
    assert bundle.manifest.ranker.blend is not None and bundle.manifest.ranker.blend.weight == refit.blend_weight
    assert export.blend_weight == refit.blend_weight


def test_a_two_stage_winners_reports_name_its_parts_and_blend(won: tuple[AutoResult, Counter, list[Path]]) -> None:
    run, _, _ = won
    data = json.loads(run.summary_json.read_text())
    assert data["winner"] == "mf -> ease" and data["candidates"][0]["parts"] == ["mf", "ease"]
    assert [p["name"] for p in data["refit"]["parts"]] == ["mf", "ease"]
    assert data["refit"]["blend_weight"] == run.refit.blend_weight and data["refit"]["test"]["ndcg@10"] >= 0
    assert data["export"]["ranker_run"] == run.refit.parts[1].run_dir
    html = run.report.read_text()
    assert "the two-stage pipeline mf -&gt; ease" in html and "blend weight" in html
    assert f"NDCG@10 {run.refit.test['ndcg@10']:.4f}" in html
    text = summary(run)
    assert "mf -> ease" in text and "<- winner" in text and "through its bundle" in text


def test_two_stage_false_ranks_single_models_only(tmp_path: Path) -> None:
    run = auto(small_config(tmp_path, "two_stage=false"))
    assert sorted(c.name for c in run.candidates) == ["ease", "mf"]
    assert not (run.out_dir / "two_stage").exists() and run.refit is not None and not run.refit.parts


def test_the_parts_are_the_best_of_each_kind_that_completed(
    won: tuple[AutoResult, Counter, list[Path]], tmp_path: Path
) -> None:
    run, _, _ = won
    by_name = {c.name: c for c in build_candidates(small_config(tmp_path))}
    rows = {c.name: c for c in run.candidates}
    assert two_stage_module.pick_parts([rows["ease"], rows["mf"]], by_name) == [(rows["mf"], rows["ease"])]
    assert two_stage_module.pick_parts([rows["mf"]], by_name) == []  # no item-item candidate completed
    failed = dataclasses.replace(rows["ease"], status="failed", valid_score=None, run_dir=None)
    assert two_stage_module.pick_parts([rows["mf"], failed], by_name) == []
    # Every exportable candidate that completed a trial gets its pair, best first, not only the best one.
    other = dataclasses.replace(rows["mf"], name="lightgcn", valid_score=rows["mf"].valid_score - 0.01)
    by_name["lightgcn"] = dataclasses.replace(by_name["mf"], name="lightgcn")
    pairs = two_stage_module.pick_parts([rows["ease"], rows["mf"], other], by_name)
    assert pairs == [(rows["mf"], rows["ease"]), (other, rows["ease"])]
