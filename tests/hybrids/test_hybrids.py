"""Each hybrid on a small split: what it ranks, and that fitting reads the training and validation splits only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate
from recstack.hybrids.base import Hybrid
from recstack.hybrids.cascade import CascadeHybrid
from recstack.hybrids.parts import build_parts
from recstack.hybrids.stacking import StackingHybrid
from recstack.hybrids.switching import SwitchingHybrid
from recstack.hybrids.weighted import WeightedHybrid, simplex_grid
from recstack.models.base import Recommender

FAST_STACKING = {"param_grid": [{"num_leaves": 3, "min_data_in_leaf": 5}], "iterations": [5, 10], "folds": 2}


class _Unreadable:
    """Stands in for the test split's frame: any use of it fails the test."""

    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"the test split was read (.{name})")

    def __getitem__(self, key: object) -> None:
        raise AssertionError(f"the test split was read ([{key!r}])")

    def __len__(self) -> int:
        raise AssertionError("the test split was read (len)")


def _hybrids(split: PreparedSplit) -> dict[str, Hybrid]:
    n, m = split.n_users, split.n_items
    return {
        "weighted": WeightedHybrid(n, m, ["ease", "itemknn", "pop"], step=0.25),
        "switching": SwitchingHybrid(n, m, cold="pop", warm="ease", thresholds=[0, 8, 9]),
        "cascade": CascadeHybrid(n, m, retrieval="itemknn", ranker="ease", n_candidates=15),
        "stacking": StackingHybrid(n, m, ["ease", "itemknn", "pop"], n_candidates=10, **FAST_STACKING),
    }


def _tuned(model: Hybrid) -> object:
    if isinstance(model, StackingHybrid):
        return model.tuning["chosen"], model.booster.model_to_string()
    return {k: v for k, v in model.tuning.items()}


@pytest.fixture
def parts(tiny_split: PreparedSplit) -> dict[str, Recommender]:
    return build_parts(["ease", "itemknn", "pop"], tiny_split)


@pytest.mark.parametrize("kind", ["weighted", "switching", "cascade", "stacking"])
def test_fitting_never_reads_the_test_split(
    tiny_split: PreparedSplit, parts: dict[str, Recommender], kind: str
) -> None:
    fitted = _hybrids(tiny_split)[kind].fit(tiny_split, parts=parts)
    # Fitting from scratch (parts trained inside fit) with the test frame unreadable.
    blind = dataclasses.replace(tiny_split, test=_Unreadable(), _cache={})
    refitted = _hybrids(tiny_split)[kind].fit(blind)
    assert _tuned(refitted) == _tuned(fitted)
    # And with other test interactions: same choices.
    shuffled = tiny_split.test.assign(item_idx=np.random.default_rng(1).permutation(tiny_split.test["item_idx"].values))
    changed = _hybrids(tiny_split)[kind].fit(dataclasses.replace(tiny_split, test=shuffled, _cache={}), parts=parts)
    assert _tuned(changed) == _tuned(fitted)
    assert evaluate(fitted, tiny_split, "test", (5,)).n_users_evaluated > 0


def test_simplex_grid_covers_the_corners() -> None:
    grid = list(simplex_grid(3, 0.5))
    assert len(grid) == 6 and all(abs(sum(w) - 1) < 1e-9 for w in grid)
    assert {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)} <= set(grid)
    with pytest.raises(ValueError, match="divide 1"):
        next(simplex_grid(2, 0.3))


def test_weighted_rejects_weights_of_other_parts(tiny_split: PreparedSplit) -> None:
    with pytest.raises(ValueError, match=r"weights name \['mf'\]"):
        WeightedHybrid(tiny_split.n_users, tiny_split.n_items, ["ease", "pop"], weights={"mf": 1.0})


