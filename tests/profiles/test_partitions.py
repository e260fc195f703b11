"""Per-user batch work in ranges of user keys (recstack.profiles.partitions): the ranges :func:`user_ranges` chooses,
and the profiles build and the segments run over several ranges giving exactly what one range gives, bit for bit, on
a synthetic lake of a few thousand events whose users fall into every range."""

from __future__ import annotations

import itertools
import json
import math
import random
from datetime import timedelta as td
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from pandas.testing import assert_frame_equal
from profiles_support import AS_OF_MS, LakeBuilder, random_session, write_items

from recstack.profiles import build as build_module
from recstack.profiles import partitions, segments_batch
from recstack.profiles.build import ProfileSpec, build_profiles, profile_schema
from recstack.profiles.partitions import in_range, user_ranges
from recstack.profiles.profile_surveys import load_survey_answers
from recstack.profiles.rules import parse_segments
from recstack.profiles.segments_batch import run_segments
from recstack.profiles.source import load_attributes, load_catalogue, load_events

# --------------------------------------------------------------------------------------------- user_ranges itself


def _keys_table(n_events: int, n_keys: int) -> duckdb.DuckDBPyConnection:
    """``events`` and ``user_keys`` as user_ranges reads them: ``n_events`` events spread over ``n_keys`` keys."""
    con = duckdb.connect()
    con.execute(
        f"CREATE TABLE user_keys AS SELECT i::INTEGER AS uid, 'u' || lpad(i::VARCHAR, 6, '0') AS user_id "
        f"FROM range({n_keys}) t(i)"
    )
    modulo = max(n_keys, 1)
    con.execute(f"CREATE TABLE events AS SELECT (i % {modulo})::INTEGER AS uid FROM range({n_events}) t(i)")
    return con


@pytest.mark.parametrize(
    ("n_events", "n_keys", "per_range"),
    [(0, 0, 10), (10, 5, 10), (10, 5, 1_000), (3, 100, 3)],
    ids=["empty", "exactly one range", "fewer events than a range", "as many as a range"],
)
def test_one_range_is_no_filter_at_all(n_events: int, n_keys: int, per_range: int) -> None:
    con = _keys_table(n_events, n_keys)
    assert user_ranges(con, per_range) == [None]
    assert in_range(None) == "true"
    con.close()


@pytest.mark.parametrize(
    ("n_events", "n_keys", "per_range", "parts"),
    [(11, 5, 10, 2), (1_000, 100, 300, 4), (1_000, 7, 100, 7), (999, 1_000, 100, 10), (10_000, 3, 1, 3)],
)
def test_ranges_cover_every_key_once(n_events: int, n_keys: int, per_range: int, parts: int) -> None:
    con = _keys_table(n_events, n_keys)
    ranges = user_ranges(con, per_range)
    assert len(ranges) == parts == min(math.ceil(n_events / per_range), n_keys)  # never more ranges than keys
    assert ranges[0][0] == 0 and ranges[-1][1] == n_keys
    for (_, hi), (lo, _) in itertools.pairwise(ranges):
        assert hi == lo  # contiguous, no overlap
    assert all(lo < hi for lo, hi in ranges)  # none empty
    sizes = [hi - lo for lo, hi in ranges]
    assert max(sizes) - min(sizes) <= 1  # equal key ranges
    # the SQL filters: every event in exactly one range
    counts = [con.execute(f"SELECT count(*) FROM events WHERE {in_range(r)}").fetchall()[0][0] for r in ranges]
    assert sum(counts) == n_events
    assert (
        con.execute(
            "SELECT count(*) FROM events WHERE " + " AND ".join(f"NOT {in_range(r)}" for r in ranges)
        ).fetchall()[0][0]
        == 0
    )
    con.close()


def test_one_event_per_range_on_a_tiny_table() -> None:
    con = _keys_table(5, 5)
    ranges = user_ranges(con, 1)
    assert ranges == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert [con.execute(f"SELECT list(uid) FROM events WHERE {in_range(r)}").fetchall()[0][0] for r in ranges] == [
        [0],
        [1],
        [2],
        [3],
        [4],
    ]
    assert in_range((2, 3), "k.uid") == "(k.uid >= 2 AND k.uid < 3)"
    con.close()


