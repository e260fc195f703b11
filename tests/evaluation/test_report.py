"""The report files: written, self-contained, with every section, and refusing runs that cannot be compared."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import DotModel, random_split

from recstack.evaluation import breakdown
from recstack.evaluation.evaluator import evaluate
from recstack.evaluation.report import RunEvaluation, write_report


def three_runs(split):
    runs = []
    for seed, name in enumerate(("alpha", "beta", "gamma")):
        res = evaluate(
            DotModel(split.n_users, split.n_items, seed=seed),
            split,
            "test",
            (10, 20, min(50, split.n_items)),
            keep_per_user=True,
        )
        runs.append(RunEvaluation(name, res, {"train_seconds": 1.5 * seed}))
    return runs


def test_report_files_hold_every_section(tmp_path: Path) -> None:
    split = random_split(120, 80, per_user=30, seed=4)
    runs = three_runs(split)
    paths = write_report(runs, split, tmp_path / "report")
    page = paths.html.read_text()
    for needle in (
        "Comparison",
        "Metrics at K = 1…50",
        "By training interactions",
        "By gender",
        "By age",
        "Popularity bias",
        "wins overall on ndcg@10",
        'class="best"',
    ):
        assert needle in page, needle
    assert page.count("<svg") >= 5  # curves, 3 segmentations, popularity
    # Self-contained: nothing fetched from elsewhere.
    for fetch in ("<link", "<script src", 'src="http', 'href="http', "url(http"):
        assert fetch not in page
    md = paths.markdown.read_text()
    assert "## Comparison" in md and "### By gender" in md and "| model @10 |" in md
    data = json.loads(paths.metrics_json.read_text())
    assert [r["name"] for r in data["runs"]] == ["alpha", "beta", "gamma"]
    assert len(data["runs"][0]["curves"]["ndcg"]) == 50
    assert data["runs"][0]["metrics"]["ndcg@10"] == runs[0].result.metrics["ndcg@10"]
    assert set(data["segments"]) == {"training interactions", "gender", "age"}
    best = max(runs, key=lambda r: r.result.metrics["ndcg@10"]).name
    assert data["verdict"].startswith(f"{best} wins overall")


def test_verdict_names_the_winner_and_the_segments_it_loses(tmp_path: Path) -> None:
    split = random_split(60, 40, per_user=20, seed=2)
    runs = three_runs(split)
    data = json.loads(write_report(runs, split, tmp_path).metrics_json.read_text())
    winner = data["verdict"].split(" ")[0]
    for seg_name, winners in data["segment_winners"].items():
        for label, w in winners.items():
            values = data["segments"][seg_name][label]
            assert values[w] == max(values[r["name"]] for r in data["runs"])
            if w != winner:
                assert f"{w} for {seg_name} = {label}" in data["verdict"]


def test_report_refuses_runs_that_cannot_be_compared(tmp_path: Path) -> None:
    split = random_split(40, 30, per_user=12)
    runs = three_runs(split)
    with pytest.raises(ValueError, match="keep_per_user=True"):
        write_report([RunEvaluation("x", replace(runs[0].result, per_user=None))], split, tmp_path)
    with pytest.raises(ValueError, match="unique"):
        write_report([runs[0], runs[0]], split, tmp_path)
    other = evaluate(DotModel(40, 30), split, "valid", (10, 20), keep_per_user=True)
    with pytest.raises(ValueError, match="different stages"):
        write_report([runs[0], RunEvaluation("v", other)], split, tmp_path)
    with pytest.raises(ValueError, match="lacks"):
        write_report(runs, split, tmp_path, table_ks=(5,))
    with pytest.raises(ValueError, match="at least one run"):
        write_report([], split, tmp_path)


def test_segmentations() -> None:
    split = random_split(50, 40, per_user=12)
    users = np.arange(50)
    activity = breakdown.activity_segmentation(split, users)
    assert set(activity.labels) == {"10-50"}  # 10 training items each
    demo = {s.name: s for s in breakdown.demographic_segmentations(split, users)}
    assert set(demo) == {"gender", "age"}  # user_id skipped
    assert set(demo["gender"].labels) == {"F", "M"}
    assert set(demo["age"].labels) <= set(breakdown.AGE_LABELS)
    assert demo["age"].order == tuple(label for label in breakdown.AGE_LABELS if label in set(demo["age"].labels))