def test_switching_gives_cold_users_the_cold_part(tiny_split: PreparedSplit, parts: dict[str, Recommender]) -> None:
    n, m = tiny_split.n_users, tiny_split.n_items
    users = torch.arange(n)
    everyone_cold = SwitchingHybrid(n, m, cold="pop", warm="ease", thresholds=[100]).fit(tiny_split, parts=parts)
    nobody_cold = SwitchingHybrid(n, m, cold="pop", warm="ease", thresholds=[0]).fit(tiny_split, parts=parts)
    for hybrid, part in ((everyone_cold, "pop"), (nobody_cold, "ease")):
        seen = hybrid._seen(users)
        expected = (
            parts[part].score_all(users).masked_fill(seen, -torch.inf).argsort(dim=1, descending=True, stable=True)
        )
        got = hybrid.score_all(users).masked_fill(seen, -torch.inf).argsort(dim=1, descending=True, stable=True)
        assert torch.equal(got[:, :5], expected[:, :5])


def test_cascade_reranks_only_the_retrieved_candidates(
    tiny_split: PreparedSplit, parts: dict[str, Recommender]
) -> None:
    n, m = tiny_split.n_users, tiny_split.n_items
    users = torch.arange(n)
    cascade = CascadeHybrid(n, m, retrieval="itemknn", ranker="ease", n_candidates=8, weight=1.0)
    cascade.fit(tiny_split, parts=parts)
    seen = cascade._seen(users)
    retrieved = parts["itemknn"].score_all(users).masked_fill(seen, -torch.inf).topk(8, dim=1).indices
    top = cascade.score_all(users).masked_fill(seen, -torch.inf).topk(8, dim=1).indices
    for r in range(n):
        assert set(top[r].tolist()) == set(retrieved[r].tolist())
    with pytest.raises(ValueError, match="two different parts"):
        CascadeHybrid(n, m, retrieval="ease", ranker="ease")


def test_stacking_ranks_candidates_first(tiny_split: PreparedSplit, parts: dict[str, Recommender]) -> None:
    n, m = tiny_split.n_users, tiny_split.n_items
    stacking = StackingHybrid(n, m, ["ease", "itemknn", "pop"], n_candidates=5, **FAST_STACKING)
    stacking.fit(tiny_split, parts=parts)
    users = np.arange(n)
    cands = stacking.candidates(users)
    assert cands.features.shape == (len(cands.rows), len(stacking.feature_names))
    scores = stacking.score_all(torch.from_numpy(users))
    assert torch.isfinite(scores).all()
    for r in range(n):
        mine = cands.items[cands.rows == r]
        others = np.setdiff1d(np.arange(m), mine)
        assert scores[r, mine].min() > scores[r, others].max()
    with pytest.raises(ValueError, match="choose groups among"):
        StackingHybrid(n, m, ["ease"], feature_groups=["score", "weather"])


def test_blend_lets_a_part_abstain_on_items_it_cannot_score() -> None:
    """A cold item (unknown to the collaborative part) is judged by the content part alone, on the same scale; an
    item every part knows gets the plain weighted sum; one nobody knows keeps the plain sum too."""
    from recstack.hybrids.weighted import blend

    cf = torch.tensor([[2.0, 1.0, 0.0, 0.0]])  # items 2 and 3: no training interaction, a default score
    content = torch.tensor([[0.0, 1.0, 3.0, 0.5]])
    known = {"cf": torch.tensor([True, True, False, False]), "content": torch.tensor([True, True, True, False])}
    weights = {"cf": 0.8, "content": 0.2}
    out = blend(weights, {"cf": cf, "content": content}, known)
    assert torch.allclose(out[0, :2], 0.8 * cf[0, :2] + 0.2 * content[0, :2])
    assert out[0, 2] == pytest.approx(3.0)  # content alone, at full weight: it now outranks the warm items
    assert out[0, 3] == pytest.approx(0.8 * 0.0 + 0.2 * 0.5)  # nobody knows item 3: the plain weighted sum
    everyone = {"cf": torch.ones(4, dtype=torch.bool), "content": torch.ones(4, dtype=torch.bool)}
    assert torch.equal(blend(weights, {"cf": cf, "content": content}, everyone), 0.8 * cf + 0.2 * content)
