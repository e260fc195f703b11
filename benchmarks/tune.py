"""recstack-tune on ML-100K, one study per model, validation only; the winner's test read once (a first stub of the
benchmark issue 17 asks for: subsamples, synthetic regimes, recstack-auto and RecBole are not here yet).

    RECSTACK_DATA_HOME=../shared/data nice .venv/bin/python benchmarks/tune.py --models ease:5m mf:8m

Each ``model:budget`` runs (or resumes) ``recstack-tune model=<model> budget=<budget>`` with ``torch_threads=1`` under
``benchmarks/out/tune/`` and writes benchmarks/results/tune-<stamp>.json: per model the best trial, its values, valid
NDCG@10, test NDCG@10 / Recall@10 / MAP@10, trials completed / pruned / failed and wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime

from invocation import RESULTS_DIR, command_line

from recstack.config import compose
from recstack.tuning.tune import summary, tune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["ease:5m", "mf:8m"], help="model:budget pairs")
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--root", default="benchmarks/out/tune")
    args = ap.parse_args()
    started = datetime.now(UTC)
    rows = []
    for spec in args.models:
        model, _, budget = spec.partition(":")
        cfg = compose(
            "tune",
            [
                f"model={model}",
                f"budget={budget or '20m'}",
                f"trials={args.trials}",
                "torch_threads=1",
                f"study_root={args.root}",
                f"experiment_dir={args.root}/experiment",
            ],
        )
        t0 = time.perf_counter()
        result = tune(cfg)
        print(summary(result), flush=True)
        winner = result.winner
        rows.append(
            {
                "model": model,
                "budget": budget,
                "study": result.study_name,
                "best_trial": result.best_trial,
                "params": result.best_params,
                "valid_ndcg@10": result.best_value,
                "test": None if winner is None else {k: winner.test[k] for k in ("ndcg@10", "recall@10", "map@10")},
                "trials": result.counts,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    out = RESULTS_DIR / f"tune-{started.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "command": command_line(),
                "started_utc": started.isoformat(timespec="seconds"),
                "load_avg_1m": os.getloadavg()[0],
                "selection": "best valid ndcg@10 of each study; test read once, for its winner",
                "studies": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
