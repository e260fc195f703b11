"""Segment rules: what parses, and every kind of bad rule rejected with the path of the bad node."""

from __future__ import annotations

import pytest
import yaml

from recstack.profiles.compile import evaluate, feature_updates, feature_value, is_new_session, predicate_sql
from recstack.profiles.rules import HOUR_MS, Feature, RuleError, load_segments, parse_rule, parse_segments


def rule(text: str):
    return parse_segments(yaml.safe_load(text))


def test_the_issue_example_parses_into_one_windowed_feature() -> None:
    segment = rule("scifi_fans: {count: {event: view, category: Sci-Fi, within: 7d}, gte: 5}")["scifi_fans"]
    assert segment.features == (Feature("count", ("view",), "Sci-Fi", None, 168),)
    assert predicate_sql(segment) == f"(f_{segment.features[0].id} >= 5.0)"


def test_share_reads_a_numerator_and_a_denominator() -> None:
    segment = parse_rule("drama", {"share": {"category": "Drama", "within": "30d"}, "gte": 0.4})
    kinds = {(f.category, f.window_h) for f in segment.features}
    assert kinds == {("Drama", 720), (None, 720)}
    num, den = segment.features
    assert evaluate(segment, {num.id: 2, den.id: 5}, {}) is True
    assert evaluate(segment, {num.id: 1, den.id: 5}, {}) is False
    assert evaluate(segment, {}, {}) is False  # no events: share 0


def test_combinators_and_attributes_evaluate_as_written() -> None:
    segment = parse_rule(
        "young_active",
        {"all": [{"attribute": "age_band", "in": ["18-24"]}, {"not": {"sessions": {"within": "7d"}, "lt": 2}}]},
    )
    (sessions,) = segment.features
    assert evaluate(segment, {sessions.id: 2}, {"age_band": "18-24"})
    assert not evaluate(segment, {sessions.id: 1}, {"age_band": "18-24"})
    assert not evaluate(segment, {sessions.id: 5}, {"age_band": None})
    ne = parse_rule("not_f", {"attribute": "gender", "ne": "F"})
    assert evaluate(ne, {}, {"gender": None}) and not evaluate(ne, {}, {"gender": "F"})


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ("a: {count: {event: view, within: 7d}, gte: 5, colour: red}", "segments.a.colour", "unknown field"),
        ("a: {count: {event: view, within: 7d, colour: red}, gte: 5}", "segments.a.count.colour", "unknown field"),
        ("a: {count: {event: view}, gte: 5}", "segments.a.count.within", "scan all history"),
        ("a: {count: {event: view, within: 7 days}, gte: 5}", "segments.a.count.within", "bad window"),
        ("a: {count: {event: view, within: 0d}, gte: 5}", "segments.a.count.within", "bad window"),
        ("a: {count: {event: view, within: 400d}, gte: 5}", "segments.a.count.within", "exceeds the horizon"),
        ("a: {count: {event: vieww, within: 7d}, gte: 5}", "segments.a.count.event", "unknown event type"),
        ("a: {count: {event: [view, nope], within: 7d}, gte: 5}", "segments.a.count.event[1]", "unknown event type"),
        ("a: {count: {event: view, within: 7d}, gte: five}", "segments.a.gte", "type mismatch"),
        ("a: {count: {event: view, within: 7d}, in: [x]}", "segments.a.in", "type mismatch"),
        ("a: {attribute: age_band, gte: 3}", "segments.a.gte", "type mismatch"),
        ("a: {attribute: age_band, eq: 30}", "segments.a.eq", "type mismatch"),
        ("a: {attribute: shoe_size, eq: '42'}", "segments.a.attribute", "unknown attribute"),
        (
            "a: {all: [{count: {within: 7d}, gte: 1}, {sum: {within: 7d}, gte: 1}]}",
            "segments.a.all[1].sum.event",
            "sum needs",
        ),
        ("a: {all: [{sessions: {within: 7d}}]}", "segments.a.all[0]", "needs a comparison"),
        ("a: {any: []}", "segments.a.any", "non-empty list"),
        ("a: {share: {within: 7d}, gte: 0.5}", "segments.a.share.category", "share needs"),
        ("a: {share: {category: X, within: 7d}, gte: 2}", "segments.a.gte", "between 0 and 1"),
        ("a: {count: {within: 7d}, sessions: {within: 7d}, gte: 1}", "segments.a", "exactly one"),
        ("Bad-Name: {count: {within: 7d}, gte: 1}", "segments.Bad-Name", "lower-case"),
        ("a: {count: {device: fridge, within: 7d}, gte: 1}", "segments.a.count.device", "unknown device"),
        ("a: [1, 2]", "segments.a", "a condition"),
    ],
)
def test_bad_rules_name_the_bad_node(text: str, path: str, words: str) -> None:
    with pytest.raises(RuleError) as caught:
        rule(text)
    assert caught.value.path == path, str(caught.value)
    assert words in str(caught.value)


def test_window_buckets_are_whole_hours_ending_with_the_hour_of_as_of() -> None:
    feature = Feature("count", (), None, None, 2)
    as_of = 100 * HOUR_MS + 5
    assert feature_value(feature, {98: 1, 99: 1, 100: 1, 101: 7}, as_of) == 2  # 99 and 100; 98 is out, 101 future
    assert is_new_session(None, 0) and is_new_session(0, 30 * 60_000 + 1) and not is_new_session(0, 30 * 60_000)


def test_feature_updates_match_type_device_and_category() -> None:
    view_scifi = Feature("count", ("view",), "Sci-Fi", None, 24)
    mobile = Feature("count", (), None, "mobile", 24)
    dwell = Feature("sum", ("dwell",), None, None, 24)
    sessions = Feature("sessions", (), None, None, 24)
    feats = [view_scifi, mobile, dwell, sessions]
    got = feature_updates(feats, "view", None, "mobile", frozenset({"Sci-Fi"}), new_session=True)
    assert got == [(view_scifi, 1.0), (mobile, 1.0), (sessions, 1.0)]
    got = feature_updates(feats, "dwell", 1500.0, "desktop", frozenset(), new_session=False)
    assert got == [(dwell, 1500.0)]


def test_the_shipped_rule_files_parse(tmp_path) -> None:
    from recstack.config import config_dir

    assert len(load_segments(config_dir() / "segments")) >= 10
    (tmp_path / "a.yaml").write_text("x: {count: {within: 1d}, gte: 1}\n")
    (tmp_path / "b.yaml").write_text("x: {count: {within: 2d}, gte: 1}\n")
    with pytest.raises(RuleError, match="defined twice"):
        load_segments(tmp_path)
    (tmp_path / "b.yaml").write_text("y: {count: {within: 2d}}\n")
    with pytest.raises(RuleError, match=r"b.yaml: segments.y"):
        load_segments(tmp_path)
