"""The follower's generated rule functions (recstack.profiles.realtime_predicate) against compile.evaluate, the
reference, on random feature values and attributes: every kind of node, bounds hit exactly, shares over an empty
denominator, features and attributes missing."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from module_support import load_module

from recstack.config import config_dir
from recstack.profiles.compile import evaluate
from recstack.profiles.realtime_predicate import compile_predicate
from recstack.profiles.rules import Compare, load_segments, parse_segments, walk

RULES = {
    "viewers": {"count": {"event": "view", "within": "1d"}, "gte": 2},
    "between": {"count": {"within": "7d"}, "gte": 2, "lt": 5},
    "exactly": {"count": {"event": "purchase", "within": "30d"}, "eq": 0},
    "not_three": {"count": {"event": "click", "within": "30d"}, "ne": 3},
    "at_most": {"sessions": {"within": "30d"}, "lte": 2, "gt": 0},
    "dwellers": {"sum": {"event": "dwell", "within": "2d"}, "gte": 90_000},
    "drama_share": {"share": {"category": "Drama", "event": ["view", "click"], "within": "14d"}, "gte": 0.34},
    "young": {"attribute": "age_band", "in": ["18-24", "25-34"]},
    "french": {"attribute": "country", "eq": "FR"},
    "not_f": {"attribute": "gender", "ne": "F"},
    "nested": {
        "any": [
            {"all": [{"attribute": "country", "eq": "FR"}, {"count": {"category": "Drama", "within": "1d"}, "gte": 3}]},
            {"not": {"any": [{"share": {"category": "Action", "within": "30d"}, "lt": 0.5}, {"attribute": "age_band", "eq": "45-54"}]}},
        ]
    },
}  # fmt: skip
REPO = Path(__file__).resolve().parents[2]
ATTRIBUTES = {"age_band": ["18-24", "25-34", "45-54"], "country": ["FR", "DE"], "gender": ["F", "M"]}


def rule_sets():
    bench = load_module(REPO / "benchmarks" / "profiles_realtime.py", search_path=REPO / "benchmarks")
    yield "these", parse_segments(RULES)
    yield "the benchmark's", parse_segments(bench.rules(40))
    yield "the shipped", load_segments(config_dir() / "segments")


def bounds(segments) -> list[float]:
    out = [0.0, 1.0]
    for segment in segments.values():
        for node in walk(segment.node):
            if isinstance(node, Compare):
                out += [bound for _, bound in node.ops]
    return out


@pytest.mark.parametrize("which", ["these", "the benchmark's", "the shipped"])
def test_generated_rules_agree_with_compile_evaluate(which: str) -> None:
    segments = dict(rule_sets())[which]
    rng = random.Random(11)
    near = bounds(segments)
    checked = 0
    for segment in segments.values():
        predicate = compile_predicate(segment)
        ids = [f.id for f in segment.features]
        for _ in range(400):
            values: dict[str, float] = {}
            for fid in ids:
                roll = rng.random()
                if roll < 0.15:
                    continue  # missing: reads 0
                if roll < 0.3:
                    values[fid] = 0.0
                elif roll < 0.6:
                    values[fid] = rng.choice(near)  # a bound exactly
                else:
                    values[fid] = float(rng.randint(0, 30)) if rng.random() < 0.7 else rng.uniform(0, 200_000)
            attributes = {k: rng.choice(v) for k, v in ATTRIBUTES.items() if rng.random() < 0.7}
            assert predicate(values, attributes) is evaluate(segment, values, attributes), (segment.name, values)
            checked += 1
    assert checked == 400 * len(segments)


def test_a_rule_is_true_and_false_somewhere() -> None:
    """The random inputs above reach both verdicts of every rule here (a generator stuck on one would pass)."""
    segments = parse_segments(RULES)
    rng = random.Random(5)
    seen: dict[str, set[bool]] = {name: set() for name in segments}
    for _ in range(2000):
        for name, segment in segments.items():
            values = {f.id: float(rng.randint(0, 8)) * rng.choice([1.0, 20_000.0]) for f in segment.features}
            attributes = {k: rng.choice(v) for k, v in ATTRIBUTES.items()}
            seen[name].add(compile_predicate(segment)(values, attributes))
    assert all(verdicts == {True, False} for verdicts in seen.values()), seen
