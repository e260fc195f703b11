"""The gate's decision: a pure function of the candidate's and the serving bundle's hold-out figures."""

from __future__ import annotations

import math

import pytest

from recstack.retrain.gate import decide


def test_nothing_serving_deploys_the_candidate() -> None:
    d = decide({"ndcg@10": 0.1}, None)
    assert d.deploy and d.serving is None and d.delta is None and "no bundle is serving" in d.reason


@pytest.mark.parametrize(
    ("candidate", "serving", "deploy"),
    [
        (0.31, 0.30, True),  # better
        (0.30, 0.30, True),  # equal
        (0.296, 0.30, True),  # worse, within the tolerance
        (0.295, 0.30, True),  # exactly at the tolerance (float noise included)
        (0.2949, 0.30, False),  # just beyond it
        (0.10, 0.30, False),
    ],
)
def test_deploys_unless_worse_by_more_than_the_tolerance(candidate: float, serving: float, deploy: bool) -> None:
    d = decide({"ndcg@10": candidate, "recall@10": 0.0}, {"ndcg@10": serving}, tolerance=0.005)
    assert d.deploy is deploy
    assert d.delta == pytest.approx(candidate - serving)
    assert ("worse than the serving bundle by more than 0.005" in d.reason) is not deploy


def test_the_metric_is_configurable_and_zero_tolerance_requires_no_loss() -> None:
    candidate, serving = {"ndcg@10": 0.2, "recall@20": 0.5}, {"ndcg@10": 0.1, "recall@20": 0.51}
    assert decide(candidate, serving, metric="ndcg@10", tolerance=0.0).deploy
    assert not decide(candidate, serving, metric="recall@20", tolerance=0.0).deploy
    assert decide(candidate, serving, metric="recall@20", tolerance=0.01).deploy


def test_a_candidate_without_a_number_is_refused() -> None:
    assert not decide({"ndcg@10": math.nan}, {"ndcg@10": 0.1}).deploy


@pytest.mark.parametrize("tolerance", [-0.001, math.inf, math.nan])
def test_a_bad_tolerance_is_refused(tolerance: float) -> None:
    with pytest.raises(ValueError, match=r"gate\.tolerance"):
        decide({"ndcg@10": 0.1}, {"ndcg@10": 0.1}, tolerance=tolerance)


def test_a_missing_metric_names_what_there_is() -> None:
    with pytest.raises(KeyError, match=r"map@10.*serving.*ndcg@10"):
        decide({"ndcg@10": 0.1, "map@10": 0.1}, {"ndcg@10": 0.1}, metric="map@10")
