"""``recstack-monitor engine=spark``: Spark attributes the same events and pairs the same outcomes as DuckDB, from the
same SQL text, and the whole run writes the same metrics.

One fixture lake (monitor_support.LakeBuilder) holds the hand-made cases of test_attribution.py, each for its own
user (a request id, the window rule, an event before its list by the client's clock, another user's request id, an
item the list did not show, the window's and the time bucket's edges, outcomes over two days), plus three days of
seeded random traffic in two arms, anonymous lists and a replayed request id (so ``imp`` has a row-number gap). The
test process's one local SparkSession (tests/spark_support.py) serves the module; the CLI test reuses it
(getOrCreate) and leaves it running.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monitor_support import DAY, MIN, LakeBuilder, day, loaded
from spark_support import refusal_without_java

from recstack.monitoring.attribution import attribute, outcome_pairs
from recstack.monitoring.monitor_spark import spark_joins
from recstack.monitoring.per_impression import load_impressions
from recstack.monitoring.spec import HOUR_MS, MetricSpec

pytestmark = pytest.mark.slow

SPECS = {
    "default": MetricSpec(),
    "short windows": MetricSpec(attribution_window_ms=5 * 60_000, outcome_window_ms=2 * HOUR_MS),
}
SMALL = ["alerts.min_eligible=10", "alerts.min_impressions=10", "catalogue_size=40", "ab.samples=200"]
MS = timedelta(milliseconds=1)


def hand_cases(b: LakeBuilder) -> None:
    """test_attribution.py's cases, one user each, on day -1 (so day 0 and day -2 hold only random traffic)."""
    t = -1 * DAY
    b.impression("h1-r1", "h1", ["a", "b", "c"], t + 10 * MIN)
    b.impression("h1-r2", "h1", ["c", "b"], t + 12 * MIN)
    b.event("h1", "b", "click", t + 13 * MIN, request_id="h1-r1")  # by request: r1, position 2
    b.event("h1", "b", "purchase", t + 14 * MIN)  # by window: the latest list showing b, r2
    b.impression("h2-r1", "h2", ["a", "b"], t + 60 * MIN)
    b.event("h2", "a", "click", t + 61 * MIN, client_at=t + 59 * MIN, request_id="h2-r1")  # before its list
    b.event("h2", "b", "click", t + 61 * MIN, client_at=t + 58 * MIN)  # before the list: nobody's
    b.impression("h3-r0", "h3", ["a"], t + 50 * MIN)
    b.impression("h3-r1", "h3", ["a"], t + 60 * MIN)
    b.event("h3", "a", "click", t + 61 * MIN, client_at=t + 59 * MIN, request_id="h3-r1")  # to the earlier r0
    b.impression("h4-r1", "h4", ["a", "b"], t)
    b.impression("h5-r2", "h5", ["c", "b"], t + 1 * MIN)
    b.event("h5", "a", "click", t + 2 * MIN, request_id="h4-r1")  # another user's id, never shown to h5
    b.event("h5", "b", "click", t + 3 * MIN, request_id="h4-r1")  # h5's own list showed b: the window rule
    b.impression("h6-r1", "h6", ["a", "b"], t)
    b.event("h6", "z", "purchase", t + 3 * MIN, request_id="h6-r1")  # not shown: a conversion without a position
    b.event("h6", "a", "view", t + 4 * MIN)  # not an attributed type
    # the window's edge (30 min: the last millisecond in, the first out) and a time-bucket boundary (T0 + k * 30 min)
    b.impression("h7-r1", "h7", ["a"], t + 100 * MIN)
    b.event("h7", "a", "click", t + 130 * MIN - MS)
    b.event("h7", "a", "click", t + 130 * MIN)
    b.impression("h7-r2", "h7", ["q"], t + 179 * MIN)
    b.event("h7", "q", "click", t + 181 * MIN)
    # outcomes: distinct items after each list, within 24 h
    b.impression("h8-r1", "h8", ["a", "b", "c"], t)
    b.impression("h8-r2", "h8", ["d"], t + 120 * MIN)
    b.event("h8", "x", "rating", t - 1 * MIN)
    b.event("h8", "c", "click", t + 10 * MIN)
    b.event("h8", "c", "rating", t + 11 * MIN)
    b.event("h8", "a", "rating", t + 130 * MIN)
    b.event("h8", "y", "purchase", t + 23 * 60 * MIN)
    b.event("h8", "b", "rating", t + 24 * 60 * MIN + 1 * MIN)
    # a replayed request id: the copy served first stays, the other leaves a gap in imp's row numbers
    b.impression("dup", "h9", ["a", "b"], t + 5 * MIN)
    b.impression("dup", "h9", ["a", "b"], t + 6 * MIN)
    b.event("h9", "b", "click", t + 7 * MIN, request_id="dup")


