"""ML-100K: the retrieval stage alone, exact vs HNSW (and IVF-Flat), scored by the shared evaluator.

    RECSTACK_DATA_HOME=../shared/data nice .venv/bin/python benchmarks/retrieval_ml100k.py [--run outputs/runs/<mf>]

Without ``--run``, an MF model is trained first (``recstack-train model=mf data=ml100k`` with its tuned defaults).
The run is exported to a bundle per index kind (:func:`recstack.export.exporter.export_run`), and every test user's
top-20 comes from ``bundle.index.search`` with the user's train and valid items excluded (what the evaluator masks),
then goes through :func:`recstack.evaluation.evaluator.evaluate_topk`. The target: NDCG@10 of the ANN path within 1%
of exact. The model's own full-ranking evaluation is printed as a cross-check of the exact path.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from invocation import command_line

from recstack.bundle.reader import Bundle
from recstack.evaluation.evaluator import evaluate, evaluate_topk
from recstack.export.exporter import export_run
from recstack.retrieval.index import IndexConfig


def train_mf(root: Path) -> Path:
    from recstack.config import compose
    from recstack.training.train import train

    cfg = compose("train", ["model=mf", "data=ml100k", "logger=none", "progress=false", f"run_dir={root / 'mf'}"])
    return train(cfg).run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="an MF or LightGCN run on ML-100K (default: train MF now)")
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 20])
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="retrieval-ml100k-"))
    run_dir = Path(args.run) if args.run else train_mf(tmp)
    from recstack.training.runs import load_run

    run = load_run(run_dir)
    split = run.split
    stage = "test"
    seen = (split.matrix("train") + split.matrix("valid")).tocsr()
    users = np.flatnonzero(np.diff(split.matrix(stage).indptr) > 0)
    k = max(args.ks)
    reference = evaluate(run.model, split, stage, args.ks)

    settings = [
        ("Flat (exact)", IndexConfig(kind="flat"), {}),
        ("HNSW32 ef_search=16", IndexConfig(kind="hnsw"), {"ef_search": 16}),
        ("HNSW32 ef_search=32", IndexConfig(kind="hnsw"), {"ef_search": 32}),
        ("HNSW32 ef_search=128 (default)", IndexConfig(kind="hnsw"), {}),
        ("IVF-Flat nprobe=4", IndexConfig(kind="ivf_flat"), {"nprobe": 4}),
        ("IVF-Flat nprobe=32 (default)", IndexConfig(kind="ivf_flat"), {}),
    ]
    rows = []
    bundles: dict[str, Path] = {}
    for name, config, params in settings:
        key = config.kind
        if key not in bundles:
            bundles[key] = export_run(run_dir, tmp / f"bundle-{key}", index_config=config, text=False)
        bundle = Bundle.load(bundles[key], index_params=params)
        exclude = [seen.indices[seen.indptr[u] : seen.indptr[u + 1]] for u in users]
        t = time.perf_counter()
        _, topk = bundle.index.search(bundle.user_embeddings[users], k, exclude)
        seconds = time.perf_counter() - t
        result = evaluate_topk(topk, users, split, stage, args.ks)
        rows.append((f"{name} [{bundle.index.config.factory_string()}]", dict(result.metrics), seconds))
        print(rows[-1], flush=True)

    exact = rows[0][1]
    print(f"\n### ML-100K retrieval stage: exact vs ANN ({run.config.model._target_.split('.')[-1]}, {stage} split)\n")
    print(
        f"`{command_line()}`; {len(users)} test users, train+valid items excluded "
        f"(IDSelector), top-{k} from the bundle's index, metrics by `evaluate_topk`. torch {torch.__version__}. "
        f"The model's own full-ranking `evaluate`: NDCG@10 {reference['ndcg@10']:.4f}.\n"
    )
    names = [f"ndcg@{args.ks[0]}", f"recall@{args.ks[0]}", f"ndcg@{k}"]
    print("| index | " + " | ".join(names) + " | NDCG@10 vs exact | search s (all users) |")
    print("|---|" + "---:|" * (len(names) + 2))
    for name, metrics, seconds in rows:
        rel = metrics["ndcg@10"] / exact["ndcg@10"] - 1
        print(f"| {name} | " + " | ".join(f"{metrics[n]:.4f}" for n in names) + f" | {rel:+.2%} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
