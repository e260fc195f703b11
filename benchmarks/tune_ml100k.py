"""Grid search on the VALIDATION split of ML-100K: never reads the test split (``evaluate_test=false``).

    RECSTACK_DATA_HOME=../shared/data nice .venv/bin/python benchmarks/tune_ml100k.py --model lightgcn \\
        --grid fit.lr=5e-3,1e-2 model.reg_weight=1e-4,3e-4 --seeds 0 --overrides torch_threads=1

Each grid point trains with early stopping on valid NDCG@10 and the best-validation weights restored; the script
prints and appends to ``benchmarks/out/tune-<model>.jsonl`` one line per run (overrides, seed, valid metrics, best
epoch, seconds), then a table sorted by mean valid NDCG@10. Overrides name constructor arguments ``model.<arg>`` and
training settings ``fit.<key>``. The chosen values go into ``configs/model/<model>.yaml`` / ``configs/fit/<model>.yaml``
by hand, with the evidence in benchmarks/RESULTS.md; ``benchmarks/ml100k.py`` then reads the test split once per seed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

from recstack.config import compose
from recstack.training.train import train


def grid_points(grid: list[str]) -> list[list[str]]:
    """``["a=1,2", "b=x"]`` -> ``[["a=1", "b=x"], ["a=2", "b=x"]]`` (the Cartesian product, in order)."""
    axes = []
    for spec in grid:
        key, sep, values = spec.partition("=")
        if not sep or not values:
            raise SystemExit(f"--grid entry {spec!r}: expected key=v1,v2,...")
        axes.append([f"{key}={v}" for v in values.split(",")])
    return [list(p) for p in itertools.product(*axes)] if axes else [[]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--grid", nargs="*", default=[], help="key=v1,v2 ... (Hydra overrides; Cartesian product)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--overrides", nargs="*", default=[], help="fixed Hydra overrides for every run")
    ap.add_argument("--runs-root", type=Path, default=Path("benchmarks/out/tune-runs"))
    ap.add_argument("--log", type=Path, default=None, help="default benchmarks/out/tune-<model>.jsonl")
    ap.add_argument(
        "--summarise", action="store_true", help="print every logged run of --model as a table, no training"
    )
    args = ap.parse_args()
    log_path = args.log or Path(f"benchmarks/out/tune-{args.model}.jsonl")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if args.summarise:
        print(summary([json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]))
        return

    rows = []
    for point in grid_points(args.grid):
        for seed in args.seeds:
            cfg = compose(
                "train",
                [
                    f"model={args.model}",
                    f"seed={seed}",
                    "progress=false",
                    "evaluate_test=false",
                    "logger=none",
                    f"runs_root={args.runs_root}",
                    *args.overrides,
                    *point,
                ],
            )
            start = time.perf_counter()
            m = train(cfg).metrics
            assert m["test"] is None, "tuning must not read the test split"
            row = {
                "model": args.model,
                "point": point,
                "fixed": args.overrides,
                "seed": seed,
                "valid": m["valid"],
                "best_epoch": m["best_epoch"],
                "epochs": m["epochs"],
                "seconds": round(time.perf_counter() - start, 1),
            }
            rows.append(row)
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)

    print("\n" + summary(rows))


def summary(rows: list[dict]) -> str:
    """Markdown table of runs grouped by their overrides (fixed + grid point), best mean valid NDCG@10 first."""
    by_point: dict[str, list[dict]] = {}
    for r in rows:
        settings = [
            o
            for o in [*r["fixed"], *r["point"]]
            # model.max_epochs: the name in logs written before training settings moved to fit.
            if not o.startswith(("torch_threads=", "fit.max_epochs=", "model.max_epochs="))
        ]
        by_point.setdefault(" ".join(sorted(settings)) or "(defaults)", []).append(r)
    lines = ["| overrides (valid split only) | seeds | valid NDCG@10 | best epoch / epochs run | s per run |"]
    lines.append("|---|---|---|---|---|")
    for key, rs in sorted(by_point.items(), key=lambda kv: -statistics.fmean(r["valid"]["ndcg@10"] for r in kv[1])):
        nd = [r["valid"]["ndcg@10"] for r in rs]
        sd = f" ± {statistics.stdev(nd):.4f}" if len(nd) > 1 else ""
        epochs = ", ".join(f"{r['best_epoch']}/{r['epochs']}" for r in rs)
        secs = statistics.fmean(r["seconds"] for r in rs)
        lines.append(f"| `{key}` | {len(rs)} | {statistics.fmean(nd):.4f}{sd} | {epochs} | {secs:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
