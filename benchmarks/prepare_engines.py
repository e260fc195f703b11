"""DuckDB (embedded default) vs Spark prepare: wall time and peak RSS of the whole process tree, ML-100K and 2M.

    RECSTACK_DATA_HOME=../shared/data nice .venv/bin/python benchmarks/prepare_engines.py [--runs 3] [--sizes ml100k,2m]
        [--budget-min 15] [--spark-conf spark.sql.adaptive.enabled=false ...]

Each run is the command a user types, in a fresh process: ``recstack-data prepare engine=<e> data=... force=true``
into a temporary ``processed_root``. So the Spark figures include starting the JVM and Spark's Python workers (what
``engine=spark`` costs on one machine); the manifest's ``timing_s.total`` leaves out only the interpreter's imports
(for Spark it still includes starting the session: ``total`` minus the sum of the steps). Peak RSS is sampled every 0.1 s over the process and all its children (Spark runs a JVM child and
Python workers under it), summed: pages they share are counted once per process, so it is an upper bound.

``--spark-conf key=value``: Spark settings on top of ``configs/engine/spark.yaml`` (``++engine.conf={...}``).
``--budget-min``: a further run of an engine is skipped (and counted in ``runs_skipped_for_budget``) when its last
run's wall time would take the whole benchmark past the budget; every engine and size still gets one run.

Every run also hashes the prepared rows (stage files and id maps, in order): both engines must give the same hash, or
the benchmark fails. Results go to ``benchmarks/results/prepare_engines-<UTC time>.json``.

Spark's write path (:func:`run_once`'s ``spark_write``, recorded as each run's ``write``): ``collect`` (this script's
runs) gives a local ``processed_root``, so Spark builds the split and collects every row back to Python for the shared
local writer; ``spark`` (``benchmarks/scale.py --spark-write spark``) gives it as a ``file://`` URI, so Spark writes
the Parquet itself (``SparkEngine.prepare_at``, the path a cluster with an object store takes) and collects nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd
import psutil
from invocation import command_line, results_path

SIZES: dict[str, list[str]] = {
    "ml100k": ["data=ml100k"],
    "2m": [  # 2M synthetic interactions: the 20M benchmark's shape (10 users per item, 20 rows per user) at 1/10
        "data=synthetic",
        "data.source.n_users=100000",
        "data.source.n_items=10000",
        "data.source.n_interactions=2000000",
    ],
}
ENGINES = ("duckdb", "spark")
TABLES = ("train", "valid", "test", "items", "users")
SPARK_WRITES: dict[str, str] = {  # engine=spark's two ways to the Parquet files, by what processed_root is
    "collect": "local processed_root: Spark builds the split, every row is collected to Python, the shared writer",
    "spark": "file:// processed_root: Spark writes each table, a folder of Parquet part files (SparkEngine.prepare_at)",
}


def rows_digest(root: Path) -> str:
    """A hash of every table's rows in order. A table is one Parquet file (the shared writer) or a folder of part
    files (Spark's own writer): pandas reads either, a folder's parts in name order, which is the rows' order."""
    h = hashlib.sha256()
    for name in TABLES:
        frame = pd.read_parquet(root / f"{name}.parquet")
        h.update(pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a worker that just exited
            total += p.memory_info().rss
    return total


def watched_run(argv: list[str], timeout_s: float | None = None, what: str = "the command") -> tuple[str, float, int]:
    """Run ``argv``, sampling its process tree's RSS every 0.1 s: ``(stdout, wall seconds, peak RSS bytes)``.
    Past ``timeout_s`` the tree is killed and ``TimeoutError`` raised; a non-zero exit raises ``RuntimeError``."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, tree_rss(watched))
        if timeout_s is not None and time.perf_counter() - start > timeout_s:
            for p in [*watched.children(recursive=True), watched]:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            child.communicate()
            raise TimeoutError(f"{what} still running after {timeout_s:.0f} s (peak RSS {peak / 2**20:.0f} MiB)")
        time.sleep(0.1)
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} ... failed ({child.returncode}):\n{stderr[-3000:]}")
    return stdout, time.perf_counter() - start, peak


def run_once(
    engine: str,
    overrides: list[str],
    out: Path,
    spark_conf: list[str],
    timeout_s: float | None = None,
    digest: bool = True,
    spark_write: str = "collect",
) -> dict:
    """One ``recstack-data prepare`` in a fresh process; ``timeout_s``: kill it (tree included) and raise TimeoutError.
    ``digest=False`` skips hashing the rows (which reads every table into this process: minutes and GiBs at 50M).
    ``spark_write`` (engine=spark only, :data:`SPARK_WRITES`): ``spark`` hands ``out`` to the command as a ``file://``
    URI, so Spark writes the tables itself instead of collecting them to Python; the result's ``write`` says which
    path ran (``local`` for DuckDB)."""
    if spark_write not in SPARK_WRITES:
        raise ValueError(f"spark_write={spark_write!r}: one of {list(SPARK_WRITES)}")
    if spark_write == "spark" and engine != "spark":
        raise ValueError(f"spark_write='spark' is engine=spark's own writer, not engine={engine}'s")
    processed_root = out.resolve().as_uri() if spark_write == "spark" else str(out)
    cmd = [sys.executable, "-m", "recstack.cli.data", "prepare", f"engine={engine}", *overrides]
    if engine == "spark" and spark_conf:
        cmd.append("++engine.conf={" + ",".join(c.replace("=", ":", 1) for c in spark_conf) + "}")
    cmd += [f"processed_root={processed_root}", "force=true"]
    stdout, wall, peak = watched_run(cmd, timeout_s, f"{engine} prepare")
    root = local_folder(stdout.strip().splitlines()[-1])
    manifest = json.loads((root / "manifest.json").read_text())  # a plain file on both paths (Hadoop's create)
    return {
        "write": spark_write if engine == "spark" else "local",
        "processed_root": processed_root,
        "wall_s": round(wall, 2),
        "prepare_s": manifest["timing_s"]["total"],
        "steps_s": manifest["timing_s"],
        "peak_rss_mib": round(peak / 2**20, 1),
        "config_hash": manifest["config_hash"],
        "counts": manifest["counts"],
        "rows_digest": rows_digest(root) if digest else None,
    }


def local_folder(printed: str) -> Path:
    """The split folder ``recstack-data prepare`` printed last: a local path, or (a ``file://`` root, written by
    Spark) a ``file:`` URI of one, as a local path."""
    if printed.startswith("file:"):
        return Path(url2pathname(urlparse(printed).path))
    return Path(printed)


def summary(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs]
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="ml100k,2m", help=f"comma-separated, of {list(SIZES)}")
    parser.add_argument("--budget-min", type=float, default=15.0, help="wall-clock budget of the whole benchmark")
    parser.add_argument("--spark-conf", nargs="*", default=[], help="key=value Spark settings for engine=spark")
    args = parser.parse_args()
    started = datetime.now(UTC)
    clock = time.perf_counter()
    load_before = os.getloadavg()
    result: dict = {
        "command": command_line(),
        "started": started.isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "load_before": [round(x, 2) for x in load_before],
        "spark_settings": "configs/engine/spark.yaml (local[*], driver_memory 4g, 8 shuffle partitions) + spark_conf",
        "spark_conf": args.spark_conf,
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(prefix="prepare-engines-") as tmp:
        for size in args.sizes.split(","):
            overrides = SIZES[size]
            per_engine: dict = {}
            for engine in ENGINES:
                runs: list[dict] = []
                skipped = 0
                for n in range(args.runs):
                    elapsed = time.perf_counter() - clock
                    if runs and elapsed + runs[-1]["wall_s"] > args.budget_min * 60:
                        skipped += 1
                        continue
                    run = run_once(engine, overrides, Path(tmp) / f"{size}-{engine}-{n}", args.spark_conf)
                    runs.append(run)
                    print(f"{size} {engine} run {n + 1}: wall {run['wall_s']} s, prepare {run['prepare_s']} s, "
                          f"peak RSS {run['peak_rss_mib']} MiB, rows {run['rows_digest']}", flush=True)  # fmt: skip
                per_engine[engine] = {
                    "runs": runs,
                    "runs_skipped_for_budget": skipped,
                    "wall_s": summary(runs, "wall_s"),
                    "prepare_s": summary(runs, "prepare_s"),
                    "peak_rss_mib": summary(runs, "peak_rss_mib"),
                }
            digests = {r["rows_digest"] for e in ENGINES for r in per_engine[e]["runs"]}
            hashes = {r["config_hash"] for e in ENGINES for r in per_engine[e]["runs"]}
            per_engine["identical"] = len(digests) == 1 and len(hashes) == 1
            result["sizes"][size] = {"overrides": overrides, **per_engine}
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["total_s"] = round(time.perf_counter() - clock, 1)
    path = results_path("prepare_engines", started)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    for size, data in result["sizes"].items():
        for engine in ENGINES:
            e = data[engine]
            print(f"{size:7s} {engine:6s} {len(e['runs'])} run(s): wall {e['wall_s']['min']}-{e['wall_s']['max']} s, prepare "
                  f"{e['prepare_s']['min']}-{e['prepare_s']['max']} s, peak RSS "
                  f"{e['peak_rss_mib']['min']}-{e['peak_rss_mib']['max']} MiB")  # fmt: skip
        print(f"{size:7s} identical rows and split hash on both engines: {data['identical']}")
    if not all(d["identical"] for d in result["sizes"].values()):
        sys.exit("the engines prepared different splits")


if __name__ == "__main__":
    main()
