"""The budget's split (recstack.auto.allocation): pure functions, no training."""

from __future__ import annotations

import pytest

from recstack.auto.allocation import Phase, halve, leftover_next, minimum_budget, plan_budget, rung_sizes, slice_now

CHEAP = ["itemknn", "ease"]
DEEP = ["mf", "lightgcn"]


def test_rungs_halve_down_to_one() -> None:
    assert rung_sizes(0, 2) == ()
    assert rung_sizes(1, 2) == (1,)
    assert rung_sizes(2, 2) == (2, 1)
    assert rung_sizes(3, 2) == (3, 1)
    assert rung_sizes(5, 2) == (5, 2, 1)
    assert rung_sizes(9, 3) == (9, 3, 1)
    with pytest.raises(ValueError, match="eta >= 2"):
        rung_sizes(4, 1)


def test_default_plan_reserve_then_cheap_then_halving() -> None:
    plan = plan_budget(1000.0, CHEAP, DEEP)  # defaults: reserve 0.15, cheap 0.15 of the search, eta 2
    assert plan.reserve_s == pytest.approx(150.0) and plan.search_s == pytest.approx(850.0)
    assert [p.name for p in plan.phases] == ["cheap", "rung 0", "rung 1"]
    assert [p.keep for p in plan.phases] == [2, 2, 1]
    cheap_end = 850.0 * 0.15
    deep = 850.0 - cheap_end
    assert [p.end_s for p in plan.phases] == pytest.approx([cheap_end, cheap_end + deep / 2, 850.0])
    # Each cheap model gets half the cheap time; each deep model a quarter of the deep time in rung 0, and the
    # survivor the other half.
    assert plan.first_slice("itemknn") == pytest.approx(cheap_end / 2)
    assert plan.first_slice("lightgcn") == pytest.approx(deep / 4)
    assert not plan.phases[0].is_rung and plan.phases[1].is_rung
    with pytest.raises(KeyError, match="pop"):
        plan.first_slice("pop")


def test_plans_without_cheap_or_deep_candidates() -> None:
    only_cheap = plan_budget(100.0, CHEAP, [], reserve_share=0.1)
    assert only_cheap.phases == (Phase("cheap", 2, pytest.approx(90.0)),)
    only_deep = plan_budget(100.0, [], ["mf", "lightgcn", "x"], reserve_share=0.0)
    assert [(p.name, p.keep) for p in only_deep.phases] == [("rung 0", 3), ("rung 1", 1)]
    assert [p.end_s for p in only_deep.phases] == pytest.approx([50.0, 100.0])
    with pytest.raises(ValueError, match="reserve_share"):
        plan_budget(100.0, CHEAP, DEEP, reserve_share=1.0)
    with pytest.raises(ValueError, match="cheap_share"):
        plan_budget(100.0, CHEAP, DEEP, cheap_share=0.0)


def test_minimum_budget_is_the_tightest_first_share() -> None:
    mins = {"itemknn": 5.0, "ease": 5.0, "mf": 30.0, "lightgcn": 60.0}
    need, name = minimum_budget(mins, CHEAP, DEEP)
    assert name == "lightgcn"
    assert need == pytest.approx(60.0 / (0.85 * 0.85 / 4))
    at_minimum = plan_budget(need, CHEAP, DEEP)
    assert at_minimum.first_slice("lightgcn") == pytest.approx(60.0)
    assert all(at_minimum.first_slice(n) >= mins[n] - 1e-9 for n in mins)
    # With cheap models alone, the cheap ones set it.
    assert minimum_budget(mins, CHEAP, [], reserve_share=0.0) == (pytest.approx(10.0), "itemknn")
    assert minimum_budget({}, [], []) == (0.0, None)


def test_time_left_in_a_phase_is_shared_by_those_still_to_run() -> None:
    assert slice_now(100.0, 40.0, 3) == pytest.approx(20.0)
    assert slice_now(100.0, 40.0, 1) == pytest.approx(60.0)  # the last one takes what the others left
    assert slice_now(100.0, 130.0, 2) == 0.0  # overrun: nothing left
    with pytest.raises(ValueError):
        slice_now(100.0, 0.0, 0)


def test_halving_keeps_the_best_unfinished_candidates() -> None:
    scores = {"mf": 0.30, "lightgcn": 0.32, "x": None, "y": 0.31}
    assert halve(scores, 1) == ("lightgcn",)
    assert halve(scores, 2) == ("lightgcn", "y")
    assert halve(scores, 5) == ("lightgcn", "y", "mf")  # no score: never goes on
    assert halve(scores, 1, exhausted=["lightgcn"]) == ("y",)  # its trial limit reached: more time buys nothing
    assert halve({"mf": 0.3, "lightgcn": 0.3}, 1) == ("mf",)  # ties: the earlier (cheaper) one
    assert halve({"mf": float("nan")}, 1) == ()


def test_time_the_rungs_leave_goes_to_the_best_study_that_can_still_run() -> None:
    scores = {"mf": 0.30, "lightgcn": 0.32}
    # LightGCN won the last rung and reached its trial limit: MF, halved out, gets the time left.
    assert leftover_next(scores, exhausted=["lightgcn"], already=[]) == "mf"
    assert leftover_next(scores, exhausted=["lightgcn"], already=["mf"]) is None  # each once
    assert leftover_next(scores, exhausted=["lightgcn", "mf"], already=[]) is None
    assert leftover_next({"mf": None, "lightgcn": 0.32}, exhausted=["lightgcn"], already=[]) is None  # failed
    assert leftover_next(scores, exhausted=[], already=[]) == "lightgcn"
