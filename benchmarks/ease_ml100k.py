"""EASE on the default ML-100K split: l2 (the paper's lambda) chosen on the VALID split, then test read once.

    RECSTACK_DATA_HOME=../shared/data .venv/bin/python benchmarks/ease_ml100k.py [--grid 50 100 ...] [--top-k 50 100]

For each l2 of the grid: fit on train, NDCG@10 / Recall@10 on valid, fit seconds. The l2 with the best valid NDCG@10
is refitted and scored on test (the only time test is read). ``--top-k`` adds rows for the pruned variant (each item
column's top-k weights) at the chosen l2, on valid only. Prints markdown tables and writes
benchmarks/results/ease_ml100k.json (the l2 of configs/model/ease.yaml comes from here).
"""

from __future__ import annotations

import argparse
import time

from invocation import RESULTS_DIR, start_run, write_results

from recstack.config import prepare_named
from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate
from recstack.models.ease import EASE

GRID = (50.0, 100.0, 200.0, 300.0, 500.0, 800.0, 1200.0)
KS = (10, 20)


def fit_and_score(split: PreparedSplit, stage: str, l2: float, top_k: int | None = None) -> dict[str, float]:
    started = time.perf_counter()
    model = EASE(split.n_users, split.n_items, l2=l2, top_k=top_k).fit(split)
    fit_s = time.perf_counter() - started
    metrics = evaluate(model, split, stage, KS).metrics  # type: ignore[arg-type]
    return {
        "ndcg@10": metrics["ndcg@10"],
        "recall@10": metrics["recall@10"],
        "ndcg@20": metrics["ndcg@20"],
        "fit_s": fit_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=float, nargs="+", default=list(GRID), help="l2 values to try on valid")
    parser.add_argument("--top-k", type=int, nargs="*", default=[50, 100, 200], help="pruned variants (valid only)")
    parser.add_argument("--processed-root", default="data/processed")
    args = parser.parse_args()
    bench = start_run()
    split = prepare_named("ml100k", "random", out_root=args.processed_root)
    print(f"{split!r}\n")

    print("| l2 | valid ndcg@10 | valid recall@10 | valid ndcg@20 | fit s |\n|---|---|---|---|---|")
    grid = []
    for l2 in args.grid:
        row = {"l2": l2, **fit_and_score(split, "valid", l2)}
        grid.append(row)
        print(f"| {l2:g} | {row['ndcg@10']:.4f} | {row['recall@10']:.4f} | {row['ndcg@20']:.4f} | {row['fit_s']:.2f} |")
    best = max(grid, key=lambda r: r["ndcg@10"])
    chosen = best["l2"]
    print(f"\nchosen on valid ndcg@10: l2 = {chosen:g}\n")

    pruned = []
    if args.top_k:
        print("| top_k (l2 chosen) | valid ndcg@10 | valid recall@10 | valid ndcg@20 | fit s |\n|---|---|---|---|---|")
        for k in args.top_k:
            row = {"top_k": k, **fit_and_score(split, "valid", chosen, top_k=k)}
            pruned.append(row)
            print(
                f"| {k} | {row['ndcg@10']:.4f} | {row['recall@10']:.4f} | {row['ndcg@20']:.4f} | {row['fit_s']:.2f} |"
            )
        print()

    test = fit_and_score(split, "test", chosen)  # test read once, for the chosen l2
    print(
        f"test (l2 = {chosen:g}): ndcg@10 {test['ndcg@10']:.4f}, recall@10 {test['recall@10']:.4f}, "
        f"ndcg@20 {test['ndcg@20']:.4f}; fit {test['fit_s']:.2f} s"
    )
    fields = {
        "selection": "l2 with the best valid ndcg@10; test read once for it",
        "grid": grid,
        "pruned_valid": pruned,
        "chosen_l2": chosen,
        "test": test,
    }
    write_results(RESULTS_DIR / "ease_ml100k.json", bench, split, fields)


if __name__ == "__main__":
    main()