def random_traffic(b: LakeBuilder, seed: int = 3, users: int = 24) -> None:
    """Days -2..0: lists of 5 of 40 items for two arms and anonymous visitors; clicks (some with the request id,
    some with a client clock behind), conversions, and ratings and views later or unrelated."""
    rng = np.random.default_rng(seed)
    items = [f"i{k}" for k in range(40)]
    n = 0
    for d in (-2, -1, 0):
        for u in range(users):
            user = None if u % 8 == 7 else f"u{u}"
            arm = "a" if u % 2 else "b"
            for _ in range(int(rng.integers(1, 5))):
                at = d * DAY + int(rng.integers(0, 23 * 60)) * MIN + int(rng.integers(0, 60_000)) * MS
                shown = [items[k] for k in rng.choice(40, 5, replace=False)]
                rid = f"r{n}"
                n += 1
                b.impression(rid, user, shown, at, experiment="exp", arm=arm, bundle=f"{arm}@1")
                if user is None:
                    continue
                for _ in range(int(rng.integers(0, 3))):
                    item = shown[int(rng.integers(5))] if rng.random() < 0.8 else items[int(rng.integers(40))]
                    when = at + int(rng.integers(-2, 40)) * MIN
                    kind = str(rng.choice(["click", "click", "add_to_cart", "purchase", "rating", "view"]))
                    client = when - int(rng.integers(0, 3)) * MIN if rng.random() < 0.3 else None
                    b.event(user, item, kind, when, request_id=rid if rng.random() < 0.5 else None, client_at=client)
                if rng.random() < 0.4:
                    b.event(user, items[int(rng.integers(40))], "rating", at + int(rng.integers(1, 30)) * 60 * MIN)
    b.event("u0", "i0", "view", 3 * DAY)  # collection has passed day 0's outcome window


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> LakeBuilder:
    builder = LakeBuilder(root=tmp_path_factory.mktemp("monitor-spark") / "lake")
    builder.root.mkdir()
    hand_cases(builder)
    random_traffic(builder)
    builder.write()
    return builder


def test_engine_spark_without_java_is_one_clear_line(lake: LakeBuilder, tmp_path: Path) -> None:
    """No java on PATH, no JAVA_HOME: the require_java line, before the lake is loaded or anything is written."""
    out = tmp_path / "out"
    error = refusal_without_java(
        "recstack.cli.monitor", "engine=spark", f"lake={lake.root}", f"out={out}", cwd=tmp_path
    )
    assert error.startswith("recstack-monitor: error: engine=spark needs Java 17+"), error
    assert not out.exists()


def _by_user(con, users: list[str]) -> dict[str, int]:
    """Attributed events per (hashed) user id of ``ev``."""
    rows = con.execute(
        "SELECT e.uid, count(*) FROM attributed a JOIN ev e ON e.rowid = a.ev_row GROUP BY e.uid"
    ).fetchall()
    named = {con.execute("SELECT hash(?::VARCHAR)", [u]).fetchall()[0][0]: u for u in users}
    return {named[uid]: n for uid, n in rows if uid in named}