def test_the_module_default_is_read_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The build and the segments pass no size: they get EVENTS_PER_RANGE as it is when they run (what the tests
    below patch)."""
    con = _keys_table(100, 10)
    assert user_ranges(con) == [None]
    monkeypatch.setattr(partitions, "EVENTS_PER_RANGE", 40)
    assert user_ranges(con) == [(0, 3), (3, 6), (6, 10)]
    con.close()


# --------------------------------------------------------------------- several ranges give what one range gives

N_USERS = 48
DEVICES = ("desktop", "mobile", "tablet")
KINDS = ("view", "view", "view", "click", "dwell", "scroll", "add_to_cart", "purchase", "rating", "search")
CATEGORIES = ("Sci-Fi", "Action", "Comedy", "Drama", "Horror", "Romance", "Documentary")
ITEMS = {f"m{k:02d}": tuple(CATEGORIES[(k * j) % len(CATEGORIES)] for j in (1, 3)[: 1 + k % 2]) for k in range(30)}
RULES = {
    "scifi_fans": {"count": {"event": "view", "category": "Sci-Fi", "within": "7d"}, "gte": 3},
    "engaged": {"sessions": {"within": "30d"}, "gte": 4},
    "lapsed": {"all": [{"count": {"within": "90d"}, "gte": 1}, {"count": {"within": "30d"}, "eq": 0}]},
    "young": {"attribute": "age_band", "in": ["18-24", "25-34"]},
    "drama_share": {"share": {"category": "Drama", "within": "30d"}, "gte": 0.2},
    "dwellers": {"sum": {"event": "dwell", "within": "14d"}, "gte": 60_000},
    "mobile_not_buyers": {
        "all": [
            {"count": {"device": "mobile", "within": "30d"}, "gte": 2},
            {"not": {"count": {"event": "purchase", "within": "90d"}, "gte": 1}},
        ]
    },
    "any_active": {"any": [{"count": {"within": "1d"}, "gte": 1}, {"sessions": {"within": "7d"}, "gte": 2}]},
}


def _synthetic_lake(builder: LakeBuilder, seed: int = 13) -> int:
    """About 2,300 events of 48 users over 120 days (sessions of events minutes apart, so some split), every event
    type the profiles read, stated categories, ties at the same millisecond, client clocks, visitors merged into
    accounts, a crawler, and four users whose only events (a profile among them) are 100+ days old: they get keys after
    the others' whenever the load starts after them (recstack.profiles.source.ensure_user_keys)."""
    rng = random.Random(seed)
    users = [f"u{k:02d}" for k in range(N_USERS)]
    # sessions start on 40 of the 118 days, at one of two hours (few hour partitions: the lake is quick to read)
    starts = [td(days=day, hours=hour) for day in sorted(rng.sample(range(118), 40)) for hour in (3, 14)]
    for user in users:
        for _ in range(rng.randint(3, 8)):  # sessions
            at = rng.choice(starts) - td(minutes=rng.randint(0, 59))
            random_session(
                builder,
                rng,
                user,
                at,
                max_events=14,
                same_ms=0.05,
                gaps_min=(1, 5, 12, 29, 30, 31, 45),
                kinds=KINDS,
                devices=DEVICES,
                categories=CATEGORIES,
                items=ITEMS,
            )
        if rng.random() < 0.6:
            builder.event(
                user,
                "profile",
                td(days=rng.randint(0, 119)),
                age_band=rng.choice(["18-24", "25-34", "35-44", None]),
                country=rng.choice(["FR", "DE", None]),
            )
        for _ in range(rng.randint(0, 3)):
            builder.event(
                user, "preference", td(days=rng.randint(0, 60)), category=rng.choice(CATEGORIES), value=rng.random()
            )
        if rng.random() < 0.4:
            builder.event(user, "survey", td(days=rng.randint(0, 60)), question_id="q1", answer=rng.choice("abc"))
    for k in range(6):  # visitors merged into accounts (their events are the account's; their keys hold none)
        visitor, user = f"u{7 * k + 3:02d}v", users[rng.randrange(N_USERS)]  # visitor keys among the users
        builder.burst(visitor, 4, td(days=rng.randint(1, 40)), td(minutes=3), item="m01", anonymous=True)
        builder.alias(visitor, user, td(days=rng.randint(0, 40)))
    builder.burst("crawler", 50, td(days=2), td(minutes=1), item="m02", device_class="bot")
    for k, name in enumerate(("u05x", "u17x", "u30x", "u41x")):  # pseudonyms between the others'
        builder.event(name, "profile", td(days=100 + k), age_band="18-24", gender="female")
        builder.event(name, "view", td(days=101 + k), item="m03")
    n = len(builder.events)
    builder.write()
    return n


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The lake and its item metadata file, written once for the module."""
    root = tmp_path_factory.mktemp("ranges")
    (root / "lake").mkdir()
    builder = LakeBuilder(root=root / "lake", items_path=write_items(root / "items.csv", ITEMS))
    assert 2_000 < _synthetic_lake(builder) < 6_000
    return builder.root, builder.items_path


class Ranges:
    """Forces the per-user work into ``parts`` ranges (None: the default, one range for a lake this small; "users":
    one key per range) through the module default the jobs read, EVENTS_PER_RANGE, set from the events each job
    sees; records the ranges each job used and the users with events in each."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, parts: int | str | None) -> None:
        self.used: list[list[tuple[int, int] | None]] = []
        self.users: list[list[int]] = []

        def spy(con, events_per_range=None):
            if parts == "users":
                monkeypatch.setattr(partitions, "EVENTS_PER_RANGE", 1)
            elif parts is not None:
                n_events = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
                monkeypatch.setattr(partitions, "EVENTS_PER_RANGE", math.ceil(n_events / parts))
            ranges = user_ranges(con, events_per_range)
            self.used.append(ranges)
            self.users.append(
                [
                    con.execute(f"SELECT count(DISTINCT uid) FROM events WHERE {in_range(r)}").fetchall()[0][0]
                    for r in ranges
                ]
            )
            return ranges

        monkeypatch.setattr(partitions, "EVENTS_PER_RANGE", partitions.EVENTS_PER_RANGE)  # restored after the test
        monkeypatch.setattr(build_module, "user_ranges", spy)
        monkeypatch.setattr(segments_batch, "user_ranges", spy)


