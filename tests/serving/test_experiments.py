"""A/B assignment: deterministic, sticky across processes (a fixed hash, no state), proportional to the weights, and
independent between experiments; the settings refuse an experiment that cannot run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recstack.serving.experiments import Assignment, ExperimentSettings, unit_hash

KEYS = [f"{i:032x}" for i in range(20_000)]


def test_the_same_user_always_gets_the_same_arm_in_any_process() -> None:
    ab = Assignment.build("mf-vs-lightgcn", {"mf": 1.0, "lightgcn": 1.0})
    here = [ab.arm(k) for k in KEYS[:50]]
    code = (
        "from recstack.serving.experiments import Assignment;"
        "ab = Assignment.build('mf-vs-lightgcn', {'mf': 1.0, 'lightgcn': 1.0});"
        "print(','.join(ab.arm(f'{i:032x}') for i in range(50)))"
    )
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert there.split(",") == here  # no per-process salt (Python's hash() would differ)


def test_arms_get_their_share_of_users() -> None:
    ab = Assignment.build("exp", {"a": 3.0, "b": 1.0})
    share = sum(ab.arm(k) == "a" for k in KEYS) / len(KEYS)
    assert abs(share - 0.75) < 0.02, share


def test_a_new_experiment_reshuffles_users() -> None:
    one = Assignment.build("one", {"a": 1.0, "b": 1.0})
    two = Assignment.build("two", {"a": 1.0, "b": 1.0})
    agree = sum(one.arm(k) == two.arm(k) for k in KEYS) / len(KEYS)
    assert 0.47 < agree < 0.53, agree  # independent: half agree by chance


def test_a_request_without_an_id_gets_the_first_arm() -> None:
    assert Assignment.build("exp", {"control": 1.0, "treatment": 9.0}).arm("") == "control"


def test_unit_hash_is_uniform_in_the_unit_interval() -> None:
    values = [unit_hash("exp", k) for k in KEYS]
    assert min(values) >= 0.0 and max(values) < 1.0
    assert abs(sum(values) / len(values) - 0.5) < 0.01


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "exp", "arms": {"only": {"bundle": "b", "weight": 1}}}, "at least two arms"),
        ({"arms": {"a": {"bundle": "b", "weight": 1}}}, "experiment.name is not"),
        (
            {"name": "exp", "arms": {"A!": {"bundle": "b", "weight": 1}, "b": {"bundle": "c", "weight": 1}}},
            "must match",
        ),
        (
            {"name": "exp", "arms": {"a": {"bundle": "b", "weight": 0}, "b": {"bundle": "c", "weight": 1}}},
            "greater than",
        ),
    ],
)
def test_settings_refuse_an_experiment_that_cannot_run(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExperimentSettings.model_validate(spec)
