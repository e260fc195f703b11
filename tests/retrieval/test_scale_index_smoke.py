"""The IVF-PQ scale benchmark (benchmarks/scale_index.py) in its --quick mode: both tables measured with real FAISS,
exact search as the reference, re-ranking never losing recall; and a table too big for memory refused up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from module_support import load_module

REPO = Path(__file__).resolve().parents[2]


bench = load_module(REPO / "benchmarks" / "scale_index.py", search_path=REPO / "benchmarks")


@pytest.mark.slow
def test_quick_run_measures_both_tables_against_exact(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    fields = bench.main(["--quick", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [t["n"] for t in saved["tables"]] == [bench.QUICK["items"], bench.QUICK["big"]]
    assert saved["build_threads"] == 1 and saved["tables"] == json.loads(json.dumps(fields["tables"]))
    for table in saved["tables"]:
        exact, *approx = table["rows"]
        assert exact["setting"] == "Flat (exact)" and exact["recall"] == 1.0
        assert exact["index_bytes"] >= table["n"] * table["dim"] * 4
        plain = {r["nprobe"]: r for r in approx if "re-rank" not in r["setting"]}
        reranked = {r["nprobe"]: r for r in approx if "re-rank" in r["setting"]}
        assert sorted(plain) == sorted(reranked) == [8, 32, min(128, table["nlist"])]
        for nprobe, row in plain.items():
            assert 0.0 < row["recall"] <= reranked[nprobe]["recall"] <= 1.0  # re-ranking keeps every true hit
            assert row["index_bytes"] < exact["index_bytes"] < reranked[nprobe]["index_bytes"]
            assert row["latency"]["p50_ms"] <= row["latency"]["p99_ms"] and row["latency"]["qps"] > 0
        assert table["peak_rss_bytes"] > 0


def test_a_table_bigger_than_memory_is_refused_before_generating(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit, match=r"refusing the big table: 1,000,000,000,000 x 64 vectors need about"):
        bench.main(["--quick", "--items", "0", "--big", str(10**12), "--out", str(tmp_path / "no.json")])
    assert "generated" not in capsys.readouterr().out
    assert not (tmp_path / "no.json").exists()


def test_memory_estimate_covers_the_vectors_twice() -> None:
    n, dim = 10_000_000, 64
    need = bench.estimate_bytes(n, dim, nlist=4096, pq_ms=[16, 32], queries=1000, k=100, k_factor=4)
    assert 2 * n * dim * 4 < need < 4 * n * dim * 4  # items + the exact index's copy, plus IVF-PQ and samples