def _load(con, lake: Path, items: Path, start_ms: int) -> None:
    load_events(con, lake, start_ms, AS_OF_MS + 1)
    load_catalogue(con, items)
    load_attributes(con, lake, AS_OF_MS)
    load_survey_answers(con, lake)


def _differences(got: pa.Table, expected: pa.Table) -> dict[str, list[str]]:
    """Per column, the users whose values differ (rows matched by user_id): what a failure should name."""
    assert got["user_id"].to_pylist() == expected["user_id"].to_pylist()
    users = expected["user_id"].to_pylist()
    return {
        name: [u for u, a, b in zip(users, got[name].to_pylist(), expected[name].to_pylist(), strict=True) if a != b]
        for name in expected.column_names
        if got[name].to_pylist() != expected[name].to_pylist()
    }


def _profiles(lake: Path, items: Path, start_ms: int, spec: ProfileSpec) -> dict[str, pd.DataFrame]:
    """The profiles and the two tables the build leaves for the quality checks and the segments, by pseudonym."""
    con = duckdb.connect()
    _load(con, lake, items, start_ms)
    table = build_profiles(con, AS_OF_MS, spec)
    assert table.schema.equals(profile_schema())
    out = {
        "ranges": user_ranges(con),
        "keys": con.execute("SELECT count(*) FROM user_keys").fetchall()[0][0],
        "profiles": table.to_pandas(),
        "table": table,
        "categories": con.sql(
            "SELECT k.user_id, c.category, c.score FROM profile_categories c JOIN user_keys k USING (uid) "
            "ORDER BY k.user_id, c.category"
        ).df(),
        "sessions": con.sql(
            "SELECT k.user_id, s.bucket, s.start_ms, s.end_ms, s.bounce FROM profile_sessions s "
            "JOIN user_keys k USING (uid) ORDER BY k.user_id, s.start_ms"
        ).df(),
    }
    con.close()
    return out


@pytest.fixture(scope="module")
def one_range(synthetic: tuple[Path, Path]):
    """The profiles of one range (the default for a lake this small), per history start, computed once."""
    cache: dict[int, dict] = {}

    def profiles(start_ms: int) -> dict:
        if start_ms not in cache:
            cache[start_ms] = _profiles(*synthetic, start_ms, SPEC)
        return cache[start_ms]

    return profiles


SPEC = ProfileSpec(top_k=3)  # ties in the top categories are broken by name


def _long_scores(frame: pd.DataFrame) -> pd.DataFrame:
    rows = [
        (user, category, score)
        for user, m in zip(frame["user_id"], frame["pref_implicit"], strict=True)
        for category, score in m
    ]
    return pd.DataFrame(rows, columns=["user_id", "category", "score"])


