"""Full-ranking evaluation at scale: 100k users x 50k items, random 64-d embeddings, K in {10, 20, 50}.

    .venv/bin/python benchmarks/evaluator_scale.py [--users 100000 --items 50000 --dim 64 --train-per-user 20]

Builds an in-memory split (each user ~20 random training positives and 2 test positives), a dot-product
recommender over random embeddings, and runs :func:`recstack.evaluation.evaluator.evaluate` once (default 1 GiB
bound). Prints the wall time of ``evaluate`` and the process's peak RSS (``resource.getrusage``), the target being
<= 30 s and <= 2 GiB on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recstack.data.prepared import FORMAT_VERSION, PreparedSplit
from recstack.evaluation.evaluator import evaluate
from recstack.models.base import Recommender


class RandomEmbeddings(Recommender):
    """score(u, i) = <user_u, item_i> over fixed random vectors."""

    def __init__(self, n_users: int, n_items: int, dim: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.n_users, self.n_items = n_users, n_items
        self.users = torch.randn(n_users, dim, generator=g)
        self.items = torch.randn(n_items, dim, generator=g)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.users[users] @ self.items.T


def synthetic_split(n_users: int, n_items: int, train_per_user: int, test_per_user: int, seed: int) -> PreparedSplit:
    """Only the columns the evaluator reads (user_idx, item_idx): string ids would dominate memory for nothing."""
    rng = np.random.default_rng(seed)

    def frame(per_user: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "user_idx": np.repeat(np.arange(n_users, dtype=np.int32), per_user),
                "item_idx": rng.integers(0, n_items, n_users * per_user, dtype=np.int32),
            }
        )

    manifest = {
        "format_version": FORMAT_VERSION,
        "dataset": "synthetic-scale",
        "config_hash": f"scale{seed}",
        "n_users": n_users,
        "n_items": n_items,
    }
    empty = pd.DataFrame({"user_idx": np.array([], np.int32), "item_idx": np.array([], np.int32)})
    return PreparedSplit(
        Path("."), manifest, frame(train_per_user), empty, frame(test_per_user), pd.DataFrame(), pd.DataFrame()
    )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--train-per-user", type=int, default=20)
    parser.add_argument("--test-per-user", type=int, default=2)
    parser.add_argument("--max-memory-gb", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # on a shared machine one thread can beat two that wait for each other

    split = synthetic_split(args.users, args.items, args.train_per_user, args.test_per_user, args.seed)
    model = RandomEmbeddings(args.users, args.items, args.dim, args.seed)
    split.matrix("train"), split.matrix("valid"), split.matrix("test")  # built once here, as a trainer's split would
    before = peak_rss_mib()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    result = evaluate(model, split, "test", (10, 20, 50), max_memory_bytes=int(args.max_memory_gb * (1 << 30)))
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    print(
        f"users={args.users:,} items={args.items:,} dim={args.dim} train/user={args.train_per_user} "
        f"torch threads={torch.get_num_threads()} bound={args.max_memory_gb} GiB"
    )
    print(f"evaluated {result.n_users_evaluated:,} users, skipped {result.n_users_skipped:,}")
    print(
        f"evaluate wall time: {wall:.1f} s (CPU time user+sys: {cpu:.1f} s; on a shared machine wall > CPU / threads)"
    )
    print(f"peak RSS: {peak_rss_mib():.0f} MiB (before evaluate: {before:.0f} MiB)")
    print(f"ndcg@10={result.metrics['ndcg@10']:.5f} recall@50={result.metrics['recall@50']:.5f} (random: ~K/n_items)")


if __name__ == "__main__":
    main()
