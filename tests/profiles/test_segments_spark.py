"""``recstack-segments run engine=spark``: Spark computes the same members, in the same order, as DuckDB.

One synthetic lake (the profile tests' LakeBuilder) with every event type the rules read, several devices, bots,
stated categories and attributes, an anonymous visitor merged into a user, and events after the run's time; the
shipped rules (configs/segments/) plus rules for sums, shares, devices, ``not`` and short windows. Both engines are
compared at several times, so windows slide between them. The test process's one local SparkSession
(tests/spark_support.py) serves the module; the CLI test reuses it (getOrCreate) and leaves it running.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from profiles_support import AS_OF_MS, ITEMS, LakeBuilder, write_items
from spark_support import refusal_without_java

from recstack.config import config_dir
from recstack.profiles.rules import HOUR_MS, load_segments, parse_segments
from recstack.profiles.segments_batch import connect, evaluate_membership, load_inputs
from recstack.profiles.segments_spark import spark_membership

pytestmark = pytest.mark.slow

DAY_MS = 24 * HOUR_MS
RULES = {
    "dwellers": {"sum": {"event": "dwell", "within": "2d"}, "gte": 90_000},
    "mobile_scifi": {"count": {"category": "Sci-Fi", "device": "mobile", "within": "7d"}, "gte": 2},
    "drama_share": {"share": {"category": "Drama", "event": ["view", "click"], "within": "14d"}, "gte": 0.34},
    "stated_comedy": {"count": {"event": "preference", "category": "Comedy", "within": "30d"}, "gte": 1},
    "busy_today": {"sessions": {"within": "1d"}, "gte": 2},
    "not_f_or_active": {"any": [{"attribute": "gender", "ne": "F"}, {"count": {"within": "12h"}, "gte": 1}]},
    "steady_viewers": {
        "all": [
            {"count": {"event": "view", "within": "30d"}, "gte": 3},
            {"not": {"sessions": {"within": "7d"}, "gte": 2}},
        ]
    },
    "not_young": {"not": {"attribute": "age_band", "in": ["18-24"]}},
    "clicked_lately": {"count": {"event": "click", "within": "5h"}, "gte": 1},
}
# before any event (every input table empty), the lake's "now", and two days and a few hours later (windows slide by
# days and hours; events after "now" count)
CHECKPOINTS = (AS_OF_MS - 300 * DAY_MS, AS_OF_MS, AS_OF_MS + 2 * DAY_MS + 3 * HOUR_MS + 7 * 60_000)
KINDS = ("view", "view", "click", "rating", "dwell", "purchase", "add_to_cart", "preference")
CATEGORIES = sorted({c for cats in ITEMS.values() for c in cats})


def fill(builder: LakeBuilder, seed: int = 11, users: int = 60) -> None:
    """Sessions of events per user over the 40 days before AS_OF (some run past it), in time order."""
    rng = np.random.default_rng(seed)
    items = [*ITEMS, "i9"]  # i9: not in the catalogue (no categories)
    for u in range(users):
        user = f"u{u:02d}"
        device = "bot" if u % 10 == 9 else ("desktop", "mobile", "tablet")[u % 3]
        if u % 3 == 0:
            age = str(rng.choice(["18-24", "25-34", "35-44"]))
            builder.event(
                user, "profile", before=timedelta(days=int(rng.integers(1, 200))), age_band=age, gender="MF"[u % 2]
            )
        before = timedelta(minutes=int(rng.integers(0, 40 * 24 * 60)))
        for _ in range(int(rng.integers(1, 10))):  # sessions
            for _ in range(int(rng.integers(1, 8))):  # events minutes apart, sometimes at the 30-minute gap's edge
                kind = str(rng.choice(KINDS))
                extra: dict[str, object] = {"device_class": device}
                item = None
                if kind == "preference":
                    extra.update(category=str(rng.choice(CATEGORIES)), value=1.0)
                else:
                    item = items[int(rng.integers(len(items)))]
                if kind == "rating":
                    extra["value"] = float(rng.integers(1, 6))
                if kind == "dwell":
                    extra["value"] = float(rng.integers(1, 120) * 1000)
                builder.event(user, kind, before=before, item=item, **extra)
                before -= timedelta(minutes=int(rng.integers(1, 31)))
            before -= timedelta(minutes=int(rng.choice([31, 180, 24 * 60, 2 * 24 * 60])))
    # an anonymous visitor who signs in as u01: their views count as u01's
    for k in range(3):
        builder.event("v01", "click", before=timedelta(hours=2, minutes=k), item="i1", anonymous=True)
    builder.alias("v01", "u01", before=timedelta(hours=1))


@pytest.fixture(scope="module")
def lake_fixture(tmp_path_factory: pytest.TempPathFactory) -> LakeBuilder:
    root = tmp_path_factory.mktemp("segments-spark")
    (root / "lake").mkdir()
    builder = LakeBuilder(root=root / "lake", items_path=write_items(root / "items.csv"))
    fill(builder)
    builder.write()
    return builder


def rule_set() -> dict:
    return {**load_segments(config_dir() / "segments"), **parse_segments(RULES)}


def test_engine_spark_without_java_is_one_clear_line(lake_fixture: LakeBuilder, tmp_path: Path) -> None:
    """No java on PATH, no JAVA_HOME: the require_java line, before the lake is read or anything is written."""
    error = refusal_without_java(
        "recstack.cli.segments",
        "run",
        "engine=spark",
        f"lake={lake_fixture.root}",
        f"out={tmp_path / 'out'}",
        "publish=false",
        "registry=false",
        cwd=tmp_path,
    )
    assert error.startswith("recstack-segments run: error: engine=spark needs Java 17+"), error
    assert not (tmp_path / "out").exists()


def test_spark_membership_is_duckdbs(spark_engine: object, lake_fixture: LakeBuilder) -> None:
    segments = rule_set()
    nonempty: set[str] = set()
    members = 0
    for as_of in CHECKPOINTS:
        con = connect(threads=2)
        try:
            load_inputs(con, lake_fixture.root, lake_fixture.items_path, as_of)
            duck = evaluate_membership(con, segments, as_of)
            spark = spark_membership(spark_engine.spark, con, segments, as_of)
        finally:
            con.close()
        assert spark.schema.types == duck.schema.types
        assert spark.to_pylist() == duck.to_pylist(), f"at {as_of}: Spark's members differ from DuckDB's"
        nonempty |= set(duck["segment"].to_pylist())
        members += duck.num_rows
    assert members > 300, "the lake should put many users into segments"
    missing = set(RULES) - nonempty
    assert not missing, f"rules no user ever entered (the lake does not exercise them): {sorted(missing)}"


def test_cli_run_engine_spark_writes_what_duckdb_writes(
    spark_engine: object, lake_fixture: LakeBuilder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole run (membership, history, runs, summary) with engine=spark equals engine=duckdb's. The
    CLI's engine reuses the process's SparkSession (getOrCreate) and leaves it running."""
    from recstack.cli.segments import main

    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(config_dir() / "segments" / "default.yaml", rules / "default.yaml")
    (rules / "extra.yaml").write_text(yaml.safe_dump(RULES))
    common = [
        f"rules={rules}",
        f"lake={lake_fixture.root}",
        f"items_path={lake_fixture.items_path}",
        "as_of=2026-12-06T12:30:00Z",
        "publish=false",
        "registry=false",
    ]
    spark = ["engine=spark", "engine.master='local[2]'", "engine.driver_memory=1g", "engine.shuffle_partitions=2"]
    reports = {}
    for name, extra in (("duckdb", []), ("spark", spark)):
        with pytest.raises(SystemExit) as done:
            main(["run", *common, f"out={tmp_path / name}", *extra])
        out, err = capsys.readouterr()
        assert done.value.code == 0, err
        reports[name] = json.loads(out.strip().splitlines()[-1])
    assert reports["spark"]["sizes"] == reports["duckdb"]["sizes"] and sum(reports["duckdb"]["sizes"].values()) > 0
    for table in ("membership.parquet", "runs.parquet"):
        assert pq.read_table(tmp_path / "spark" / table).equals(pq.read_table(tmp_path / "duckdb" / table)), table
    summary = {name: json.loads((tmp_path / name / "summary.json").read_text()) for name in reports}
    assert summary["spark"] == summary["duckdb"]
