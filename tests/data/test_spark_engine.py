"""engine=spark prepares the same split as the embedded default: same rows in the same order, same folder hash.

Three layers, cheapest first:

* numpy's random stream read at any position (:mod:`recstack.data.random_stream`) and the time split's quantile,
  checked against numpy itself;
* the prepare SQL text (:mod:`recstack.data.prepare_sql`) run as written on DuckDB against the embedded numpy path,
  for every SQL strategy and cleaning step (fast, no JVM);
* the same text translated to Spark SQL, on a real local SparkSession (the test process's one, shared with the
  other Spark modules), on ML-100K (the random split), on synthetic interactions (new_items with dropped users and
  forced ties among them: ML-100K's new_items is checked on DuckDB, the same SQL text, which saves a 40 s Spark run),
  and through ``file://`` URIs (the Hadoop file system path object storage takes).

The 2M-interaction comparison of issue 16 runs in ``benchmarks/prepare_engines.py`` (it checks that both engines
wrote the same rows and exits non-zero when they differ); it takes minutes on Spark here, more than ``make test`` can
spend.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from handmade import make_dataset, random_dataset
from spark_support import SharedSpark, refusal_without_java

import recstack.data.split as split_module
import recstack.data.sql_split as sql_split
from recstack.config import compose, split_spec
from recstack.data.build_split import BuiltSplit, SplitSpec, build_split, load_source, prepare
from recstack.data.clean import CleanConfig
from recstack.data.engines import EngineError
from recstack.data.prepared import PreparedSplit
from recstack.data.random_stream import StreamCursor, draws_at, key_bits, tie_ranks
from recstack.data.schema import DataError, Dataset
from recstack.data.split import SplitConfig, linear_quantile, shuffle_within_groups
from recstack.data.sql_runner import DuckDbRunner
from recstack.data.sql_split import build_split_sql, raw_table

ML100K_HASH = "f7b18edcd4a8"  # the default ML-100K split every published figure is measured on (RESULTS.md)
STAGE_FILES = ("train", "valid", "test")


def assert_same_tables(a: object, b: object) -> None:
    """Two BuiltSplits hold the same stage tables: schema, nulls (none: a missing value is NaN) and values, NaN = NaN."""
    for stage in STAGE_FILES:
        x, y = getattr(a, stage), getattr(b, stage)
        assert x.schema == y.schema, stage
        assert [c.null_count for c in x.columns] == [c.null_count for c in y.columns], stage
        pd.testing.assert_frame_equal(x.to_pandas(), y.to_pandas(), check_exact=True)


def digest(split: PreparedSplit) -> str:
    """A hash of the split's rows, in order, over every stage and the id maps."""
    h = hashlib.sha256()
    for name in (*STAGE_FILES, "items", "users"):
        frame = split.frame(name) if name in STAGE_FILES else getattr(split, name)
        h.update(pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def assert_same_split(a: PreparedSplit, b: PreparedSplit) -> None:
    assert a.config_hash == b.config_hash
    for name in STAGE_FILES:
        pd.testing.assert_frame_equal(a.frame(name), b.frame(name), check_exact=True)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.users, b.users)
    for key in ("n_users", "n_items", "n_interactions", "n_pairs", "counts", "cleaning", "dropped"):
        assert a.manifest[key] == b.manifest[key], key
    assert digest(a) == digest(b)


# --- numpy's stream, read anywhere ------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [20, 32, 33, 43, 62])
@pytest.mark.parametrize("used", [0, 1, 2])  # 32-bit draws before: an odd number leaves a buffered half
def test_stream_cursor_reads_numpys_integers_at_any_position(bits: int, used: int) -> None:
    rng = np.random.default_rng(7)
    rng.integers(0, 1 << 20, used)
    cursor = StreamCursor.of(rng)
    expected = rng.integers(0, 1 << bits, 1001, dtype=np.int64)
    after = rng.integers(0, 1 << 62, 5, dtype=np.int64)
    for start, count in [(0, 1001), (0, 1), (1, 5), (2, 7), (500, 501), (999, 2)]:
        assert (cursor.integers(bits, start, count) == expected[start : start + count]).all()
    positions = np.random.default_rng(1).integers(0, 1001, 300)
    assert (draws_at(cursor, bits, positions, max_gap=10) == expected[positions]).all()
    assert (cursor.after_integers(bits, 1001).integers(62, 0, 5) == after).all()
    assert (cursor.after_integers(bits, 1001).generator().integers(0, 1 << 62, 5) == after).all()


