"""IVF-PQ at catalogue scale (issue 16): build time, memory, recall@100 and query time, each beside exact search.

    nice -n 10 .venv/bin/python benchmarks/scale_index.py [--items 200000] [--big 10000000] [--quick]

Tables: ``--items`` (200k: the item count of the 50M-event synthetic catalogue) and ``--big`` (10M) vectors of
``--dim`` 64, drawn from the Gaussian mixture of ``benchmarks/retrieval.py`` (its ``clustered``, same seed order, so
the 200k items are the ones ``retrieval.py --n 200000`` uses); ``0`` skips a table. Queries come from the same mixture.

Every index is built by recstack's own ``build_index`` with ``build_threads=--build-threads`` (2, all of this
machine's cores; ``--quick`` uses 1). FAISS trains on a sample by itself, so the 10M table needs nothing special: the
coarse k-means samples ``256 * nlist`` vectors and the PQ codebooks 65,536 residuals (``max_points_per_centroid``,
checked with FAISS 1.15).

Per table: exact (``flat``) search, then IVF-PQ with ``pq_m`` 16 and 32 (8 bits) at nprobe 8 / 32 / 128 (at most
nlist), and the same IVF-PQ re-ranked exactly (``faiss.IndexRefine`` over the exact index: the best ``k * k_factor``
PQ candidates are re-scored by true inner product; the 1M run in RESULTS.md stopped at recall 0.65 without it).
Columns: build seconds; index size (bytes ``faiss.write_index`` writes, counted without a copy; the re-ranked variant
holds the exact vectors too); RSS growth over the build (approximate: the allocator may keep freed memory); recall@100
on ``--queries`` batched queries against the exact index; one-query-per-call latency p50 / p99 and QPS on 1 FAISS
thread (``--single`` queries, ``--single-exact`` for exact search, 20 at 10M). The process peak RSS is reported per
table.

Memory is estimated before anything is generated; a table that would not fit in available memory is refused.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import psutil
from invocation import results_path, start_run, write_results
from retrieval import clustered, recall_at

from recstack.retrieval.index import IndexConfig, RetrievalIndex, build_index, omp_threads

GIB = 2**30
MIB = 2**20
PQ_TRAIN_POINTS = 65_536  # FAISS's PQ training sample: max_points_per_centroid (256) * 2**pq_bits (256)
KMEANS_POINTS_PER_CENTROID = 256  # FAISS's coarse k-means sample per centroid
CHUNK_ROWS = 100_000  # retrieval.clustered draws its float64 noise this many rows at a time

# Values used where a flag is not given: the full run, and --quick (the smoke test: seconds, not minutes).
# PQ codebook training dominates small builds (IVF128,PQ16x8 on 20k vectors: 7 s on 1 thread, 13 s on 2, this shared
# 2-core machine, 2026-12-07), so --quick trains one PQ on few vectors, on 1 thread.
FULL = dict(
    items=200_000, big=10_000_000, queries=1000, single=1000, nlist=1024, big_nlist=4096, pq_m=[16, 32], build_threads=2
)
QUICK = dict(items=5_000, big=20_000, queries=200, single=100, nlist=64, big_nlist=128, pq_m=[16], build_threads=1)


@dataclass(frozen=True)
class Table:
    """One catalogue size and the settings measured on it."""

    name: str
    n: int
    nlist: int
    single_exact: int


@dataclass(frozen=True)
class Latency:
    """Single-query search time on 1 thread."""

    p50_ms: float
    p99_ms: float
    qps: float


@dataclass(frozen=True)
class Row:
    """One setting of one table; ``recall`` is recall@k against the exact index."""

    setting: str
    build_s: float
    index_bytes: int
    rss_growth_bytes: int
    recall: float
    latency: Latency
    nprobe: int | None = None


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def peak_rss() -> int:
    """This process's peak resident set so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def serialized_bytes(index: faiss.Index) -> int:
    """Bytes ``faiss.write_index`` writes for ``index``, counted as they stream by (no 2.5 GiB copy at 10M)."""
    total = 0

    def count(chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)

    writer = faiss.PyCallbackIOWriter(count)
    faiss.write_index(index, writer)
    del writer  # flushes the last buffered chunk
    return total


def estimate_bytes(n: int, dim: int, nlist: int, pq_ms: Sequence[int], queries: int, k: int, k_factor: int) -> int:
    """Peak memory a table of ``n`` vectors needs beyond what the process holds already, with 15 % to spare.

    The item matrix and the exact index's copy of it; ``clustered``'s labels and one float64 chunk; one IVF-PQ at a
    time (codes + ids, twice for the inverted lists' vector growth); the k-means and PQ training samples with their
    assignments; queries, ground truth and the re-ranked candidates."""
    vectors = 2 * n * dim * 4
    generation = n * 8 + 2 * CHUNK_ROWS * dim * 8
    ivfpq = 2 * n * (max(pq_ms) + 8) + nlist * dim * 4
    kmeans_sample = min(n, KMEANS_POINTS_PER_CENTROID * nlist)
    training = kmeans_sample * (dim * 4 + 16) + 2 * PQ_TRAIN_POINTS * dim * 4
    search = queries * (dim * 4 + 3 * k * max(1, k_factor) * 12)
    return int(1.15 * (vectors + generation + ivfpq + training + search))


