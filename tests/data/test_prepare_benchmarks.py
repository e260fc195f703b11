"""The prepare benchmarks' plumbing (benchmarks/prepare_engines.py, benchmarks/scale.py): one real ``recstack-data
prepare`` run read back by :func:`run_once`, the rows hash reading Spark's folder-of-parts layout as the single file
it stands for, and which write path and check the 50M engine pair gets. Spark's own ``file://`` write is covered by
tests/data/test_spark_engine.py (``prepare_at``); the 2M pair with ``--spark-write spark`` is a benchmark run
(benchmarks/RESULTS.md), minutes of Spark, not a test."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from module_support import load_module

REPO = Path(__file__).resolve().parents[2]

engines = load_module(REPO / "benchmarks" / "prepare_engines.py", search_path=REPO / "benchmarks")
scale = load_module(REPO / "benchmarks" / "scale.py", search_path=REPO / "benchmarks")

SMALL = ["data=synthetic", "data.source.n_users=300", "data.source.n_items=120", "data.source.n_interactions=6000"]


def _as_spark_folders(root: Path, out: Path) -> None:
    """``root``'s tables rewritten the way Spark writes them: each a folder of part files, with Hadoop's ``_SUCCESS``
    marker and ``.crc`` checksum files beside them."""
    out.mkdir()
    for name in engines.TABLES:
        table = pq.read_table(root / f"{name}.parquet")
        folder = out / f"{name}.parquet"
        folder.mkdir()
        half = table.num_rows // 2
        for n, part in enumerate((table.slice(0, half), table.slice(half))):
            pq.write_table(part, folder / f"part-{n:05d}-0a1b-c000.snappy.parquet")
            (folder / f".part-{n:05d}-0a1b-c000.snappy.parquet.crc").write_bytes(b"crc")
        (folder / "_SUCCESS").write_bytes(b"")
    (out / "manifest.json").write_text((root / "manifest.json").read_text())


def test_run_once_reads_back_a_real_prepare_and_spark_style_folders_hash_alike(tmp_path: Path) -> None:
    run = engines.run_once("duckdb", SMALL, tmp_path / "duckdb", [])
    assert run["write"] == "local" and run["processed_root"] == str(tmp_path / "duckdb")
    assert sum(run["counts"].values()) > 0 and run["rows_digest"]
    root = tmp_path / "duckdb" / "synthetic" / run["config_hash"]
    _as_spark_folders(root, tmp_path / "spark")
    assert engines.rows_digest(tmp_path / "spark") == run["rows_digest"]  # parts in name order, hidden files skipped
    assert engines.run_once("duckdb", SMALL, tmp_path / "again", [], digest=False)["rows_digest"] is None


def test_run_once_finds_the_folder_a_file_uri_root_prints() -> None:
    assert engines.local_folder("file:///tmp/out/synthetic/abc123") == Path("/tmp/out/synthetic/abc123")
    assert engines.local_folder("file:/tmp/a%20b/x") == Path("/tmp/a b/x")
    assert engines.local_folder("/tmp/out/synthetic/abc123") == Path("/tmp/out/synthetic/abc123")
    with pytest.raises(ValueError, match="engine=spark's own writer"):
        engines.run_once("duckdb", SMALL, Path("/nonexistent"), [], spark_write="spark")
    with pytest.raises(ValueError, match="one of"):
        engines.run_once("spark", SMALL, Path("/nonexistent"), [], spark_write="s3")


def test_the_engine_pair_collects_at_2m_and_lets_spark_write_at_50m() -> None:
    assert scale.pair_settings("2m", None, None) == ("collect", True)  # comparable with the earlier 2M figures
    assert scale.pair_settings("50m", None, None) == ("spark", False)  # collecting 50M rows failed
    assert scale.pair_settings("2m", "spark", None) == ("spark", True)
    assert scale.pair_settings("50m", "collect", True) == ("collect", True)


def test_same_split_compares_hash_counts_and_rows_when_both_hashed() -> None:
    a = {"finished": True, "config_hash": "h", "counts": {"train": 3}, "rows_digest": "d1"}
    assert scale.same_split(a, dict(a)) is True
    assert scale.same_split(a, {**a, "rows_digest": "d2"}) is False
    assert scale.same_split(a, {**a, "rows_digest": None}) is True  # one side not hashed: hash and counts only
    assert scale.same_split(a, {**a, "counts": {"train": 4}}) is False
    assert scale.same_split(a, {"finished": False, "error": "timed out"}) is None