def positional_shuffle(group: np.ndarray, seed: int, bits: int) -> np.ndarray:
    """``shuffle_within_groups(group, default_rng(seed))`` computed as the SQL engines do it: keys read at stream
    positions, ties (same group and key) ordered by :func:`tie_ranks`, then one sort by (group, key, tiebreak)."""
    cursor = StreamCursor.from_seed(seed)
    key = cursor.integers(bits, 0, len(group))
    offset = np.arange(len(group)) - np.searchsorted(group, group)
    order = np.lexsort((offset, key, group))
    tied = np.zeros(len(group), dtype=bool)
    same = (group[order][1:] == group[order][:-1]) & (key[order][1:] == key[order][:-1])
    tied[order[1:][same]] = tied[order[:-1][same]] = True
    members = order[tied[order]]
    tiebreak = np.zeros(len(group), dtype=np.int64)
    if len(members):
        g, k = group[members], key[members]
        run = np.cumsum(np.concatenate(([0], (g[1:] != g[:-1]) | (k[1:] != k[:-1]))))
        tiebreak[members], _ = tie_ranks(run, cursor.after_integers(bits, len(group)))
    return np.lexsort((tiebreak, key, group))


@pytest.mark.parametrize("rand_bits", [None, 3])  # 3 bits: most keys tie, so numpy redraws them
def test_positional_keys_reproduce_shuffle_within_groups(rand_bits: int | None) -> None:
    group = np.sort(np.random.default_rng(0).integers(0, 50, 2000))
    bits = key_bits(int(group[-1]), int(np.bincount(group).max())) if rand_bits is None else rand_bits
    expected = shuffle_within_groups(group, np.random.default_rng(11), rand_bits=rand_bits)
    assert (positional_shuffle(group, 11, bits) == expected).all()


def test_linear_quantile_is_numpys_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 10, 997, 10_000):
        times = np.sort(rng.integers(800_000_000, 900_000_000, n))
        for q in (0.0, 0.1, 0.5, 0.8, 0.9, 0.95, 1 / 3, 0.999999, 1.0):
            assert linear_quantile(n, q, lambda k, t=times: int(t[k])) == float(np.quantile(times, q))


# --- the SQL text on DuckDB, against the embedded path -----------------------------------------------------------


def with_duplicates(n: int = 3000) -> Dataset:
    """Skewed interactions with repeated pairs, exact duplicate rows, a NaN value and numeric ids."""
    base = random_dataset(60, 40, n, seed=5, repeats=True)
    frame = base.interactions
    frame = pd.concat([frame, frame.iloc[::7]], ignore_index=True)  # exact duplicates, later in the file
    frame.loc[3, "value"] = np.nan
    frame["user_id"] = frame["user_id"].str.removeprefix("u")  # numeric ids sort as numbers: "10" after "9"
    return make_dataset(
        frame["user_id"].tolist(),
        frame["item_id"].tolist(),
        frame["timestamp"].to_numpy() // 1000,  # coarse times: many ties for the chronological order
        frame["value"].to_numpy(),
    )


def with_lone_users(n: int = 1500, lone: int = 30) -> Dataset:
    """:func:`with_duplicates` plus ``lone`` users with one interaction each: those whose item is held out have no
    warm pair, so split=new_items drops them."""
    frame = with_duplicates(n).interactions
    return make_dataset(
        [*frame["user_id"], *(str(1000 + k) for k in range(lone))],
        [*frame["item_id"], *(f"i{k}" for k in range(lone))],
        [*frame["timestamp"], *range(lone)],
        [*frame["value"], *[1.0] * lone],
    )


CASES = [
    (CleanConfig(), SplitConfig()),
    (CleanConfig(implicit_threshold=3.0, min_user_interactions=5, min_item_interactions=3), SplitConfig(name="chrono")),
    (CleanConfig(min_user_interactions=3), SplitConfig(name="loo")),
    (CleanConfig(dedup=False), SplitConfig(name="time", valid_start=0.7, test_start=0.85)),
    (CleanConfig(), SplitConfig(name="time", valid_start=0.05, test_start=0.9)),  # drops 26 users without train
    (CleanConfig(), SplitConfig(name="time", valid_start="1970-01-13", test_start=0.99)),
    (CleanConfig(implicit_threshold=2.5), SplitConfig(seed=7, ratios=(0.5, 0.3, 0.2))),
]


@pytest.mark.parametrize(("clean_cfg", "split_cfg"), CASES)
def test_sql_on_duckdb_builds_the_embedded_split(clean_cfg: CleanConfig, split_cfg: SplitConfig) -> None:
    assert_sql_builds_the_embedded_split(with_duplicates(), clean_cfg, split_cfg)


