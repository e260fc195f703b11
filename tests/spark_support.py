"""A local SparkSession for the Spark tests (prepare, profiles, segments, monitoring), set up for small data and many
short queries. One per test process (:class:`SharedSpark`, the ``shared_spark`` fixture of tests/conftest.py), shared
by every Spark module that process runs: the JVM's start and its JIT's warm-up are the slow part."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recstack.data.spark_engine import SparkEngine


def local_engine(local_dir: Path, app_name: str = "recstack-test", shuffle_partitions: int = 2) -> SparkEngine:
    """A started ``local[2]`` engine with 1 GiB and its scratch files under ``local_dir``; the caller closes it."""
    from recstack.data.spark_engine import SparkEngine, SparkSettings  # PySpark comes with the dev extra

    settings = SparkSettings(
        master="local[2]",
        app_name=app_name,
        driver_memory="1g",
        shuffle_partitions=shuffle_partitions,
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


class SharedSpark:
    """The process's one local engine, started on first use. A CLI under test that asks for ``engine=spark`` gets this
    session too (``getOrCreate``) and leaves it running: an engine stops only a session it started."""

    def __init__(self, local_dir: Path) -> None:
        self._local_dir = local_dir
        self._engine: SparkEngine | None = None

    def engine(self, shuffle_partitions: int = 2) -> SparkEngine:
        """The running engine, with ``spark.sql.shuffle.partitions`` set for the module that asks."""
        if self._engine is None:
            self._engine = local_engine(self._local_dir, "recstack-test", shuffle_partitions)
        self._engine.spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions))
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def refusal_without_java(module: str, *args: str, cwd: Path) -> str:
    """Run ``python -m <module> <args>`` with no java on PATH and no JAVA_HOME / SPARK_HOME, check that it exits 2,
    and return its one error line (which names Java 17+ and the package to install)."""
    bin_dir = cwd / "bin"
    bin_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "SPARK_HOME")}
    env["PATH"] = str(bin_dir)  # nothing in it: no java (the interpreter is called by its full path)
    assert shutil.which("java", path=env["PATH"]) is None
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert "error: engine=spark needs Java 17+" in error and "apt install openjdk-17-jre-headless" in error, error
    return error
