"""Per-segment metrics for a segment set (a membership table of possibly overlapping segments) in the report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from eval_helpers import DotModel, make_split, random_split

from recstack.evaluation import breakdown
from recstack.evaluation.evaluator import evaluate
from recstack.evaluation.report import ALL_USERS, NO_SEGMENT, RunEvaluation, write_report


def _runs(split, names=("alpha", "beta")):
    return [
        RunEvaluation(
            name,
            evaluate(
                DotModel(split.n_users, split.n_items, seed=seed), split, "test", (10, 20, 30), keep_per_user=True
            ),
        )
        for seed, name in enumerate(names)
    ]


def _membership() -> pd.DataFrame:
    rows = [("odd", f"u{u}") for u in range(1, 40, 2)]
    rows += [("low", f"u{u}") for u in range(10)]  # overlaps "odd" on u1, u3, ...
    rows += [("low", "u3")]  # a duplicate row: membership is a set
    rows += [("ghosts", "nobody-1"), ("ghosts", "nobody-2"), ("odd", "nobody-1")]  # not in the split
    rows += [("skipped", "u40")]  # in the split, no test item: not evaluated
    return pd.DataFrame(rows, columns=["segment", "user_id"])


def _split_with_unevaluated_user():
    """random_split's 40 users, plus user 40 with training items only (skipped by the evaluator)."""
    base = random_split(40, 30, per_user=12, seed=3)
    pairs = {s: list(zip(getattr(base, s).user_idx, getattr(base, s).item_idx)) for s in ("train", "valid", "test")}
    train = pairs["train"] + [(40, i) for i in range(5)]
    return make_split(train, pairs["valid"], pairs["test"], 41, 30)


def test_segment_means_match_a_direct_computation() -> None:
    split = _split_with_unevaluated_user()
    run = _runs(split)[0]
    per_user = run.result.per_user
    match = breakdown.match_segment_set(breakdown.segment_set_from_frame(_membership()), split, per_user.users)
    assert match.names == ("ghosts", "low", "odd", "skipped")
    n = dict(zip(match.names, match.n_users, strict=True))
    assert n == {"ghosts": 0, "low": 10, "odd": 20, "skipped": 0}
    assert dict(zip(match.names, match.members, strict=True)) == {"ghosts": 2, "low": 10, "odd": 21, "skipped": 1}
    assert dict(zip(match.names, match.not_in_split, strict=True)) == {"ghosts": 2, "low": 0, "odd": 1, "skipped": 0}
    assert match.n_not_in_split == 2 and match.n_not_evaluated == 1
    values = per_user.metrics["ndcg@10"]
    position = {int(u): j for j, u in enumerate(per_user.users)}
    means = breakdown.segment_set_means(per_user, match, "ndcg@10")
    assert means[1] == pytest.approx(values[[position[u] for u in range(10)]].mean())
    assert means[2] == pytest.approx(values[[position[u] for u in range(1, 40, 2)]].mean())
    assert np.isnan(means[0]) and np.isnan(means[3])
    nobody = breakdown.in_no_segment(match)
    assert sorted(int(u) for u in per_user.users[nobody]) == [u for u in range(10, 40, 2)]


def test_report_holds_the_segment_set_table(tmp_path: Path) -> None:
    split = _split_with_unevaluated_user()
    runs = _runs(split)
    seg_set = breakdown.segment_set_from_frame(_membership(), "hand-made.csv")
    paths = write_report(runs, split, tmp_path, segment_set=seg_set)
    data = json.loads(paths.metrics_json.read_text())["segment_set"]
    assert data["source"] == "hand-made.csv"
    assert data["metrics"] == ["ndcg@10", "recall@10", "map@10"]
    assert data["n_not_in_split"] == 2 and data["n_not_evaluated"] == 1
    rows = data["segments"]
    assert list(rows) == [ALL_USERS, "ghosts", "low", "odd", "skipped", NO_SEGMENT]
    assert rows[ALL_USERS]["n_users"] == 40 and rows["low"]["n_users"] == 10 and rows[NO_SEGMENT]["n_users"] == 15
    assert rows["odd"]["members"] == 21 and rows["odd"]["not_in_split"] == 1 and rows["skipped"]["not_evaluated"] == 1
    for run in runs:
        assert rows[ALL_USERS]["metrics"][run.name]["map@10"] == pytest.approx(run.result.metrics["map@10"])
        assert rows["ghosts"]["metrics"][run.name]["ndcg@10"] is None  # no evaluated member: no figure, no error
    # The headline winners of the segments with evaluated users (low, odd, in no segment) join the verdict's count.
    report = json.loads(paths.metrics_json.read_text())
    total = sum(len(w) for w in report["segment_winners"].values()) + 3
    assert f"of the {total} user segments" in report["verdict"]
    page = paths.html.read_text()
    assert "id='segment-set'" in page and "Per segment: ndcg@10, recall@10, map@10" in page
    assert "recall@10 beta" in page and "(in no segment)" in page and "2 are not in the split" in page
    md = paths.markdown.read_text()
    assert "## Per segment: ndcg@10, recall@10, map@10" in md and "| segment | n_users | members |" in md
    assert "| ghosts | 0 | 2 | – |" in md


def test_report_without_a_segment_set_is_unchanged(tmp_path: Path) -> None:
    split = random_split(30, 40, per_user=12)
    paths = write_report(_runs(split), split, tmp_path)
    assert "segment_set" not in json.loads(paths.metrics_json.read_text())
    assert "segment-set" not in paths.html.read_text()