def assert_sql_builds_the_embedded_split(ds: Dataset, clean_cfg: CleanConfig, split_cfg: SplitConfig) -> BuiltSplit:
    """The SQL text on DuckDB builds what the embedded path builds from ``ds``; returns the SQL engine's split."""
    a = build_split(ds, clean_cfg, split_cfg)
    b = sql_build(ds, clean_cfg, split_cfg)
    assert_same_tables(a, b)
    assert a.items.equals(b.items) and a.users.equals(b.users)
    assert a.clean_report == b.clean_report
    assert (a.n_pairs, a.dropped_users, a.dropped_interactions) == (b.n_pairs, b.dropped_users, b.dropped_interactions)
    return b


NEW_ITEMS_CASES = [
    (CleanConfig(), SplitConfig(name="new_items")),  # drops 3 of the lone users
    (CleanConfig(), SplitConfig(name="new_items", cold_fraction=0.3, seed=1, ratios=(0.6, 0.3, 0.1))),
    (CleanConfig(min_user_interactions=3), SplitConfig(name="new_items", cold_fraction=0.5, ratios=(0.8, 0.2, 0.0))),
]


@pytest.mark.parametrize(("clean_cfg", "split_cfg"), NEW_ITEMS_CASES)
def test_sql_on_duckdb_builds_the_embedded_new_items_split(clean_cfg: CleanConfig, split_cfg: SplitConfig) -> None:
    b = assert_sql_builds_the_embedded_split(with_lone_users(), clean_cfg, split_cfg)
    if clean_cfg == CleanConfig():
        assert b.dropped_users > 0  # users whose only item is held out


