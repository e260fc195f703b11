"""Check that recstack's metric functions equal RecBole 1.2.1's metric classes on the same random hit matrices.

    /tmp/recbole-venv/bin/python benchmarks/recbole_parity/check_metrics.py

Runs in the RecBole venv and loads ``src/recstack/evaluation/metrics.py`` by path (it needs only numpy), so both
implementations see identical inputs: RecBole's ``pos_index`` (hits) and ``pos_len`` (number of relevant items).
Prints the largest absolute difference per metric and K, and exits non-zero above 1e-9.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

METRICS_FILE = Path(__file__).resolve().parents[2] / "src" / "recstack" / "evaluation" / "metrics.py"


def load_recstack_metrics():
    spec = importlib.util.spec_from_file_location("recstack_metrics", METRICS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    if not hasattr(np, "float"):  # RecBole 1.2.1's MAP/MRR use np.float; its Config restores the alias the same way
        np.float = np.float64  # type: ignore[attr-defined]
    from recbole.evaluator.metrics import MAP, MRR, NDCG, Hit, Precision, Recall

    ours = load_recstack_metrics()
    rng = np.random.default_rng(2020)
    n_users, max_k = 5000, 50
    pos_len = rng.integers(1, 80, n_users)
    pos_index = rng.random((n_users, max_k)) < rng.uniform(0.01, 0.5, (n_users, 1))
    # A user cannot have more hits than relevant items: clear hits beyond pos_len.
    pos_index &= np.cumsum(pos_index, axis=1) <= pos_len[:, None]
    config = {"topk": [1, 5, 10, 20, 50], "metric_decimal_place": 4}
    pairs = {"recall": Recall, "ndcg": NDCG, "map": MAP, "precision": Precision, "hit": Hit, "mrr": MRR}
    worst = 0.0
    for name, cls in pairs.items():
        metric = cls(config)
        theirs = (
            metric.metric_info(pos_index)
            if name in ("precision", "hit", "mrr")
            else metric.metric_info(pos_index, pos_len)
        )
        diffs = []
        for k in config["topk"]:
            mine = ours.RANKING_METRICS[name](pos_index, pos_len, k)
            diff = float(np.abs(mine - theirs[:, k - 1]).max())
            worst = max(worst, diff)
            diffs.append(f"@{k}: {diff:.1e}")
        print(f"{name:9s} max |recstack - RecBole| per user " + ", ".join(diffs))
    print(f"worst difference: {worst:.2e} over {n_users} random users")
    return 0 if worst <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
