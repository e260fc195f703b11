"""Online metric values checked by hand on tiny lakes, and against recstack.evaluation.metrics on a random one."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monitor_support import DAY, MIN, LakeBuilder, day

from recstack.evaluation.metrics import map_, ndcg
from recstack.monitoring.job import run_monitor
from recstack.monitoring.online_metrics import ALL_USERS
from recstack.monitoring.spec import MetricSpec

SPEC = MetricSpec(ks=(2, 4, 10), catalogue_size=10)


def monitor(builder: LakeBuilder, tmp_path: Path, spec: MetricSpec = SPEC, **kwargs) -> pd.DataFrame:
    builder.write()
    run = run_monitor(builder.root, tmp_path / "out", day=day(0), days=1, spec=spec, report=False, **kwargs)
    return run.daily


def tiny(builder: LakeBuilder) -> None:
    builder.impression("r1", "u1", ["a", "b", "c", "d"], 0 * MIN)
    builder.event("u1", "c", "click", 2 * MIN, request_id="r1")
    builder.event("u1", "c", "purchase", 3 * MIN, request_id="r1")
    builder.event("u1", "e", "rating", 10 * MIN)
    builder.impression("r2", "u2", ["a", "b"], 60 * MIN)
    builder.event("u2", "a", "click", 61 * MIN)  # no request_id: the window rule
    builder.impression("r3", "u3", ["b", "a"], 60 * MIN)
    builder.impression("r4", "u1", ["a"], 300 * MIN)  # nothing follows it


def test_tiny_case_by_hand(builder: LakeBuilder, tmp_path: Path) -> None:
    tiny(builder)
    row = monitor(builder, tmp_path).iloc[0]
    assert (row["segment"], row["impressions"], row["users"]) == (ALL_USERS, 4, 3)
    assert row["ctr@2"] == pytest.approx(1 / 4)  # r2's click at 1
    assert row["ctr@4"] == pytest.approx(2 / 4)  # and r1's at 3
    assert row["item_ctr@2"] == pytest.approx(1 / 7)  # 1 click / (2 + 2 + 2 + 1) slots
    assert row["item_ctr@4"] == pytest.approx(2 / 9)
    assert row["conversion_rate"] == pytest.approx(1 / 4)
    assert row["judged"] == 2  # r1 (relevant {c, e}), r2 ({a}); r3 and r4: nothing followed
    ap_r1 = (1 / 3) / 2  # hit at 3: precision@3 = 1/3, over min(K, |R| = 2)
    ndcg_r1 = (1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert row["map@4"] == pytest.approx((ap_r1 + 1) / 2)
    assert row["map@2"] == pytest.approx((0 + 1) / 2)
    assert row["ndcg@4"] == pytest.approx((ndcg_r1 + 1) / 2)
    assert row["ndcg@2"] == pytest.approx(0.5)
    assert row["distinct_items"] == 4 and row["coverage"] == pytest.approx(0.4)


def test_per_arm_and_per_segment_rows(builder: LakeBuilder, tmp_path: Path) -> None:
    builder.impression("r1", "u1", ["a", "b"], 0 * MIN, bundle="mf@1", experiment="exp", arm="a")
    builder.impression("r2", "u2", ["b", "a"], 0 * MIN, bundle="gcn@1", experiment="exp", arm="b")
    builder.impression("r3", "u3", ["b", "c"], 0 * MIN, bundle="gcn@1", experiment="exp", arm="b")
    builder.event("u2", "a", "click", 1 * MIN, request_id="r2")
    membership = pd.DataFrame({"user_id": ["u1", "u2", "u2", "nobody"], "segment": ["s1", "s1", "s2", "s2"]})
    daily = monitor(builder, tmp_path, membership=membership).set_index(["arm", "segment"])
    assert daily.loc[("a", ALL_USERS), "impressions"] == 1 and daily.loc[("b", ALL_USERS), "impressions"] == 2
    assert daily.loc[("b", ALL_USERS), "ctr@2"] == pytest.approx(0.5)
    assert daily.loc[("b", "s1"), "impressions"] == 1 and daily.loc[("b", "s1"), "ctr@2"] == pytest.approx(1.0)
    assert daily.loc[("b", "s2"), "users"] == 1
    assert ("a", "s2") not in daily.index  # u1 is not in s2: no row without impressions
    assert math.isnan(daily.loc[("b", "s1"), "coverage"])  # catalogue figures are per bundle and arm only


def test_popularity_and_coverage(builder: LakeBuilder, tmp_path: Path) -> None:
    builder.impression("r1", "u1", ["a", "b"], 0 * MIN)
    builder.impression("r2", "u2", ["a", "c"], 0 * MIN)
    for user in ("u3", "u4", "u5"):
        builder.event(user, "a", "rating", 5 * MIN)
    builder.event("u3", "c", "click", 5 * MIN)
    row = monitor(builder, tmp_path).iloc[0]
    # slots: a (3 outcome events) twice, b (0), c (1): (3 + 3 + 0 + 1) / 4
    assert row["mean_popularity"] == pytest.approx(7 / 4)
    assert row["distinct_items"] == 3 and row["coverage"] == pytest.approx(0.3)


def test_random_lists_match_the_offline_metric_functions(builder: LakeBuilder, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    catalogue = [f"i{j}" for j in range(30)]
    hits_rows, n_relevant = [], []
    for n in range(60):
        user, items = f"u{n}", list(rng.choice(catalogue, size=10, replace=False))
        at = n * MIN
        builder.impression(f"r{n}", user, items, at)
        relevant = set(rng.choice(catalogue, size=int(rng.integers(0, 6)), replace=False))
        for j, item in enumerate(sorted(relevant)):
            builder.event(user, item, "rating", at + (j + 1) * MIN)
        if relevant:
            hits_rows.append([item in relevant for item in items])
            n_relevant.append(len(relevant))
    spec = MetricSpec(ks=(5, 10))
    row = monitor(builder, tmp_path, spec=spec).iloc[0]
    hits, n_rel = np.array(hits_rows), np.array(n_relevant)
    assert row["judged"] == len(n_relevant)
    for k in (5, 10):
        assert row[f"map@{k}"] == pytest.approx(map_(hits, n_rel, k).mean())
        assert row[f"ndcg@{k}"] == pytest.approx(ndcg(hits, n_rel, k).mean())


def test_a_day_without_impressions_reports_zero_traffic(builder: LakeBuilder, tmp_path: Path) -> None:
    builder.impression("r1", "u1", ["a"], -DAY + 10 * MIN)  # the day before
    builder.write()
    run = run_monitor(builder.root, tmp_path / "out", day=day(0), days=2, spec=SPEC, report=False)
    assert run.traffic == {day(-1).isoformat(): 1, day(0).isoformat(): 0}
    today = run.day_rows
    assert len(today) == 1 and today.iloc[0]["impressions"] == 0 and math.isnan(today.iloc[0]["ctr@10"])
    assert any("zero traffic" in note for note in run.notes)
    assert run.alerts == []


def test_an_impression_stored_twice_counts_once(builder: LakeBuilder, tmp_path: Path) -> None:
    builder.impression("r1", "u1", ["a", "b"], 0 * MIN)
    builder.impression("r1", "u1", ["a", "b"], 0 * MIN)  # a replayed stream entry
    builder.event("u1", "a", "click", 1 * MIN, request_id="r1")
    builder.write()
    run = run_monitor(builder.root, tmp_path / "out", day=day(0), days=1, spec=SPEC, report=False)
    assert run.loaded.duplicate_impressions == 1
    row = run.day_rows.iloc[0]
    assert (row["impressions"], row["ctr@2"], row["clicks@2"]) == (1, 1.0, 1)
