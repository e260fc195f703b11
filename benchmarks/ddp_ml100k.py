"""MF and LightGCN on ML-100K trained with ``trainer=ddp_cpu`` (2 processes, gloo) and in one process, seed by seed.

    RECSTACK_DATA_HOME=../shared/data nice .venv/bin/python benchmarks/ddp_ml100k.py                 # both, 3 seeds
    ... benchmarks/ddp_ml100k.py --models mf --seeds 0                                                # a subset

Each run is its own ``recstack-train`` process: Lightning's DDP launcher starts rank 1 by running the command line
again, so DDP cannot run inside this script. Both modes use the configs' defaults (epochs by early stopping on
validation NDCG@10, the best checkpoint tested once) and one intra-op thread per process (``torch_threads=1``; under
DDP Lightning picks the same), so DDP has two cores where the single process has one. ``fit.batch_size`` is per
process: by default (``--ddp-batch global``) each DDP rank takes half the configured batch, so the global batch, the
optimiser steps per epoch and the meaning of the learning rate are the single process's; ``--ddp-batch per-process``
keeps the configured batch on each rank (twice the global batch, half the steps).

``--summarise FILE...`` prints the summary of the runs in earlier results files together.

Printed and written to ``benchmarks/results/ddp_ml100k-<time>.json``: per run, test / validation NDCG@10, epochs,
the median epoch time (training loop only, from ``epoch_clock.py``; validation apart) and the whole fit's seconds per
epoch (metrics.json, which under DDP includes rank 1's start-up); per model, test NDCG@10 mean ± sd by mode, their
difference (target: within 0.005) and the epoch-time ratio. Run folders are kept under benchmarks/out/ddp/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from invocation import REPO, command_line, results_path

from recstack.config import compose

MODELS = ("mf", "lightgcn")
MODES = ("single", "ddp")
TARGET = 0.005  # |mean test NDCG@10 (DDP) - mean (single)|
OUT = REPO / "benchmarks" / "out" / "ddp"


def train_command(model: str, seed: int, mode: str, run_dir: Path, clock: Path, ddp_batch: str) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "recstack.cli.train",
        f"model={model}",
        f"seed={seed}",
        "torch_threads=1",
        "progress=false",
        f"run_dir={run_dir}",
        f"hydra.run.dir={run_dir.parent / (run_dir.name + '-hydra')}",
        "+callbacks.epoch_clock._target_=epoch_clock.EpochClock",
        f"+callbacks.epoch_clock.path={clock}",
    ]
    if mode == "ddp":
        command.append("trainer=ddp_cpu")
        if ddp_batch == "global":
            batch = int(compose("train", [f"model={model}"]).fit.batch_size)
            command.append(f"fit.batch_size={batch // 2}")
    return command


def run_one(model: str, seed: int, mode: str, ddp_batch: str) -> dict:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = OUT / f"{model}-{mode}-s{seed}-{stamp}"
    clock = run_dir.parent / (run_dir.name + "-epochs.json")
    command = train_command(model, seed, mode, run_dir, clock, ddp_batch)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])),
    }
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    log_path = run_dir.parent / (run_dir.name + ".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = log_path.read_text()[-4000:]
        raise SystemExit(f"{model} {mode} seed {seed} failed ({done.returncode}); log {log_path}:\n{tail}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    epochs = json.loads(clock.read_text())["epochs"]
    row = {
        "model": model,
        "mode": mode,
        "seed": seed,
        "processes": 2 if mode == "ddp" else 1,
        "batch_per_process": next((int(c.split("=")[1]) for c in command if c.startswith("fit.batch_size=")), None),
        "run_dir": str(run_dir.relative_to(REPO)),
        "test_ndcg@10": metrics["test"]["ndcg@10"],
        "test_recall@10": metrics["test"]["recall@10"],
        "valid_ndcg@10": metrics["valid"]["ndcg@10"],
        "epochs": metrics["epochs"],
        "best_epoch": metrics["best_epoch"],
        "epoch_train_s_median": statistics.median(e["train_s"] for e in epochs),
        "epoch_validation_s_median": statistics.median(e["validation_s"] for e in epochs),
        "fit_seconds_per_epoch": metrics["seconds_per_epoch"],
        "train_seconds": metrics["train_seconds"],
        "process_wall_s": wall,
        "load_1min": [load_before, os.getloadavg()[0]],
    }
    print(json.dumps(row), flush=True)
    return row


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        by_mode = {m: [r for r in rows if r["model"] == model and r["mode"] == m] for m in MODES}
        entry: dict = {"model": model}
        for mode, runs in by_mode.items():
            if not runs:
                continue
            nd = [r["test_ndcg@10"] for r in runs]
            entry[mode] = {
                "seeds": [r["seed"] for r in runs],
                "test_ndcg@10_mean": statistics.fmean(nd),
                "test_ndcg@10_sd": statistics.stdev(nd) if len(nd) > 1 else None,
                "epochs": [r["epochs"] for r in runs],
                "epoch_train_s_mean": statistics.fmean(r["epoch_train_s_median"] for r in runs),
                "fit_seconds_per_epoch_mean": statistics.fmean(r["fit_seconds_per_epoch"] for r in runs),
            }
        if all(m in entry for m in MODES):
            diff = entry["ddp"]["test_ndcg@10_mean"] - entry["single"]["test_ndcg@10_mean"]
            entry["ndcg_difference"] = diff
            entry["within_target"] = abs(diff) <= TARGET
            entry["epoch_time_ratio_ddp_over_single"] = (
                entry["ddp"]["epoch_train_s_mean"] / entry["single"]["epoch_train_s_mean"]
            )
        out.append(entry)
    return out


def render(summary: list[dict]) -> str:
    def sd(x: float | None) -> str:
        return f" ± {x:.4f}" if x is not None else " (1 seed)"

    lines = [
        "| model | mode | seeds | test NDCG@10 | epochs | epoch s (train loop) | fit s / epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in summary:
        for mode in MODES:
            if mode in entry:
                e = entry[mode]
                lines.append(
                    f"| {entry['model']} | {mode} | {len(e['seeds'])} | {e['test_ndcg@10_mean']:.4f}"
                    f"{sd(e['test_ndcg@10_sd'])} | {'/'.join(map(str, e['epochs']))} | "
                    f"{e['epoch_train_s_mean']:.2f} | {e['fit_seconds_per_epoch_mean']:.2f} |"
                )
        if "ndcg_difference" in entry:
            lines.append(
                f"{entry['model']}: DDP - single = {entry['ndcg_difference']:+.4f} NDCG@10 "
                f"({'within' if entry['within_target'] else 'outside'} ±{TARGET}); epoch time DDP / single = "
                f"{entry['epoch_time_ratio_ddp_over_single']:.2f}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--ddp-batch", choices=("global", "per-process"), default="global")
    parser.add_argument(
        "--summarise", nargs="+", type=Path, metavar="JSON", help="only print the summary of earlier results files"
    )
    args = parser.parse_args()
    if args.summarise:  # runs split across invocations (one seed at a time on a busy machine), summarised together
        rows = [row for path in args.summarise for row in json.loads(path.read_text())["runs"]]
        print(render(summarise(rows)))
        return
    if not (Path(os.environ.get("RECSTACK_DATA_HOME", "data/raw")) / "ml-100k").is_dir():
        raise SystemExit("ML-100K not found: set RECSTACK_DATA_HOME to a folder holding ml-100k/ (data/README.md)")

    started = datetime.now(UTC)
    rows = []
    for model in args.models:
        for seed in args.seeds:
            for mode in args.modes:  # interleaved, so that a change in the machine's load touches both modes
                rows.append(run_one(model, seed, mode, args.ddp_batch))
    summary = summarise(rows)
    print(render(summary))
    out = results_path("ddp_ml100k", started)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": command_line(),
        "started": started.isoformat(timespec="seconds"),
        "minutes": round((datetime.now(UTC) - started).total_seconds() / 60, 1),
        "cpu_count": os.cpu_count(),
        "ddp_batch": args.ddp_batch,
        "target": TARGET,
        "summary": summary,
        "runs": rows,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
