"""``recstack-profiles build engine=spark``: Spark computes the same profile table as DuckDB (recstack.profiles.build).

One synthetic lake with every event type the profiles read: sessions whose gaps sit at the session gap's edge, ties
at the same millisecond, client clocks and local hours, stated categories, fractional scroll values, ratings,
preferences, survey answers, profile events, devices used equally often (the tie-break), visitors merged into
accounts, a crawler, and users whose only events are 100+ days old. Both engines are compared over the whole history,
a 60-day history with other weights and gap, and before any event (every table empty). Integer, string and list columns must be equal; the values of fractional sums and means
(implicit scores, mean ratings, session means, bounce rates) to 1e-9 relative: Java's ``pow`` and the engines' order of
summing may differ in the last bits. The test process's one local SparkSession (tests/spark_support.py) serves the
module; the CLI test reuses it (getOrCreate) and leaves it running.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import random
from datetime import timedelta as td
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from profiles_support import AS_OF, AS_OF_MS, LakeBuilder, random_session, write_items
from spark_support import SharedSpark, refusal_without_java

from recstack.profiles.build import ProfileSpec, build_profiles, profile_schema, shared_sessions
from recstack.profiles.profile_surveys import load_survey_answers
from recstack.profiles.profiles_spark import spark_profiles
from recstack.profiles.source import load_attributes, load_catalogue, load_events

pytestmark = pytest.mark.slow

DAY_MS = 86_400_000
DEVICES = ("desktop", "mobile", "tablet")
KINDS = ("view", "view", "view", "click", "dwell", "scroll", "add_to_cart", "purchase", "rating", "search")
CATEGORIES = ("Sci-Fi", "Action", "Comedy", "Drama", "Horror", "Romance")
ITEMS = {f"m{k:02d}": tuple(CATEGORIES[(k * j) % len(CATEGORIES)] for j in (1, 5)[: 1 + k % 2]) for k in range(20)}
# values that are sums or means of fractions: equal to a relative 1e-9 (the module docstring says why)
APPROX = {"pref_implicit", "rating_by_category", "mean_session_s", "bounce_rate"}


def fill(builder: LakeBuilder, seed: int = 29, users: int = 36) -> int:
    """About 1,500 events over 120 days (see the module docstring); returns the number written."""
    rng = random.Random(seed)
    starts = [td(days=day, hours=hour) for day in sorted(rng.sample(range(118), 30)) for hour in (4, 15)]
    for u in range(users):
        user = f"u{u:02d}"
        for _ in range(rng.randint(2, 6)):  # sessions
            at = rng.choice(starts) - td(minutes=rng.randint(0, 59))
            random_session(
                builder,
                rng,
                user,
                at,
                max_events=10,
                same_ms=0.08,
                gaps_min=(1, 7, 29, 30, 31, 50),
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
                gender=rng.choice(["F", "M", None]),
                country=rng.choice(["FR", "DE", None]),
            )
        for _ in range(rng.randint(0, 3)):
            builder.event(
                user, "preference", td(days=rng.randint(0, 60)), category=rng.choice(CATEGORIES), value=rng.random()
            )
        for question in ("q1", "q2"):
            if rng.random() < 0.4:
                builder.event(
                    user, "survey", td(days=rng.randint(0, 60)), question_id=question, answer=rng.choice("abc")
                )
    for k, (first, second) in enumerate((("desktop", "mobile"), ("tablet", "mobile"))):  # devices used equally often
        for n, device in enumerate((first, second, first, second)):
            builder.event(f"tie{k}", "view", td(days=2, minutes=3 * n), item="m01", device_class=device)
    for k in range(4):  # visitors merged into accounts
        visitor = f"u{9 * k + 4:02d}v"
        builder.burst(visitor, 3, td(days=rng.randint(1, 40)), td(minutes=3), item="m02", anonymous=True)
        builder.alias(visitor, f"u{rng.randrange(users):02d}", td(days=rng.randint(0, 40)))
    builder.burst("crawler", 30, td(days=2), td(minutes=1), item="m03", device_class="bot")
    for k, name in enumerate(("u05x", "u21x")):  # only old events: outside a 60-day history, a profile among them
        builder.event(name, "profile", td(days=100 + k), age_band="18-24", gender="F")
        builder.event(name, "view", td(days=101 + k), item="m04")
    n = len(builder.events)
    builder.write()
    return n


@pytest.fixture(scope="module")
def lake_fixture(tmp_path_factory: pytest.TempPathFactory) -> LakeBuilder:
    root = tmp_path_factory.mktemp("profiles-spark")
    (root / "lake").mkdir()
    builder = LakeBuilder(root=root / "lake", items_path=write_items(root / "items.csv", ITEMS))
    assert 800 < fill(builder) < 4_000
    return builder


@pytest.fixture(scope="module")
def spark_engine(shared_spark: SharedSpark) -> object:
    """The process's local engine (tests/spark_support.py), with one shuffle partition: the profile query has some
    twenty shuffles, a stage each either way, and one task each is quicker (the CLI test runs two)."""
    return shared_spark.engine(shuffle_partitions=1)


def _close(a: object, b: object) -> bool:
    """Equal, with fractional numbers (also a map's values, in the same key order) equal to a relative 1e-9."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, tuple) and isinstance(b, tuple):  # a map entry: the keys exactly
        return a[0] == b[0] and _close(a[1], b[1])
    return a == b


def differences(got: pa.Table, expected: pa.Table) -> dict[str, list[str]]:
    """Per column, the users whose values differ (rows matched by user_id): what a failure should name."""
    assert got["user_id"].to_pylist() == expected["user_id"].to_pylist()
    users = expected["user_id"].to_pylist()
    out = {}
    for name in expected.column_names:
        same = _close if name in APPROX else operator.eq
        pairs = zip(users, got[name].to_pylist(), expected[name].to_pylist(), strict=True)
        bad = [u for u, a, b in pairs if not same(a, b)]
        if bad:
            out[name] = bad
    return out


def _categories(con) -> list[tuple]:
    return con.execute(
        "SELECT k.user_id, c.category, c.score FROM profile_categories c JOIN user_keys k USING (uid) "
        "ORDER BY k.user_id, c.category"
    ).fetchall()


def both(
    spark: object, lake: LakeBuilder, start_ms: int, as_of_ms: int, spec: ProfileSpec
) -> tuple[pa.Table, pa.Table]:
    """(Spark's table, DuckDB's) over one loaded connection; also checks what each leaves in it for the checks."""
    con = duckdb.connect()
    try:
        load_events(con, lake.root, start_ms, as_of_ms + 1)
        load_catalogue(con, lake.items_path)
        load_attributes(con, lake.root, as_of_ms)
        load_survey_answers(con, lake.root)
        duck = build_profiles(con, as_of_ms, spec)
        duck_categories = _categories(con)
        got = spark_profiles(spark, con, as_of_ms, spec)
        got_categories = _categories(con)
        # the quality checks' imputation reads profile_categories: Spark's scores replace DuckDB's
        assert [r[:2] for r in got_categories] == [r[:2] for r in duck_categories]
        assert all(_close(a[2], b[2]) for a, b in zip(got_categories, duck_categories, strict=True))
        # no sessions offered to the segment rules from a build whose sessions stayed in Spark
        assert shared_sessions(con, as_of_ms, spec.session_gap_ms, 0) is None
    finally:
        con.close()
    return got, duck


def assert_same(got: pa.Table, duck: pa.Table) -> None:
    assert duck.schema.equals(profile_schema())
    assert got.schema.equals(duck.schema), f"{got.schema}\n!=\n{duck.schema}"
    assert differences(got, duck) == {}


def test_spark_profiles_are_duckdbs_over_the_whole_history(spark_engine: object, lake_fixture: LakeBuilder) -> None:
    got, duck = both(spark_engine.spark, lake_fixture, 0, AS_OF_MS, ProfileSpec(top_k=3))
    assert_same(got, duck)
    # the lake exercises what is compared
    rows = duck.to_pylist()
    assert len(rows) >= 36
    assert sum(bool(r["pref_implicit"]) for r in rows) >= 25 and sum(len(r["top_categories"]) == 3 for r in rows) > 10
    assert sum(bool(r["rating_by_category"]) for r in rows) > 5 and sum(bool(r["stated_preferences"]) for r in rows) > 5
    assert sum(bool(r["survey_answers"]) for r in rows) > 5 and any(len(r["survey_answers"]) == 2 for r in rows)
    assert sum(r["age_band"] is not None for r in rows) > 10 and sum(r["mean_session_s"] is not None for r in rows) > 10
    ties = {r["user_id"]: r["device_class"] for r in rows if r["user_id"].startswith("tie")}
    assert ties == {"tie0": "mobile", "tie1": "tablet"}  # equal counts: the alphabetically last


def test_spark_profiles_are_duckdbs_with_a_short_history_and_other_settings(
    spark_engine: object, lake_fixture: LakeBuilder
) -> None:
    """A 60-day history (users seen only before it get keys after the others'), fractional weights, one zero weight,
    another half-life and a 10-minute session gap, at a time between hour boundaries."""
    spec = ProfileSpec(
        session_gap_ms=600_000,
        half_life_days=3.5,
        weights={"view": 0.3, "click": 1.7, "scroll": 0.0, "purchase": 4.0, "dwell": 0.1},
        top_k=2,
    )
    as_of = AS_OF_MS - 3 * DAY_MS - 1_234_567
    got, duck = both(spark_engine.spark, lake_fixture, as_of - 60 * DAY_MS, as_of, spec)
    assert_same(got, duck)
    late = [r for r in duck.to_pylist() if r["user_id"].endswith("x")]
    assert len(late) == 2 and all(r["first_seen_ms"] is None and r["age_band"] == "18-24" for r in late)


def test_spark_profiles_before_any_event_are_an_empty_table(spark_engine: object, lake_fixture: LakeBuilder) -> None:
    as_of = AS_OF_MS - 300 * DAY_MS
    got, duck = both(spark_engine.spark, lake_fixture, 0, as_of, ProfileSpec())
    assert duck.num_rows == 0
    assert_same(got, duck)


def test_engine_spark_without_java_is_one_clear_line(lake_fixture: LakeBuilder, tmp_path: Path) -> None:
    """No java on PATH, no JAVA_HOME: the require_java line, before the lake is read or anything is written."""
    error = refusal_without_java(
        "recstack.cli.profiles",
        "build",
        "engine=spark",
        f"lake={lake_fixture.root}",
        f"out={tmp_path / 'out'}",
        "redis.load=false",
        cwd=tmp_path,
    )
    assert error.startswith("recstack-profiles build: error: engine=spark needs Java 17+"), error
    assert not (tmp_path / "out").exists()


def test_cli_build_engine_spark_writes_what_duckdb_writes(
    spark_engine: object,
    lake_fixture: LakeBuilder,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The whole build (profiles, checks, outputs, and the segments of ``segments.run=true``) with engine=spark equals
    engine=duckdb's; the segments run on the build's engine too (the CLI's engine reuses the process's session)."""
    from recstack.cli.profiles import main

    common = [
        f"lake={lake_fixture.root}",
        f"items_path={lake_fixture.items_path}",
        "as_of=" + AS_OF.isoformat(),
        "redis.load=false",
        "threads=2",
        "segments.run=true",
    ]
    spark = ["engine=spark", "engine.master='local[2]'", "engine.driver_memory=1g", "engine.shuffle_partitions=2"]
    caplog.set_level(logging.INFO, logger="recstack.profiles")
    for name, extra in (("duckdb", []), ("spark", spark)):
        segments = f"segments.overrides=['out={tmp_path / name / 'segments'}','publish=false','registry=false']"
        with pytest.raises(SystemExit) as done:
            main(["build", *common, segments, f"out={tmp_path / name}", *extra])
        out, err = capsys.readouterr()
        assert done.value.code == 0, err
        assert "users from" in out and "  segments: " in out
    steps = [r.getMessage() for r in caplog.records if r.name == "recstack.profiles"]
    done_steps = [m.split("] ", 1)[1].rsplit(":", 1)[0] for m in steps if not m.endswith("...")]
    assert done_steps.count("profiles (Spark)") == 1 and done_steps.count("segments (Spark)") == 1, done_steps
    for table in ("membership.parquet", "runs.parquet"):
        got, duck = (pq.read_table(tmp_path / name / "segments" / table) for name in ("spark", "duckdb"))
        assert got.equals(duck), table
    assert sum(pq.read_table(tmp_path / "spark" / "segments" / "runs.parquet")["size"].to_pylist()) > 0
    got, duck = (pq.read_table(tmp_path / name / "profiles.parquet") for name in ("spark", "duckdb"))
    assert got.num_rows == duck.num_rows > 30
    assert got.schema.equals(duck.schema)
    assert differences(got, duck) == {}
    assert pq.read_table(tmp_path / "spark" / "anomalies.parquet").equals(
        pq.read_table(tmp_path / "duckdb" / "anomalies.parquet")
    )
    quality = {name: json.loads((tmp_path / name / "quality.json").read_text()) for name in ("spark", "duckdb")}
    assert quality["spark"] == quality["duckdb"]