@pytest.mark.parametrize(
    ("parts", "history_days"),
    [(4, None), (7, 60), ("users", None)],
    ids=["4 ranges", "7 ranges, 60 days: keys added after the load's", "one user per range"],
)
def test_profiles_over_several_ranges_equal_one_range(
    synthetic: tuple[Path, Path], one_range, monkeypatch: pytest.MonkeyPatch, parts, history_days: int | None
) -> None:
    lake, items = synthetic
    start = 0 if history_days is None else AS_OF_MS - history_days * 86_400_000
    expected = one_range(start)
    assert expected["ranges"] == [None]
    several = Ranges(monkeypatch, parts)
    got = _profiles(lake, items, start, SPEC)
    (ranges,) = several.used
    if parts == "users":
        assert len(ranges) == got["keys"] and max(several.users[0]) == 1
    else:
        assert len(ranges) == parts and min(several.users[0]) >= 3  # several users in every range
    profiles = expected["profiles"]
    assert profiles["user_id"].is_monotonic_increasing and profiles["user_id"].is_unique
    assert len(profiles) >= N_USERS and profiles["n_events_90d"].gt(0).sum() >= 40
    if history_days is not None:  # the users seen only before the history: keys after the others, rows among them
        late = profiles[profiles["user_id"].str.endswith("x")]
        assert len(late) == 4 and (late["n_events_90d"] == 0).all() and late["first_seen_ms"].isna().all()
    # pref_implicit included: its weights are summed as integers (build._categories_sql), so DuckDB's thread order,
    # which used to change the last bits of a sum of doubles, no longer shows
    assert _differences(got["table"], expected["table"]) == {}
    assert_frame_equal(got["profiles"], profiles, check_exact=True)
    assert got["table"].equals(expected["table"]) and got["table"].schema.equals(expected["table"].schema)
    scores = _long_scores(profiles)
    assert len(scores) > 100
    assert_frame_equal(_long_scores(got["profiles"]), scores, check_exact=True)
    assert_frame_equal(got["categories"], expected["categories"], check_exact=True)
    assert_frame_equal(got["sessions"], expected["sessions"], check_exact=True)


def _segment_run(lake: Path, items: Path, out: Path, loaded=None) -> tuple[pd.DataFrame, dict]:
    run = run_segments(lake, items, parse_segments(RULES), out, as_of_ms=AS_OF_MS, loaded=loaded)
    members = run.membership.to_pandas().sort_values(["segment", "user_id"], ignore_index=True)
    summary = json.loads((out / "summary.json").read_text())
    return members, summary


@pytest.fixture(scope="module")
def segments_one_range(synthetic: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    lake, items = synthetic
    with pytest.MonkeyPatch.context() as monkeypatch:
        one = Ranges(monkeypatch, None)
        members, summary = _segment_run(lake, items, tmp_path_factory.mktemp("segments") / "one")
    assert one.used == [[None], [None]]  # membership, then the summary's top items
    return members, summary


@pytest.mark.parametrize("parts", [4, "users"], ids=["4 ranges", "one user per range"])
def test_segments_over_several_ranges_equal_one_range(
    synthetic: tuple[Path, Path], segments_one_range, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, parts
) -> None:
    """Memberships, sizes, top items and categories (summed over the ranges) and overlaps; on the segments' own load
    and, for 4 ranges, on a profile build's (the shared sessions of recstack.profiles.build.shared_sessions)."""
    lake, items = synthetic
    members, summary = segments_one_range
    sizes = {name: s["size"] for name, s in summary["segments"].items()}
    assert sum(1 for n in sizes.values() if n >= 3) >= 5, sizes  # the rules select real groups
    assert max(len(s["top_items"]) for s in summary["segments"].values()) == segments_batch.TOP_ITEMS
    assert max(len(s["top_categories"]) for s in summary["segments"].values()) == len(CATEGORIES)

    several = Ranges(monkeypatch, parts)
    got_members, got_summary = _segment_run(lake, items, tmp_path / "several")
    assert len(several.used) == 2 and all(len(r) >= 4 for r in several.used)
    if parts != "users":
        assert all(min(n) >= 3 for n in several.users)
    assert_frame_equal(got_members, members, check_exact=True)
    assert got_summary == summary
    if parts == "users":
        return
    shared = Ranges(monkeypatch, parts)
    con = duckdb.connect()
    _load(con, lake, items, 0)
    build_profiles(con, AS_OF_MS)
    got_members, got_summary = _segment_run(lake, items, tmp_path / "shared", loaded=con)
    con.close()
    assert len(shared.used) == 3 and all(len(r) == parts for r in shared.used)  # the build's, then the segments'
    assert_frame_equal(got_members, members, check_exact=True)
    assert got_summary == summary