def force_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys of 4 bits in both paths: they tie all the time, so numpy redraws them and the engines replay that."""
    monkeypatch.setattr(
        split_module, "shuffle_within_groups", functools.partial(split_module.shuffle_within_groups, rand_bits=4)
    )
    monkeypatch.setattr(sql_split, "key_bits", lambda *_: 4)
    monkeypatch.setattr(sql_split, "MIN_KEY_BITS", 1)


@pytest.mark.parametrize(
    ("dataset", "split_cfg"),
    [(with_duplicates, SplitConfig(seed=3)), (with_lone_users, SplitConfig(name="new_items", cold_fraction=0.3))],
)
def test_sql_redraws_tied_keys_as_numpy_does(
    monkeypatch: pytest.MonkeyPatch, dataset: Callable[[], Dataset], split_cfg: SplitConfig
) -> None:
    """With ties everywhere the engines' tie path must order pairs exactly as numpy's redraw, and (new_items) leave
    the stream where numpy's redraw left it, for the cold pairs' permutation that follows."""
    force_ties(monkeypatch)
    ds = dataset()
    a = build_split(ds, CleanConfig(), split_cfg)
    assert_same_tables(a, sql_build(ds, CleanConfig(), split_cfg))


def sql_build(ds: Dataset, clean_cfg: CleanConfig, split_cfg: SplitConfig) -> object:
    return build_split_sql(
        DuckDbRunner(), raw_table(ds.interactions), ds.items, ds.users, clean_cfg, split_cfg, name="x", source="t"
    )


def test_sql_errors_match_the_embedded_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = with_duplicates(500)
    with pytest.raises(DataError, match=r"implicit_threshold=9\.0 removed every interaction \(largest value 5\.0\)"):
        sql_build(ds, CleanConfig(implicit_threshold=9.0), SplitConfig())
    with pytest.raises(DataError, match=r"k-core min_user_interactions=10000 removed every user and item"):
        sql_build(ds, CleanConfig(min_user_interactions=10_000), SplitConfig())
    with monkeypatch.context() as patched:  # keys too narrow: numpy permutes globally, which no engine replays
        patched.setattr(sql_split, "MIN_KEY_BITS", 64)
        with pytest.raises(EngineError, match=r"split=new_items over .* engine=duckdb"):
            sql_build(ds, CleanConfig(), SplitConfig(name="new_items"))


# --- Spark ----------------------------------------------------------------------------------------------------------


def test_spark_prepares_the_published_ml100k_split(
    spark_engine: object, ml100k_split: PreparedSplit, tmp_path: Path
) -> None:
    embedded = ml100k_split  # the embedded engine's split (tests/conftest.py), prepared once per session
    spark = prepare(
        split_spec(compose("prepare", ["data=ml100k"])), out_root=tmp_path, progress=False, engine=spark_engine
    )
    assert embedded.config_hash == ML100K_HASH and spark.manifest["engine"] == "spark"
    assert_same_split(embedded, spark)
    for name in (*STAGE_FILES, "items", "users"):  # the files read back identically too
        a = pd.read_parquet(embedded.root / f"{name}.parquet")
        b = pd.read_parquet(spark.root / f"{name}.parquet")
        pd.testing.assert_frame_equal(a, b)


@pytest.fixture(scope="module")
def ml100k_new_items(tmp_path_factory: pytest.TempPathFactory) -> PreparedSplit:
    """ML-100K with split=new_items, prepared by the embedded path."""
    spec = split_spec(compose("prepare", ["data=ml100k", "split=new_items"]))
    return prepare(spec, out_root=tmp_path_factory.mktemp("embedded"), progress=False)


class DuckDbSqlEngine:
    """The prepare SQL run as written on DuckDB, as a :class:`~recstack.data.build_split.PrepareEngine`: what
    engine=spark runs, through the same folder, hash and writer, without a JVM."""

    name = "duckdb-sql"

    def build(self, spec: SplitSpec, steps: object) -> object:
        ds = load_source(spec)
        return build_split_sql(
            DuckDbRunner(),
            raw_table(ds.interactions),
            ds.items,
            ds.users,
            spec.clean,
            spec.split,
            name=ds.name,
            source=ds.source,
            steps=steps,
        )


def test_sql_on_duckdb_prepares_the_ml100k_new_items_split(ml100k_new_items: PreparedSplit, tmp_path: Path) -> None:
    spec = split_spec(compose("prepare", ["data=ml100k", "split=new_items"]))
    sql = prepare(spec, out_root=tmp_path, progress=False, engine=DuckDbSqlEngine())
    assert sql.manifest["engine"] == "duckdb-sql"
    assert_same_split(ml100k_new_items, sql)


def test_spark_new_items_drops_users_and_redraws_ties_as_numpy(
    spark_engine: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users whose only item is held out are dropped, and with keys tied everywhere the warm pairs' redraw (on the
    workers' keys) and the cold pairs' permutation after it (drawn on the driver) are numpy's."""
    from recstack.data.spark_engine import SparkRunner

    force_ties(monkeypatch)
    ds, split_cfg = with_lone_users(), SplitConfig(name="new_items", cold_fraction=0.3, seed=1)
    a = build_split(ds, CleanConfig(), split_cfg)
    runner = SparkRunner(spark_engine.spark)
    try:
        b = build_split_sql(
            runner, raw_table(ds.interactions), ds.items, ds.users, CleanConfig(), split_cfg, name="x", source="t"
        )
    finally:
        runner.close()
    assert b.dropped_users > 0
    assert_same_tables(a, b)
    assert a.items.equals(b.items) and a.users.equals(b.users)
    assert (a.n_pairs, a.dropped_users, a.dropped_interactions) == (b.n_pairs, b.dropped_users, b.dropped_interactions)


def test_spark_cleans_splits_and_writes_synthetic_interactions_alike(spark_engine: object, tmp_path: Path) -> None:
    """Dedup, threshold, k-core and the chrono split on synthetic data, written by Spark through the Hadoop file
    system to a URI root: the path s3a:// and gs:// take (object storage is not reachable here; file:// stands in)."""
    overrides = [
        "data=synthetic",
        "data.source.n_users=600",
        "data.source.n_items=300",
        "data.source.n_interactions=20000",
        "data.clean.implicit_threshold=2",
        "data.clean.min_user_interactions=5",
        "data.clean.min_item_interactions=5",
        "split=chrono",
    ]
    spec = split_spec(compose("prepare", overrides))
    embedded = prepare(spec, out_root=tmp_path / "duckdb", progress=False)
    folder, manifest = spark_engine.prepare_at(spec, f"file://{tmp_path}/remote")
    assert folder == f"file://{tmp_path}/remote/synthetic/{embedded.config_hash}" and manifest["engine"] == "spark"
    assert manifest["cleaning"]["below_threshold_removed"] > 0 and manifest["cleaning"]["k_core_rounds"] > 0
    for key in ("config_hash", "n_users", "n_items", "n_interactions", "n_pairs", "counts", "cleaning", "dropped"):
        assert manifest[key] == embedded.manifest[key], key
    written = Path(folder.removeprefix("file://"))
    for name in (*STAGE_FILES, "items", "users"):
        assert sorted((written / f"{name}.parquet").glob("part-*.parquet")), name  # a folder of part files
        frame = pd.read_parquet(written / f"{name}.parquet")  # parts in name order = the rows' order
        expected = embedded.frame(name) if name in STAGE_FILES else getattr(embedded, name)
        pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    again_folder, again = spark_engine.prepare_at(spec, f"file://{tmp_path}/remote")
    assert again_folder == folder and again["created_at"] == manifest["created_at"]  # reused, not rebuilt