def time_single(search: Callable[[np.ndarray], object], queries: np.ndarray) -> Latency:
    """p50 / p99 ms and QPS of one-query calls on 1 FAISS thread (after one warm-up call)."""
    with omp_threads(1):
        search(queries[:1])
        times = np.empty(len(queries))
        for i in range(len(queries)):
            t = time.perf_counter()
            search(queries[i : i + 1])
            times[i] = time.perf_counter() - t
    return Latency(
        float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3), len(times) / times.sum()
    )


def refined_search(
    index: faiss.IndexRefine, k: int, nprobe: int, k_factor: int
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Search ``index`` (IVF-PQ base, exact refine) for ``k``: ``k * k_factor`` candidates from ``nprobe`` lists."""
    base = faiss.SearchParametersIVF(nprobe=nprobe)
    params = faiss.IndexRefineSearchParameters(k_factor=k_factor, base_index_params=base)

    def search(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _ = base  # params points at base without owning it: keep it alive as long as this closure
        return index.search(x, k, params=params)

    return search


def measure_ivfpq(
    items: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    exact: RetrievalIndex,
    pq_m: int,
    table: Table,
    args: argparse.Namespace,
) -> list[Row]:
    """IVF-PQ with ``pq_m`` sub-vectors at each nprobe, plain and (``k_factor`` > 0) re-ranked by ``exact``."""
    k, threads = args.k, args.build_threads
    config = IndexConfig(kind="ivf_pq", nlist=table.nlist, pq_m=pq_m, pq_bits=8, seed=args.seed)
    before = rss()
    t = time.perf_counter()
    index = build_index(items, config, build_threads=threads)
    build = time.perf_counter() - t
    growth = rss() - before
    size = serialized_bytes(index.index)
    name = index.config.factory_string()
    print(f"# {name}: built in {build:.1f} s, {size / MIB:.1f} MiB", flush=True)
    # The re-ranked variant shares both indexes (IndexRefine owns neither), so its memory is their sum.
    refine = faiss.IndexRefine(index.index, exact.index) if args.k_factor > 0 else None
    refine_bytes = serialized_bytes(refine) if refine is not None else 0
    rows = []
    for nprobe in sorted({min(p, index.config.nlist) for p in args.nprobe}):  # FAISS scans at most nlist
        index.set_params(nprobe=nprobe)
        with omp_threads(threads):
            _, ids = index.search(queries, k)
        latency = time_single(partial(index.search, k=k), queries[: args.single])
        rows.append(Row(f"{name} nprobe={nprobe}", build, size, growth, recall_at(ids, truth), latency, nprobe))
        if refine is None:
            continue
        search = refined_search(refine, k, nprobe, args.k_factor)
        with omp_threads(threads):
            _, ids = search(queries)
        latency = time_single(search, queries[: args.single])
        setting = f"{name} + exact re-rank of {args.k_factor}k nprobe={nprobe}"
        rows.append(Row(setting, build, refine_bytes, growth, recall_at(ids, truth), latency, nprobe))
        print(f"#   nprobe={nprobe}: recall {rows[-2].recall:.4f}, re-ranked {rows[-1].recall:.4f}", flush=True)
    return rows


def measure_table(table: Table, args: argparse.Namespace) -> dict[str, Any]:
    """Generate one table's vectors and measure exact search, IVF-PQ and re-ranked IVF-PQ on it."""
    k, threads = args.k, args.build_threads
    rng = np.random.default_rng(args.seed)  # the order of retrieval.py: centres, items, queries
    centres = rng.standard_normal((args.clusters, args.dim)).astype(np.float32)
    t = time.perf_counter()
    items = clustered(table.n, args.dim, centres, rng, args.noise)
    queries = clustered(args.queries, args.dim, centres, rng, args.noise)
    generate_s = time.perf_counter() - t
    print(f"# {table.name}: {table.n:,} x {args.dim} generated in {generate_s:.1f} s", flush=True)

    before = rss()
    t = time.perf_counter()
    exact = build_index(items, IndexConfig(kind="flat"), build_threads=threads)
    exact_build = time.perf_counter() - t
    exact_growth = rss() - before
    with omp_threads(threads):
        t = time.perf_counter()
        _, truth = exact.search(queries, k)
        truth_s = time.perf_counter() - t
    exact_bytes = serialized_bytes(exact.index)
    rows = [
        Row(
            "Flat (exact)",
            exact_build,
            exact_bytes,
            exact_growth,
            1.0,
            time_single(partial(exact.search, k=k), queries[: table.single_exact]),
        )
    ]
    print(f"# exact: built in {exact_build:.1f} s, {len(queries):,} batched queries in {truth_s:.1f} s", flush=True)

    for pq_m in args.pq_m:  # one IVF-PQ alive at a time
        rows += measure_ivfpq(items, queries, truth, exact, pq_m, table, args)
    return {
        "name": table.name,
        "n": table.n,
        "dim": args.dim,
        "nlist": table.nlist,
        "single_exact": table.single_exact,
        "generate_s": generate_s,
        "exact_batched_s": truth_s,
        "peak_rss_bytes": peak_rss(),
        "rows": [asdict(r) for r in rows],
    }


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    rows = result["rows"]
    exact_qps = rows[0]["latency"]["qps"]
    lines = [
        f"### {result['n']:,} x {result['dim']} items, recall@{args.k} vs exact, 1-thread single queries "
        f"(exact on {result['single_exact']}, others on {args.single}); process peak RSS "
        f"{result['peak_rss_bytes'] / GIB:.2f} GiB\n",
        "| setting | build s | index MiB | RSS growth MiB | recall@100 | p50 ms | p99 ms | QPS | vs exact |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lat = r["latency"]
        lines.append(
            f"| {r['setting']} | {r['build_s']:.1f} | {r['index_bytes'] / MIB:.1f} | {r['rss_growth_bytes'] / MIB:.0f} "
            f"| {r['recall']:.4f} | {lat['p50_ms']:.3f} | {lat['p99_ms']:.3f} | {lat['qps']:,.0f} "
            f"| {lat['qps'] / exact_qps:.1f}x |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"smaller defaults for a smoke run: {QUICK}")
    ap.add_argument("--items", type=int, help=f"first table's vectors, 0 to skip (default {FULL['items']:,})")
    ap.add_argument("--big", type=int, help=f"second table's vectors, 0 to skip (default {FULL['big']:,})")
    ap.add_argument("--nlist", type=int, help=f"IVF lists for --items (default {FULL['nlist']})")
    ap.add_argument("--big-nlist", type=int, help=f"IVF lists for --big (default {FULL['big_nlist']})")
    ap.add_argument("--queries", type=int, help=f"batched queries for recall (default {FULL['queries']})")
    ap.add_argument("--single", type=int, help=f"single queries timed per IVF-PQ setting (default {FULL['single']})")
    ap.add_argument("--single-exact", type=int, help="single queries timed for exact search (200; 20 above 1M)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=1.0, help="per-dimension noise around N(0, 1) centres")
    ap.add_argument("--pq-m", type=int, nargs="+", help=f"PQ sub-vectors, 8 bits each (default {FULL['pq_m']})")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--k-factor", type=int, default=4, help="re-rank k * this many PQ candidates exactly; 0: none")
    ap.add_argument(
        "--build-threads",
        type=int,
        help=f"FAISS threads for builds and batched search (default {FULL['build_threads']})",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/scale_index-<UTC>.json)")
    args = ap.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def tables(args: argparse.Namespace) -> list[Table]:
    out = []
    for name, n, nlist in (("items", args.items, args.nlist), ("big", args.big, args.big_nlist)):
        if n > 0:
            single_exact = args.single_exact or (200 if n <= 1_000_000 else 20)
            out.append(Table(name, n, nlist, min(single_exact, args.queries)))
    return out


def check_memory(todo: Sequence[Table], args: argparse.Namespace) -> None:
    """Refuse (exit with the estimate) when a table would not fit in the memory available now."""
    available = psutil.virtual_memory().available
    for table in todo:
        need = estimate_bytes(table.n, args.dim, table.nlist, args.pq_m, args.queries, args.k, args.k_factor)
        print(f"# {table.name}: {table.n:,} x {args.dim} needs about {need / GIB:.2f} GiB; {available / GIB:.2f} free")
        if need > available:
            sys.exit(
                f"refusing the {table.name} table: {table.n:,} x {args.dim} vectors need about {need / GIB:.1f} GiB "
                f"(items + exact index + IVF-PQ + training samples), only {available / GIB:.1f} GiB is available; "
                "free memory or pass a smaller size (0 skips the table)"
            )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    todo = tables(args)
    if not todo:
        sys.exit("nothing to measure: --items and --big are both 0")
    run = start_run()
    check_memory(todo, args)
    print(f"# faiss {faiss.__version__}, builds and batched search on {args.build_threads} threads\n", flush=True)
    results = [measure_table(table, args) for table in todo]
    print()
    for result in results:
        print(markdown(result, args) + "\n")
    data = (
        f"Gaussian mixture: {args.clusters} N(0, 1) centres in {args.dim} dims, noise {args.noise}, seed {args.seed}; "
        f"{args.queries} queries from the same mixture"
    )
    fields = {
        "faiss": faiss.__version__,
        "build_threads": args.build_threads,
        "k": args.k,
        "k_factor": args.k_factor,
        "pq_m": args.pq_m,
        "pq_bits": 8,
        "nprobe": args.nprobe,
        "single": args.single,
        "quick": args.quick,
        "tables": results,
    }
    write_results(args.out or results_path("scale_index", run.started), run, data, fields)
    return fields


if __name__ == "__main__":
    main()