def test_chosen_metrics_and_bad_choices(tmp_path: Path) -> None:
    split = random_split(30, 40, per_user=12)
    runs = _runs(split)
    seg_set = breakdown.segment_set_from_frame(pd.DataFrame({"user_id": ["u1", "u2"], "segment": ["a", "a"]}))
    paths = write_report(runs, split, tmp_path, segment_set=seg_set, segment_metrics=["hit@20"])
    assert json.loads(paths.metrics_json.read_text())["segment_set"]["metrics"] == ["ndcg@10", "hit@20"]
    with pytest.raises(ValueError, match="not evaluated per user"):
        write_report(runs, split, tmp_path, segment_set=seg_set, segment_metrics=["ndcg@5"])
    clash = breakdown.segment_set_from_frame(pd.DataFrame({"user_id": ["u1"], "segment": [ALL_USERS]}))
    with pytest.raises(ValueError, match="may not be named"):
        write_report(runs, split, tmp_path, segment_set=clash)


def test_files_are_read_and_bad_layouts_refused(tmp_path: Path) -> None:
    frame = _membership().assign(entered_ms=np.int64(0))
    frame.to_parquet(tmp_path / "membership.parquet")
    from_dir = breakdown.read_segment_set(tmp_path)  # the output folder of `recstack-segments run`
    assert from_dir.names == ("ghosts", "low", "odd", "skipped") and len(from_dir.membership) == len(frame) - 1
    (tmp_path / "numeric.csv").write_text("user_id,segment\n001,a\n2,b\n")
    assert breakdown.read_segment_set(tmp_path / "numeric.csv").membership["user_id"].tolist() == ["001", "2"]
    pd.DataFrame({"user_id": [1, 2], "segment": ["a", "b"]}).to_parquet(tmp_path / "ints.parquet")
    assert breakdown.read_segment_set(tmp_path / "ints.parquet").membership["user_id"].tolist() == ["1", "2"]

    (tmp_path / "wrong.csv").write_text("user,group\nu1,a\n")
    with pytest.raises(ValueError, match=r"expected columns user_id and segment.*missing \['user_id', 'segment'\]"):
        breakdown.read_segment_set(tmp_path / "wrong.csv")
    frame.assign(left_ms=np.int64(1)).to_parquet(tmp_path / "history.parquet")
    with pytest.raises(ValueError, match="membership history"):
        breakdown.read_segment_set(tmp_path / "history.parquet")
    (tmp_path / "holes.csv").write_text("user_id,segment\nu1,a\n,a\n")
    with pytest.raises(ValueError, match="1 rows lack a user_id or a segment"):
        breakdown.read_segment_set(tmp_path / "holes.csv")
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(ValueError, match=r"use \.parquet or \.csv"):
        breakdown.read_segment_set(tmp_path / "m.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        breakdown.read_segment_set(tmp_path / "absent.parquet")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match=r"without membership\.parquet"):
        breakdown.read_segment_set(tmp_path / "empty_dir")


@pytest.mark.slow
def test_ml100k_report_with_a_hand_made_segment_file(tmp_path: Path) -> None:
    """recstack-evaluate on the real ML-100K with segment_set=<csv>: MovieLens user ids, overlapping segments, and
    ids ML-100K does not have."""
    from recstack.cli.evaluate import evaluate_models
    from recstack.config import compose

    home = Path(os.environ.get("RECSTACK_DATA_HOME", "data/raw"))
    users = pd.read_csv(home / "ml-100k" / "ml-100k.user", sep="\t", dtype=str)  # RecBole's atomic file
    users.columns = [c.split(":")[0] for c in users.columns]
    students = users.loc[users.occupation == "student", "user_id"]
    women = users.loc[users.gender == "F", "user_id"]
    rows = [("students", u) for u in students] + [("women", u) for u in women]
    rows += [("first_100", str(u)) for u in range(1, 101)] + [("first_100", "9999"), ("others", "not-a-user")]
    csv = tmp_path / "segments.csv"
    pd.DataFrame(rows, columns=["segment", "user_id"]).to_csv(csv, index=False)
    cfg = compose(
        "evaluate",
        [
            f"processed_root={tmp_path / 'processed'}",
            f"out_dir={tmp_path / 'report'}",
            "progress=false",
            "models=[pop,itemknn]",
            f"segment_set={csv}",
        ],
    )
    paths = evaluate_models(cfg)
    data = json.loads(paths.metrics_json.read_text())
    table = data["segment_set"]
    assert table["n_not_in_split"] == 2
    evaluated = data["n_users_evaluated"]
    rows_out = table["segments"]
    assert rows_out[ALL_USERS]["n_users"] == evaluated
    assert rows_out["students"]["n_users"] + rows_out["students"]["not_evaluated"] == len(students)
    assert rows_out["women"]["n_users"] + rows_out["women"]["not_evaluated"] == len(women)
    assert rows_out["first_100"]["members"] == 101 and rows_out["first_100"]["not_in_split"] == 1
    assert rows_out["others"]["n_users"] == 0
    for run in data["runs"]:
        assert rows_out[ALL_USERS]["metrics"][run["name"]]["ndcg@10"] == pytest.approx(run["metrics"]["ndcg@10"])
    assert rows_out["students"]["metrics"]["itemknn"]["recall@10"] > rows_out["students"]["metrics"]["pop"]["recall@10"]
    page = paths.html.read_text()
    assert "Per segment: ndcg@10, recall@10, map@10" in page and "students" in page
    assert "| students |" in paths.markdown.read_text()
