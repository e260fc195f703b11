"""A local SparkSession for the Spark tests (prepare, segments, profiles), set up for small data and many short
queries. Each test module starts one and shares it between its tests: the JVM's start is the slow part."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recstack.data.spark_engine import SparkEngine


def local_engine(local_dir: Path, app_name: str = "recstack-test") -> SparkEngine:
    """A started ``local[2]`` engine with 1 GiB, 2 shuffle partitions and its scratch files under ``local_dir``; the
    caller closes it."""
    from recstack.data.spark_engine import SparkEngine, SparkSettings  # PySpark comes with the dev extra

    settings = SparkSettings(
        master="local[2]",
        app_name=app_name,
        driver_memory="1g",
        shuffle_partitions=2,
        conf={
            "spark.ui.enabled": "false",
            "spark.local.dir": str(local_dir),
            # Small data, many short queries: compiling each plan (whole-stage code generation, the JIT's top tier)
            # and adaptive re-planning cost more than they save here; measured 126 s -> 49 s for the URI test's job.
            "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
            "spark.sql.codegen.wholeStage": "false",
            "spark.sql.adaptive.enabled": "false",
        },
    )
    engine = SparkEngine(settings)
    engine.spark.sparkContext.setLogLevel("ERROR")
    return engine