def test_spark_reads_an_event_log_uri_as_the_loader_does(spark_engine: object, tmp_path: Path) -> None:
    """``data=events data.source.path=s3a://...`` is read by Spark itself; it must give the shared loader's rows."""
    from recstack.data.sources import load_event_log
    from recstack.data.spark_engine import SparkRunner, read_event_log

    frame = with_duplicates(2000).interactions.fillna({"value": 2.0})  # the loader refuses a NaN value
    frame["timestamp"] = frame["timestamp"].astype("float64") + 0.75  # fractional seconds floor, as the loader does
    frame = frame.drop(columns=["event_type"])  # missing: "interaction"
    events = tmp_path / "events.parquet"
    frame.to_parquet(events, index=False)
    runner = SparkRunner(spark_engine.spark)
    runner.register_frame("raw", read_event_log(spark_engine.spark, f"file://{events}"))
    got = runner.fetch("SELECT * FROM raw ORDER BY src_row")
    runner.close()
    expected = raw_table(load_event_log(events).interactions)
    assert got.column("src_row").to_pylist() == sorted(got.column("src_row").to_pylist())
    for column in ("uid", "iid", "ts", "val", "ev"):
        assert got.column(column).to_pylist() == expected.column(column).to_pylist(), column
    iso = frame.assign(timestamp=pd.to_datetime(frame["timestamp"], unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S"))
    iso.to_parquet(tmp_path / "iso.parquet", index=False)  # ISO-8601 text, naive: read as UTC by both
    runner = SparkRunner(spark_engine.spark)
    runner.register_frame("raw", read_event_log(spark_engine.spark, f"file://{tmp_path / 'iso.parquet'}"))
    got = runner.fetch("SELECT ts FROM raw ORDER BY src_row").column("ts").to_pylist()
    runner.close()
    assert got == raw_table(load_event_log(tmp_path / "iso.parquet").interactions).column("ts").to_pylist()
    with pytest.raises(DataError, match="missing column"):
        pd.DataFrame({"user": ["a"], "item_id": ["b"], "timestamp": [1]}).to_parquet(tmp_path / "bad.parquet")
        read_event_log(spark_engine.spark, f"file://{tmp_path / 'bad.parquet'}")


# Two million synthetic interactions take minutes on Spark here, more than `make test` can spend: the identity at that
# size is checked by `benchmarks/prepare_engines.py` (it hashes both engines' rows and exits non-zero when they differ;
# figures in benchmarks/RESULTS.md), not by a skipped test.


# --- Spark without Java ------------------------------------------------------------------------------------------


def test_engine_spark_without_java_says_what_to_install(tmp_path: Path) -> None:
    """PATH without java and no JAVA_HOME: one error line naming the package, before Spark starts."""
    error = refusal_without_java(
        "recstack.cli.data",
        "prepare",
        "engine=spark",
        "data=synthetic",
        f"processed_root={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    assert error.startswith("recstack-data prepare: error: engine=spark needs Java 17+"), error
    assert "JAVA_HOME" in error
    assert not (tmp_path / "out").exists()


def test_an_old_or_broken_java_home_is_named(tmp_path: Path) -> None:
    from recstack.data.spark_engine import require_java

    with pytest.raises(EngineError, match=r"JAVA_HOME=/nowhere has no bin/java"):
        require_java({"JAVA_HOME": "/nowhere", "PATH": ""})
    old = tmp_path / "jdk8" / "bin"
    old.mkdir(parents=True)
    (old / "java").write_text("#!/bin/sh\necho 'openjdk version \"1.8.0_402\"' >&2\n")
    (old / "java").chmod(0o755)
    with pytest.raises(EngineError, match=r"needs Java 17\+, .* is Java 8"):
        require_java({"JAVA_HOME": str(old.parent), "PATH": ""})


def test_uri_roots_need_the_spark_engine(tmp_path: Path) -> None:
    from recstack.cli.data import run

    cfg = compose("prepare", ["data=synthetic", "processed_root=s3a://bucket/processed"])
    with pytest.raises(ValueError, match="only engine=spark writes there"):
        run("prepare", cfg)