@pytest.mark.parametrize("name", list(SPECS))
def test_spark_joins_are_duckdbs(spark_engine: object, lake: LakeBuilder, name: str) -> None:
    spec = SPECS[name]
    spark = spark_engine.spark
    con = loaded(lake, spec, -2, 0)
    try:
        assert con.execute("SELECT count(*) < max(rowid) + 1 FROM imp").fetchall()[0][0], "no gap in imp's rows"
        n = attribute(con, spec)
        duck = con.sql("SELECT * FROM attributed ORDER BY ev_row").to_arrow_table()
        duck_pairs = outcome_pairs(con, spec).sort_by([("imp_row", "ascending"), ("pos", "ascending")])
        hand = _by_user(con, ["h1", "h2", "h3", "h5", "h6", "h7", "h9"])

        # both joins over one shipment of the inputs, as the job runs them
        joined, pairs = spark_joins(spark, con, spec)
        assert joined == n
        got = con.sql("SELECT * FROM attributed").to_arrow_table()  # as stored: ordered by ev_row
        assert got.schema == duck.schema and got.equals(duck)
        assert _by_user(con, ["h1", "h2", "h3", "h5", "h6", "h7", "h9"]) == hand
        assert pairs.schema == duck_pairs.schema and pairs.equals(duck_pairs)
        # what the per-impression step makes of them (it computes DuckDB's pairs itself when given none)
        given, own = load_impressions(con, spec, pairs), load_impressions(con, spec)
        assert np.array_equal(given.n_relevant, own.n_relevant) and np.array_equal(given.hit_mask, own.hit_mask)
        assert own.n_relevant.any()
    finally:
        con.close()

    # the lake exercises both rules, a position-less conversion, and outcomes shown and not shown
    frame = duck.to_pandas()
    assert frame["by_request"].any() and not frame["by_request"].all() and frame["pos"].isna().any()
    positions = duck_pairs.column("pos").to_numpy()
    assert (positions == 0).any() and (positions >= 1).any() and n > 50
    assert "h2" not in hand, "an event before its list was attributed"
    if name == "default":
        assert hand == {"h1": 2, "h3": 1, "h5": 1, "h6": 1, "h7": 2, "h9": 1}


def _run_cli(capsys: pytest.CaptureFixture[str], lake: LakeBuilder, out: Path, *extra: str) -> dict:
    from recstack.cli.monitor import main

    with pytest.raises(SystemExit) as done:
        main([f"lake={lake.root}", f"out={out}", f"day={day(0)}", "days=3", "report=false", *SMALL, *extra])
    _, err = capsys.readouterr()
    assert done.value.code in (0, 3), err
    return json.loads((out / "summary.json").read_text())


def test_cli_engine_spark_writes_what_duckdb_writes(
    spark_engine: object, lake: LakeBuilder, capsys: pytest.CaptureFixture[str]
) -> None:
    """daily.parquet, drift.parquet and the summary's measurements with engine=spark equal engine=duckdb's. The CLI's
    engine reuses the process's SparkSession (getOrCreate) and leaves it running."""
    base = lake.root.parent
    spark = ["engine=spark", "engine.master='local[2]'", "engine.driver_memory=1g", "engine.shuffle_partitions=2"]
    summaries = {
        name: _run_cli(capsys, lake, base / name, *extra) for name, extra in (("duckdb", []), ("spark", spark))
    }
    for table in ("daily.parquet", "drift.parquet"):
        frames = [pd.read_parquet(base / name / table) for name in summaries]
        pd.testing.assert_frame_equal(frames[1], frames[0])
    daily = pd.read_parquet(base / "duckdb" / "daily.parquet")
    assert daily["impressions"].sum() > 100 and daily["judged"].sum() > 0 and (daily["ctr@10"] > 0).any()
    assert summaries["spark"]["settings"]["engine"] == "spark" and summaries["duckdb"]["settings"]["engine"] == "duckdb"
    assert "attribute and outcome pairs (Spark)" in summaries["spark"]["seconds"]
    ignored = ("generated", "seconds", "outputs", "settings")
    same = [{k: v for k, v in s.items() if k not in ignored} for s in summaries.values()]
    assert same[1] == same[0]
