"""``engine=spark``: the prepare job's per-row work on PySpark, giving the embedded path's split row for row.

* The SQL of :mod:`recstack.data.prepare_sql` (DuckDB's dialect) runs translated by sqlglot (:class:`SparkRunner`);
  numpy's random keys are drawn on the workers at each pair's stream position (:mod:`recstack.data.random_stream`).
* Sources: a local source is loaded by the shared loaders (so both engines read the same rows) and handed to Spark
  as Arrow; an event log at a URI (``data=events data.source.path=s3a://bucket/events/``) is read by Spark itself
  (:func:`read_event_log`).
* Output: a local ``processed_root`` gets the shared writer's folder (:func:`recstack.data.build_split.prepare`);
  a URI root (``s3a://``, ``gs://``, ``hdfs://``, ``file://``) is written by Spark through the Hadoop file system
  (:meth:`SparkEngine.prepare_at`), each stage table a folder of Parquet part files in the layout's row order.

Spark needs Java 17+; :func:`require_java` checks for it before Spark tries, so a missing Java is one clear line.
PySpark comes with the ``spark`` extra (``pip install -e '.[spark]'``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from recstack.data import prepare_sql as q
from recstack.data.build_split import (
    STAGES,
    BuiltSplit,
    SplitSpec,
    _manifest,
    _safe_name,
    _Steps,
    load_source,
)
from recstack.data.engines import EngineError, is_uri
from recstack.data.idmap import items_table, users_table
from recstack.data.prepared import FORMAT_VERSION, MANIFEST
from recstack.data.schema import DataError, empty_items, empty_users
from recstack.data.sql_split import SqlSplit, collect_split, final_ids, raw_table, run_split_sql

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

MIN_JAVA = 17
JAVA_HINT = (
    "install a Java 17+ runtime (Debian/Ubuntu: apt install openjdk-17-jre-headless; macOS: brew install openjdk@17) "
    "and put its java on PATH or set JAVA_HOME, or prepare with engine=duckdb"
)
PYSPARK_HINT = "pip install -e '.[spark]' (PySpark from PyPI), or prepare with engine=duckdb"


@dataclass(frozen=True)
class SparkSettings:
    """The ``engine`` config node of ``engine=spark`` (``configs/engine/spark.yaml``)."""

    master: str | None = "local[*]"
    app_name: str = "recstack"
    driver_memory: str | None = "4g"
    shuffle_partitions: int = 8
    conf: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, node: Mapping[str, Any] | None) -> SparkSettings:
        node = dict(node or {})
        node.pop("name", None)
        unknown = set(node) - {"master", "app_name", "driver_memory", "shuffle_partitions", "conf"}
        if unknown:
            raise ValueError(f"engine: unknown key(s) {sorted(unknown)} for engine=spark")
        conf = {
            str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in dict(node.get("conf") or {}).items()
        }
        return cls(
            master=node.get("master", "local[*]"),
            app_name=str(node.get("app_name", "recstack")),
            driver_memory=node.get("driver_memory", "4g"),
            shuffle_partitions=int(node.get("shuffle_partitions", 8)),
            conf=conf,
        )


def _java_binary(environ: Mapping[str, str]) -> str | None:
    home = environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        return str(candidate) if os.access(candidate, os.X_OK) else None
    return shutil.which("java", path=environ.get("PATH", os.defpath))


def require_java(environ: Mapping[str, str] | None = None) -> tuple[str, int]:
    """``(java binary, major version)`` the way Spark will find it (JAVA_HOME, else java on PATH); raises
    :class:`EngineError` naming what to install when there is none, or it is older than Java 17."""
    environ = os.environ if environ is None else environ
    java = _java_binary(environ)
    if java is None:
        where = f"JAVA_HOME={environ['JAVA_HOME']} has no bin/java" if environ.get("JAVA_HOME") else "no java on PATH"
        raise EngineError(f"engine=spark needs Java {MIN_JAVA}+ and found none ({where}): {JAVA_HINT}")
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"engine=spark: {java} -version failed ({exc}): {JAVA_HINT}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if match is None:
        raise EngineError(f"engine=spark: cannot read the Java version from `{java} -version`: {JAVA_HINT}")
    major = int(match.group(2)) if match.group(1) == "1" else int(match.group(1))  # "1.8.0" is Java 8
    if major < MIN_JAVA:
        raise EngineError(f"engine=spark needs Java {MIN_JAVA}+, {java} is Java {major}: {JAVA_HINT}")
    return java, major


def spark_session(settings: SparkSettings) -> tuple[SparkSession, bool]:
    """A SparkSession for ``settings``, after checking Java, and whether it was started here: ``False`` when one was
    already running in this process (a notebook's, a test's, spark-submit's), which ``getOrCreate`` returns with only
    the runtime SQL settings applied."""
    require_java()
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise EngineError(f"engine=spark needs PySpark: {PYSPARK_HINT}") from None
    running = SparkSession.getActiveSession() is not None
    builder = SparkSession.builder.appName(settings.app_name)
    if settings.master:
        builder = builder.master(settings.master)
        if settings.master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
            # Local Python workers must run this interpreter (it has recstack and numpy); PySpark reads only the
            # variable (else plain `python3`). A cluster sets its own (README: Spark).
            os.environ["PYSPARK_PYTHON"] = sys.executable
    if settings.driver_memory:
        builder = builder.config("spark.driver.memory", settings.driver_memory)
    builder = builder.config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
    builder = builder.config("spark.ui.showConsoleProgress", "false")  # stdout/stderr stay readable
    builder = builder.config("spark.sql.session.timeZone", "UTC")  # naive event times are UTC, as the loaders read them
    for key, value in settings.conf.items():
        builder = builder.config(key, value)
    with warnings.catch_warnings():  # PySpark warns about pandas >= 3; recstack hands it Arrow only
        warnings.simplefilter("ignore", FutureWarning)
        return builder.getOrCreate(), not running


@lru_cache(maxsize=256)
def to_spark_sql(sql: str) -> str:
    """The DuckDB-dialect text in Spark SQL (sqlglot)."""
    import sqlglot

    return sqlglot.transpile(sql, read="duckdb", write="spark")[0]


class SparkRunner:
    """:class:`~recstack.data.sql_runner.SqlRunner` on a SparkSession: tables are cached temp views."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        self._frames: dict[str, DataFrame] = {}

    def sql(self, sql: str) -> DataFrame:
        return self.spark.sql(to_spark_sql(sql))

    def _keep(self, name: str, frame: DataFrame) -> int:
        frame = frame.persist()
        count = frame.count()
        old = self._frames.pop(name, None)
        frame.createOrReplaceTempView(name)
        self._frames[name] = frame
        if old is not None:
            old.unpersist()
        return count

    def register(self, name: str, table: pa.Table) -> int:
        with warnings.catch_warnings():  # PySpark warns about pandas >= 3 even when only Arrow is used
            warnings.simplefilter("ignore", FutureWarning)
            return self.register_frame(name, self.spark.createDataFrame(table))

    def register_frame(self, name: str, frame: DataFrame) -> int:
        return self._keep(name, frame)

    def materialize(self, name: str, sql: str) -> int:
        return self._keep(name, self.sql(sql))

    def view(self, name: str, sql: str) -> None:
        self.sql(sql).createOrReplaceTempView(name)

    def fetch(self, sql: str) -> pa.Table:
        return self.sql(sql).toArrow()

    def map_users(self, name: str, sql: str, fn: Callable[[pa.Table], pa.Table], schema: pa.Schema) -> int:
        from pyspark.sql.pandas.types import from_arrow_schema

        def per_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            batches = list(batches)  # hash partitioning by user: each partition holds whole users
            if batches:
                yield from fn(pa.Table.from_batches(batches)).cast(schema).to_batches()

        # as many parts as the shuffles use (at least one per core): a part is held whole in a Python worker
        parts = max(
            self.spark.sparkContext.defaultParallelism, int(self.spark.conf.get("spark.sql.shuffle.partitions"))
        )
        rows = self.sql(sql).repartition(parts, "u").sortWithinPartitions("u", "i")
        with warnings.catch_warnings():  # PySpark warns about pandas >= 3 even when only Arrow is used
            warnings.simplefilter("ignore", FutureWarning)
            mapped = rows.mapInArrow(per_partition, from_arrow_schema(schema))
        return self._keep(name, mapped)

    def drop(self, name: str) -> None:
        frame = self._frames.pop(name, None)
        self.spark.catalog.dropTempView(name)
        if frame is not None:
            frame.unpersist()

    def close(self) -> None:
        for name in list(self._frames):
            self.drop(name)


def read_event_log(spark: SparkSession, path: str) -> DataFrame:
    """An event log (Parquet: ``user_id, item_id, timestamp[, event_type, value]``) at a URI, read by Spark, as the
    ``raw`` table. As :func:`~recstack.data.sources.event_log.load_event_log`: ids as text (float ids as integers),
    Unix seconds or a timestamp column, a missing ``event_type`` is ``interaction``, a missing ``value`` 1.0; rows
    are numbered in Spark's reading order."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DateType, FloatType, IntegralType, NumericType, StringType, TimestampType

    try:
        frame = spark.read.parquet(path)
    except Exception as exc:  # Spark's AnalysisException: path missing, not Parquet, no connector for the scheme
        raise DataError(f"{path}: cannot read it as Parquet with Spark ({str(exc).splitlines()[0]})") from None
    types = {f.name: f.dataType for f in frame.schema.fields}
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in types]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; it has {list(types)}")

    def as_text(column: str) -> Any:
        kind = types[column]
        c = F.col(column)
        if isinstance(kind, NumericType) and not isinstance(kind, IntegralType):
            c = c.cast("bigint")  # ids stored as floats (1.0) mean the integer id
        return c.cast("string")

    kind = types["timestamp"]
    if isinstance(kind, TimestampType | DateType):
        ts = F.unix_seconds(F.col("timestamp").cast("timestamp"))
    elif isinstance(kind, StringType):  # Unix seconds as text, or ISO-8601 (naive times are UTC: the session's zone)
        seconds = F.floor(F.expr("try_cast(timestamp AS DOUBLE)")).cast("bigint")
        ts = F.coalesce(seconds, F.unix_seconds(F.expr("try_to_timestamp(timestamp)")))
    else:
        ts = F.floor(F.col("timestamp").cast("double")).cast("bigint")
    raw = frame.select(
        as_text("user_id").alias("uid"),
        as_text("item_id").alias("iid"),
        ts.alias("ts"),
        (F.col("value").cast(FloatType()) if "value" in types else F.lit(1.0).cast(FloatType())).alias("val"),
        (F.col("event_type").cast("string") if "event_type" in types else F.lit("interaction")).alias("ev"),
        F.monotonically_increasing_id().alias("src_row"),
    )
    bad = raw.select(
        F.count(F.when(F.col("uid").isNull() | (F.length("uid") == 0), 1)).alias("user_id"),
        F.count(F.when(F.col("iid").isNull() | (F.length("iid") == 0), 1)).alias("item_id"),
        F.count(F.when(F.col("ev").isNull() | (F.length("ev") == 0), 1)).alias("event_type"),
        F.count(F.when(F.col("ts").isNull() | (F.abs(F.col("ts")) >= 100_000_000_000), 1)).alias("timestamp"),
        F.count(F.when(F.col("val").isNull() | F.isnan("val"), 1)).alias("value"),
        F.count(F.lit(1)).alias("rows"),
    ).first()
    if bad["rows"] == 0:
        raise DataError(f"{path}: no rows; expected at least one event")
    problems = [f"{bad[c]:,} row(s) with an empty or bad {c}" for c in ("user_id", "item_id", "event_type") if bad[c]]
    if bad["timestamp"]:
        problems.append(f"{bad['timestamp']:,} row(s) whose timestamp is missing or not Unix seconds (milliseconds?)")
    if bad["value"]:
        problems.append(f"{bad['value']:,} row(s) whose value is missing or not a number")
    if problems:
        raise DataError(f"{path}: {'; '.join(problems)}; fix those rows")
    return raw


def _spark_source(spec: SplitSpec) -> str | None:
    """The URI of an event log that Spark reads itself, or None (the shared loader reads the source)."""
    source = spec.data_config.get("source")
    if isinstance(source, Mapping) and source.get("name") == "events" and is_uri(str(source.get("path", ""))):
        if source.get("user_fraction") is not None:
            raise EngineError(
                "data.source.user_fraction is applied by the shared loaders, not to an event log Spark reads from "
                f"{source['path']}; sample a local copy, or leave user_fraction out"
            )
        return str(source["path"])
    return None


class _Written:
    """What a split Spark wrote itself tells the manifest (the :class:`~recstack.data.build_split.SplitSummary`)."""

    def __init__(self, source: str, result: SqlSplit, counts: dict[str, int], n_users: int, n_items: int) -> None:
        self.source, self._counts, self.n_users, self.n_items = source, counts, n_users, n_items
        self.n_pairs, self.clean_report = result.n_pairs, result.clean_report
        self.dropped_users, self.dropped_interactions = result.dropped_users, result.dropped_interactions

    def counts(self) -> dict[str, int]:
        return dict(self._counts)


class SparkEngine:
    """The :class:`~recstack.data.build_split.PrepareEngine` of ``engine=spark``. It starts a session on first use
    (or uses ``spark``, one the caller owns, or the one already running in this process) and stops only a session it
    started (:meth:`close`)."""

    name = "spark"

    def __init__(self, settings: SparkSettings | None = None, spark: SparkSession | None = None) -> None:
        self.settings = settings or SparkSettings()
        self._spark = spark
        self._owned = False

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            self._spark, self._owned = spark_session(self.settings)
        return self._spark

    def close(self) -> None:
        if self._owned and self._spark is not None:
            self._spark.stop()
        self._spark, self._owned = None, False

    def _load(self, runner: SparkRunner, spec: SplitSpec, steps: _Steps) -> tuple[str, str, Any, Any, int]:
        """Register ``raw``; return (dataset name, source, item metadata, user metadata, rows)."""
        uri = _spark_source(spec)
        with steps.step("load"):
            if uri is not None:
                rows = runner.register_frame("raw", read_event_log(runner.spark, uri))
                return spec.name, f"event-log:{uri}", empty_items(), empty_users(), rows
            dataset = load_source(spec)
            rows = runner.register("raw", raw_table(dataset.interactions))
            return dataset.name, dataset.source, dataset.items, dataset.users, rows

    def build(self, spec: SplitSpec, steps: _Steps) -> BuiltSplit:
        """The split, built on Spark and collected here for the shared writer (a local ``processed_root``)."""
        runner = SparkRunner(self.spark)
        try:
            name, source, items, users, rows = self._load(runner, spec, steps)
            result = run_split_sql(runner, spec.clean, spec.split, dataset=name, rows_in=rows, steps=steps)
            return collect_split(runner, result, items, users, name=name, source=source, steps=steps)
        finally:
            runner.close()

    def prepare_at(self, spec: SplitSpec, out_root: str, *, force: bool = False) -> tuple[str, dict[str, Any]]:
        """Prepare (or reuse) the split under a URI root, written by Spark; returns its folder and manifest.

        The folder is ``<out_root>/<dataset>/<config-hash>/`` as on local disk; the tables are written to a hidden
        sibling folder, which is renamed into place once the manifest is in it (object stores rename by copying:
        slower, but an interrupted run still leaves no folder with a manifest).
        """
        spark = self.spark
        jvm, conf = spark._jvm, spark._jsc.hadoopConfiguration()
        hadoop_path = jvm.org.apache.hadoop.fs.Path
        root = f"{out_root.rstrip('/')}/{_safe_name(spec.name)}/{spec.config_hash}"
        fs = hadoop_path(root).getFileSystem(conf)
        if not force and fs.exists(hadoop_path(f"{root}/{MANIFEST}")):
            log.info("prepare: reusing %s", root)
            return root, _read_text_json(spark, f"{root}/{MANIFEST}")
        started = time.perf_counter()
        steps = _Steps(total=0)
        tmp = f"{root.rsplit('/', 1)[0]}/.{spec.config_hash}.tmp-{uuid.uuid4().hex[:8]}"
        runner = SparkRunner(spark)
        try:
            name, source, items, users, rows_in = self._load(runner, spec, steps)
            result = run_split_sql(runner, spec.clean, spec.split, dataset=name, rows_in=rows_in, steps=steps)
            with steps.step("write"):
                runner.materialize("final_users", q.final_codes("u", "user_codes"))
                runner.materialize("final_items", q.final_codes("i", "item_codes"))
                runner.materialize("final_all", q.final_rows_with_ids(result.chronological))
                for stage, code in STAGES:
                    rows = runner.sql(q.STAGE_ROWS.format(stage=int(code)))
                    rows.write.parquet(f"{tmp}/{stage}.parquet")
                per_stage = runner.fetch(q.STAGE_COUNTS).to_pydict()
                found = dict(zip(per_stage["stage"], per_stage["n"], strict=True))
                counts = {stage: int(found.get(code, 0)) for stage, code in STAGES}
                user_ids = final_ids(runner, "final_users")
                item_ids = final_ids(runner, "final_items")
                for table, frame in (
                    ("items", items_table(item_ids, items)),
                    ("users", users_table(user_ids, users)),
                ):
                    arrow = pa.Table.from_pandas(frame, preserve_index=False)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", FutureWarning)
                        spark.createDataFrame(arrow).coalesce(1).write.parquet(f"{tmp}/{table}.parquet")
            written = _Written(source, result, counts, len(user_ids), len(item_ids))
            manifest = {
                "format_version": FORMAT_VERSION,
                **_manifest(spec, written, steps.timing, started, steps.peak_rss_mib),
                "engine": self.name,
                "layout": "each table a folder of Parquet part files (written by Spark), in the layout's row order",
            }
            _write_text(spark, f"{tmp}/{MANIFEST}", json.dumps(manifest, indent=2, default=str) + "\n")
            if fs.exists(hadoop_path(root)):
                fs.delete(hadoop_path(root), True)
            if not fs.rename(hadoop_path(tmp), hadoop_path(root)):
                raise OSError(f"could not rename {tmp} to {root}")
            return root, json.loads(json.dumps(manifest, default=str))
        finally:
            runner.close()
            if fs.exists(hadoop_path(tmp)):
                fs.delete(hadoop_path(tmp), True)


def _write_text(spark: SparkSession, uri: str, text: str) -> None:
    """One small file through the Hadoop file system (the scheme's connector: s3a, gs, hdfs, file)."""
    path = spark._jvm.org.apache.hadoop.fs.Path(uri)
    stream = path.getFileSystem(spark._jsc.hadoopConfiguration()).create(path, True)
    try:
        stream.write(bytearray(text.encode()))
    finally:
        stream.close()


def _read_text_json(spark: SparkSession, uri: str) -> dict[str, Any]:
    text = "\n".join(row.value for row in spark.read.text(uri, wholetext=True).collect())
    return json.loads(text)
