"""Popularity, ItemKNN and UserKNN on the default ML-100K split: the full metric table, valid and test.

    RECSTACK_DATA_HOME=../shared/data .venv/bin/python benchmarks/baselines_ml100k.py [--tune]

Hyper-parameters come from configs/model/{pop,itemknn,userknn}.yaml. ``--tune`` first prints a grid search of
k_neighbors / shrink / similarity scored on the VALID split only (how the config defaults were chosen); test is
never looked at while tuning. Prints markdown tables for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import time

from hydra.utils import instantiate
from omegaconf import OmegaConf

from recstack.config import config_dir, prepare_named
from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate
from recstack.models.item_knn import ItemKNN
from recstack.models.user_knn import UserKNN

MODELS = ("pop", "itemknn", "userknn")
COLUMNS = ("precision", "recall", "ndcg", "map", "hit", "mrr", "coverage", "avg_pop", "novelty")


def tune(split: PreparedSplit) -> None:
    print("## Grid on ML-100K valid (ndcg@10)\n")
    print("| model | k_neighbors | similarity | shrink | valid ndcg@10 |\n|---|---|---|---|---|")
    for k, shrink in itertools.product((20, 50, 100, 200, 400), (0.0, 10.0, 50.0)):
        m = ItemKNN(split.n_users, split.n_items, k_neighbors=k, shrink=shrink).fit(split)
        print(f"| itemknn | {k} | cosine | {shrink:g} | {evaluate(m, split, 'valid').metrics['ndcg@10']:.4f} |")
    for k, sim, shrink in itertools.product((20, 50, 100, 200), ("cosine", "pearson"), (0.0, 10.0, 50.0)):
        m = UserKNN(split.n_users, split.n_items, k_neighbors=k, similarity=sim, shrink=shrink).fit(split)
        print(f"| userknn | {k} | {sim} | {shrink:g} | {evaluate(m, split, 'valid').metrics['ndcg@10']:.4f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tune", action="store_true", help="print the valid-split grid search first")
    parser.add_argument("--processed-root", default="data/processed")
    args = parser.parse_args()
    split = prepare_named("ml100k", "random", out_root=args.processed_root)
    print(f"{split!r}\n")
    if args.tune:
        tune(split)
    ks = (10, 20)
    header = "| model | stage | " + " | ".join(f"{c}@{k}" for k in ks for c in COLUMNS) + " | fit s |"
    print(header + "\n|" + "---|" * (header.count("|") - 1))
    for name in MODELS:
        cfg = OmegaConf.load(config_dir() / "model" / f"{name}.yaml")
        started = time.perf_counter()
        model = instantiate(cfg, n_users=split.n_users, n_items=split.n_items).fit(split)
        fit_s = time.perf_counter() - started
        params = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "_target_")
        label = f"{name} ({params})" if params else name
        for stage in ("valid", "test"):
            m = evaluate(model, split, stage, ks).metrics
            cells = " | ".join(
                f"{m[f'{c}@{k}']:.4f}" if c != "avg_pop" else f"{m[f'{c}@{k}']:.1f}" for k in ks for c in COLUMNS
            )
            print(f"| {label} | {stage} | {cells} | {fit_s:.2f} |")


if __name__ == "__main__":
    main()
