"""Retrieval index benchmark: Flat vs HNSW vs IVF-Flat vs IVF-PQ on synthetic clustered vectors.

    nice .venv/bin/python benchmarks/retrieval.py [--n 1000000] [--dim 64] [--queries 10000] [--single 1000]

Data: a mixture of Gaussians (``--clusters`` N(0, 1) centres, ``--noise`` standard deviation around them; at 1.0
clusters overlap, at 0.5 they are well separated, which makes IVF nearly exact), items and
queries drawn from the same mixture, because embeddings have cluster structure and uniform noise would make every
ANN method look unrealistically bad. Inner-product metric, as the models score by dot product.

Reported per setting: build time, index size on disk (a proxy for its memory), recall@100 against exact search over
``--queries`` batched queries, and single-query throughput (one ``search`` call per query, ``--single`` queries) with
FAISS on 1 thread and on all cores. Also: exclusion of ~100 ids per query, over-fetch vs ``IDSelector``.
Prints a Markdown section for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from recstack.retrieval.index import IndexConfig, RetrievalIndex, build_index


def clustered(n: int, dim: int, centres: np.ndarray, rng: np.random.Generator, noise: float = 0.5) -> np.ndarray:
    labels = rng.integers(0, len(centres), n)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # chunked: the float64 intermediates of 1M x 64 at once are 512 MB
        sl = slice(start, min(n, start + 100_000))
        out[sl] = centres[labels[sl]] + noise * rng.standard_normal((sl.stop - sl.start, dim))
    return out


def recall_at(approx: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    hits = sum(len(np.intersect1d(a[a >= 0], e)) for a, e in zip(approx, exact))
    return hits / (len(exact) * k)


def single_query_qps(index: RetrievalIndex, queries: np.ndarray, k: int, threads: int) -> tuple[float, float]:
    """(queries per second, p50 ms) of one-query searches on ``threads`` FAISS threads."""
    faiss.omp_set_num_threads(threads)
    index.search(queries[:5], k)  # warm-up
    times = np.empty(len(queries))
    for i in range(len(queries)):
        t = time.perf_counter()
        index.search(queries[i : i + 1], k)
        times[i] = time.perf_counter() - t
    return len(queries) / times.sum(), float(np.median(times) * 1e3)


def index_bytes(index: RetrievalIndex) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = index.save(Path(tmp) / "i.faiss")
        return path.stat().st_size


def exclusion_timing(
    index: RetrievalIndex, queries: np.ndarray, k: int, n_exclude: int, rng: np.random.Generator
) -> dict[str, float]:
    """Median ms per single query with ``n_exclude`` ids excluded (half of them among its true top results)."""
    _, top = index.search(queries, k)
    excl = [
        np.unique(np.concatenate([top[b, : n_exclude // 2], rng.integers(0, index.ntotal, n_exclude // 2)]))
        for b in range(len(queries))
    ]
    out = {}
    for how in ("overfetch", "selector"):
        times = []
        for b in range(len(queries)):
            t = time.perf_counter()
            _, ids = index.search(queries[b : b + 1], k, [excl[b]], exclusion=how)  # type: ignore[arg-type]
            times.append(time.perf_counter() - t)
            assert not np.isin(ids[0], excl[b]).any()
        out[how] = float(np.median(times) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=1.0, help="per-dimension noise around N(0, 1) centres")
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--single", type=int, default=1000, help="single queries timed per ANN setting")
    ap.add_argument("--single-flat", type=int, default=200, help="single queries timed for exact search")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--nlist", type=int, default=1024)
    args = ap.parse_args()

    cores = os.cpu_count() or 1
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim)).astype(np.float32)
    items = clustered(args.n, args.dim, centres, rng, args.noise)
    queries = clustered(args.queries, args.dim, centres, rng, args.noise)
    k = args.k
    print(
        f"# data: {args.n:,} x {args.dim} items, {args.queries:,} queries, {args.clusters} clusters, noise {args.noise}; {cores} cores"
    )

    rows: list[dict] = []
    faiss.omp_set_num_threads(cores)
    t = time.perf_counter()
    flat = build_index(items, IndexConfig(kind="flat"))
    flat_build = time.perf_counter() - t
    t = time.perf_counter()
    _, exact = flat.search(queries, k)
    print(f"# exact batched search of {args.queries:,} queries: {time.perf_counter() - t:.1f} s")
    qps1, p50_1 = single_query_qps(flat, queries[: args.single_flat], k, 1)
    qpsn, _ = single_query_qps(flat, queries[: args.single_flat], k, cores)
    flat_row = dict(
        setting="Flat (exact)", build=flat_build, bytes=index_bytes(flat), recall=1.0, qps1=qps1, p50=p50_1, qpsn=qpsn
    )
    rows.append(flat_row)
    print(flat_row, flush=True)

    specs: list[tuple[str, IndexConfig, str, list[int]]] = [
        (
            f"HNSW{args.hnsw_m} efC={args.ef_construction}",
            IndexConfig(kind="hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction),
            "ef_search",
            [64, 128, 256, 512],
        ),
        (f"IVF{args.nlist},Flat", IndexConfig(kind="ivf_flat", nlist=args.nlist), "nprobe", [8, 16, 32, 64]),
        (f"IVF{args.nlist},PQ16x8", IndexConfig(kind="ivf_pq", nlist=args.nlist, pq_m=16), "nprobe", [8, 32, 128]),
    ]
    exclusion = {}
    for name, config, param, values in specs:
        faiss.omp_set_num_threads(cores)
        t = time.perf_counter()
        # All cores for the benchmark build (the bundle builds single-threaded for reproducibility).
        index = build_index(items, config, build_threads=None)
        build = time.perf_counter() - t
        size = index_bytes(index)
        print(f"# built {name} in {build:.1f} s, {size / 2**20:.0f} MiB", flush=True)
        for value in values:
            index.set_params(**{param: value})
            faiss.omp_set_num_threads(cores)
            _, ids = index.search(queries, k)
            rec = recall_at(ids, exact)
            qps1, p50_1 = single_query_qps(index, queries[: args.single], k, 1)
            qpsn, _ = single_query_qps(index, queries[: args.single], k, cores)
            row = dict(
                setting=f"{name} {param}={value}", build=build, bytes=size, recall=rec, qps1=qps1, p50=p50_1, qpsn=qpsn
            )
            rows.append(row)
            print(row, flush=True)
        if config.kind == "hnsw":
            index.set_params(ef_search=128)
            faiss.omp_set_num_threads(1)
            exclusion["HNSW ef_search=128"] = exclusion_timing(index, queries[:300], k, 100, rng)
        del index
    faiss.omp_set_num_threads(1)
    exclusion["Flat"] = exclusion_timing(flat, queries[:100], k, 100, rng)

    print()
    print(
        f"### Synthetic {args.n:,} x {args.dim} (clustered, noise {args.noise}), recall@{k} vs exact, single-query QPS\n"
    )
    print(
        f"`nice .venv/bin/python benchmarks/retrieval.py --n {args.n} --dim {args.dim} --queries {args.queries} "
        f"--single {args.single} --noise {args.noise} --ef-construction {args.ef_construction}` on {cores} cores ({platform.processor() or platform.machine()}), "
        f"faiss {faiss.__version__}.\n"
    )
    print(
        "| setting | build s | index MiB | recall@100 | QPS 1 thread | p50 ms 1 thread | QPS all cores | speed-up vs exact (1 thread) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['setting']} | {r['build']:.1f} | {r['bytes'] / 2**20:.0f} | {r['recall']:.4f} | {r['qps1']:,.0f} | "
            f"{r['p50']:.3f} | {r['qpsn']:,.0f} | {r['qps1'] / flat_row['qps1']:.1f}x |"
        )
    print(f"\nExclusion of 100 ids per single query (k={k}, 1 thread), median ms:\n")
    print("| index | over-fetch + filter | IDSelector |")
    print("|---|---:|---:|")
    for name, t in exclusion.items():
        print(f"| {name} | {t['overfetch']:.3f} | {t['selector']:.3f} |")


if __name__ == "__main__":
    main()
