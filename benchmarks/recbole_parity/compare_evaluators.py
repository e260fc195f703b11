"""Judge a RecBole model's own scores with recstack's evaluator, beside the figures RecBole reported for it.

    .venv/bin/python benchmarks/recbole_parity/compare_evaluators.py --scores /tmp/recbole-results/bpr.npz \
        --recbole-json /tmp/recbole-results/bpr.json --split-dir data/processed/ml-100k/<config-hash>

Same scores, same split, two evaluators: any difference beyond RecBole's 4-decimal rounding (and ties, which both
break arbitrarily) would be a difference in masking, candidate items or metric definitions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate
from recstack.models.base import Recommender

NAMES = ("recall", "ndcg", "map", "precision", "hit")


class ScoreTable(Recommender):
    def __init__(self, table: np.ndarray) -> None:
        self.table = torch.from_numpy(table)
        self.n_users, self.n_items = table.shape

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.table[users]


def aligned_scores(npz: Path, split: PreparedSplit) -> np.ndarray:
    """RecBole's score matrix re-indexed to the split's user and item indices (items RecBole lacks score -inf)."""
    data = np.load(npz)
    user_pos = {u: i for i, u in enumerate(data["user_ids"])}
    item_pos = {t: i for i, t in enumerate(data["item_ids"])}
    rows = np.array([user_pos[str(u)] for u in split.users.sort_values("user_idx")["user_id"]])
    items = split.items.sort_values("item_idx")["item_id"].astype(str)
    cols = np.array([item_pos.get(t, -1) for t in items])
    table = np.full((split.n_users, split.n_items), -np.inf, dtype=np.float32)
    table[:, cols >= 0] = data["scores"][rows][:, cols[cols >= 0]]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scores", required=True, type=Path)
    parser.add_argument("--recbole-json", required=True, type=Path)
    parser.add_argument("--split-dir", required=True, type=Path)
    args = parser.parse_args()
    split = PreparedSplit.load(args.split_dir)
    model = ScoreTable(aligned_scores(args.scores, split))
    reported = json.loads(args.recbole_json.read_text())
    print(f"{reported['model']} on {split!r}")
    print("| stage | metric | RecBole's evaluator | recstack's evaluator | difference |\n|---|---|---|---|---|")
    worst = 0.0
    for stage in ("valid", "test"):
        ours = evaluate(model, split, stage, (10, 20)).metrics
        for k in (10, 20):
            for name in NAMES:
                key = f"{name}@{k}"
                theirs = reported[stage][key]
                worst = max(worst, abs(ours[key] - theirs))
                print(f"| {stage} | {key} | {theirs:.4f} | {ours[key]:.4f} | {ours[key] - theirs:+.4f} |")
    print(f"\nlargest |difference|: {worst:.5f} (RecBole rounds to 4 decimals)")


if __name__ == "__main__":
    main()
