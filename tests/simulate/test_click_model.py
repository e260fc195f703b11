"""The click model, the visitors and a visit's events: pure functions, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from recstack.data.prepared import PreparedSplit
from recstack.simulate.click_model import ClickModel, user_rng
from recstack.simulate.traffic import visit_events
from recstack.simulate.visitors import Visitor, held_out_visitors

ITEMS = ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j")


def test_every_position_examined_clicks_exactly_the_hits() -> None:
    model = ClickModel(0.0)
    for seed in range(5):
        assert model.clicks(ITEMS, {"b", "e", "z"}, user_rng(seed, 7)) == (2, 5)
    assert model.clicks(ITEMS, set(), user_rng(0, 0)) == ()


def test_position_based_examination_is_seeded_and_decays_with_position() -> None:
    model = ClickModel(1.0)
    np.testing.assert_allclose(model.examination(4), [1.0, 0.5, 1 / 3, 0.25])
    relevant = set(ITEMS)
    assert model.clicks(ITEMS, relevant, user_rng(3, 11)) == model.clicks(ITEMS, relevant, user_rng(3, 11))
    counts = np.zeros(len(ITEMS))
    for user in range(4000):
        for position in model.clicks(ITEMS, relevant, user_rng(0, user)):
            counts[position - 1] += 1
    rates = counts / 4000
    assert rates[0] == 1.0  # position 1 is always examined
    np.testing.assert_allclose(rates, 1.0 / np.arange(1, 11), atol=0.03)
    # only relevant items are clicked, whatever is examined
    assert set(model.clicks(ITEMS, {"c"}, user_rng(0, 1))) <= {3}


@pytest.mark.parametrize("power", [-1, 11, "1", True])
def test_a_bad_examination_power_is_refused(power: object) -> None:
    with pytest.raises(ValueError, match="examination_power"):
        ClickModel(power)  # type: ignore[arg-type]


def test_a_visit_posts_its_clicks_with_the_request_id_then_the_rest_of_the_held_out_set() -> None:
    visitor = Visitor("u1", 1, test_items=("b", "x", "e"), test_values=(4.0, 5.0, 3.0))
    events = visit_events(visitor, "r" * 32, ITEMS, (2, 5))
    assert [(e["event_type"], e["item_id"], e.get("request_id")) for e in events] == [
        ("click", "b", "r" * 32),
        ("click", "e", "r" * 32),
        ("rating", "x", None),
    ]
    assert events[2]["value"] == 5.0
    assert len({e["event_id"] for e in events}) == 3
    # nothing clicked: the whole held-out set is posted as ratings, so the outcome set never depends on clicks
    rated = visit_events(visitor, "s" * 32, ITEMS, ())
    assert {e["item_id"] for e in rated} == {"b", "x", "e"} and {e["event_type"] for e in rated} == {"rating"}


def test_visitors_are_the_test_users_with_their_distinct_held_out_items(serving_split: PreparedSplit) -> None:
    everyone = held_out_visitors(serving_split)
    test = serving_split.frame("test")
    assert [v.user_idx for v in everyone] == sorted(test["user_idx"].unique())
    matrix = serving_split.matrix("test")
    for v in everyone:
        expected = serving_split.items["item_id"].to_numpy()[
            matrix.indices[matrix.indptr[v.user_idx] : matrix.indptr[v.user_idx + 1]]
        ]
        assert sorted(v.test_items) == sorted(map(str, expected))
        assert all(0 <= x <= 10 for x in v.test_values)
    sample = held_out_visitors(serving_split, n_users=7, seed=3)
    assert len(sample) == 7 and sample == held_out_visitors(serving_split, n_users=7, seed=3)
    assert sample != held_out_visitors(serving_split, n_users=7, seed=4)
    assert held_out_visitors(serving_split, n_users=10_000) == everyone
    with pytest.raises(ValueError, match="n_users"):
        held_out_visitors(serving_split, n_users=0)
