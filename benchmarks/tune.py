"""Issue 17's benchmark: on each dataset, recstack's defaults vs its tuned candidates vs ``recstack-auto`` vs EASE (l2
chosen on validation) vs RecBole 1.2.1's defaults, all on the identical prepared split.

    RECSTACK_DATA_HOME=../shared/data nice .venv/bin/python benchmarks/tune.py \\
        --datasets ml100k-users30 synth-sparse synth-skewed --budget 20m \\
        --recbole-python /tmp/recbole-venv/bin/python          # RecBole's own venv: benchmarks/recbole_parity/README.md

Datasets (:data:`DATASETS`): ML-100K, ML-100K with 30% of its users (few users, many items: every item kept,
``data.source.user_fraction``), and two synthetic regimes of different sparsity and popularity skew. Parts
(``--parts``, all by default), each reading the test split at most once per run:

* ``defaults``: ``recstack-train model=mf`` and ``model=lightgcn`` with their default configs (test read once each);
  the row says whether the best epoch was the last one (the cap was too low).
* ``ease``: EASE's l2 chosen on valid NDCG@10 over :data:`EASE_GRID`, test read once for that l2.
* ``auto``: ``recstack-auto budget=<budget>``: every candidate's tuned validation score (its study's best trial: the
  *tuned* rows; test is not read for them), trials completed / pruned, and the winner's test (read once).
* ``recbole``: RecBole's BPR and LightGCN at their defaults on the same split (exported by
  ``recbole_parity/export_split.py``): BPR with early stopping (``stopping_step`` 10), LightGCN for a fixed 200
  epochs with its best validation epoch tested (``lightgcn_200.yaml``: with ``stopping_step`` 10 it stops on an early
  plateau), in RecBole's own venv (``--recbole-python``). Where that best epoch comes near the cap, give it room:
  ``--parts recbole --recbole-models LightGCN=lightgcn_500.yaml`` (up to 500 epochs, ``stopping_step`` 50); the
  ``--report`` of both files keeps BPR's row and takes the later LightGCN.

Every subprocess runs with one torch / OpenMP thread. Per dataset, benchmarks/results/tune-<dataset>-<stamp>.json is
rewritten after each part (a run cut short keeps what finished), and a markdown table is printed at the end with the
ratio the issue's target names: recstack-auto's test NDCG@10 over the better of EASE's and RecBole's best model's.
Working files go under ``--root`` (default benchmarks/out/tune/<dataset>/, not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from invocation import REPO, Run, results_path, start_run, write_results

from recstack.config import prepare_named
from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate
from recstack.models.ease import EASE

DATASETS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "ml100k": ("ml100k", (), "MovieLens-100K: 943 users, 1,682 items, 100k ratings"),
    "ml100k-users30": (
        "ml100k",
        ("+data.source.user_fraction=0.3",),
        "ML-100K with a seeded 30% of its users (283) and every item: few users, many items",
    ),
    "synth-sparse": (
        "synthetic",
        (
            "data.source.n_users=3000",
            "data.source.n_items=6000",
            "data.source.n_interactions=60000",
            "+data.source.zipf=0.7",
            "data.clean.min_user_interactions=5",
        ),
        "synthetic, sparse and flat: 3,000 users, 6,000 items, 60k interactions (density 0.33%), zipf 0.7",
    ),
    "synth-skewed": (
        "synthetic",
        (
            "data.source.n_users=1500",
            "data.source.n_items=1000",
            "data.source.n_interactions=90000",
            "+data.source.zipf=1.3",
            "data.clean.min_user_interactions=5",
        ),
        "synthetic, dense and skewed: 1,500 users, 1,000 items, 90k interactions (density 6%), zipf 1.3",
    ),
}
PARTS = ("defaults", "ease", "auto", "recbole")
EASE_GRID = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
METRICS = ("ndcg@10", "recall@10", "map@10")
RECBOLE_MODELS = "BPR=bpr.yaml,LightGCN=lightgcn_200.yaml"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _run(cmd: list[str], log: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    """Run ``cmd`` with its output in ``log``; its wall seconds. A failure raises with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - started
    if done.returncode:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode} after {seconds:.0f} s; log {log}:\n{tail}")
    return seconds


def _picked(metrics: dict[str, Any] | None) -> dict[str, float] | None:
    return None if metrics is None else {m: float(metrics[m]) for m in METRICS if m in metrics}


def run_defaults(model: str, data: str, overrides: tuple[str, ...], root: Path) -> dict[str, Any]:
    """``recstack-train model=<model>`` at its defaults; its run folder's metrics."""
    run_dir = root / "defaults" / model
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [_bin("recstack-train"), f"model={model}", f"data={data}", *overrides]
    cmd += ["torch_threads=1", "progress=false", f"run_dir={run_dir}"]
    seconds = _run(cmd, root / "logs" / f"defaults-{model}.log", env=ONE_THREAD)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "valid": _picked(metrics["valid"]),
        "test": _picked(metrics["test"]),
        "epochs": metrics.get("epochs"),
        "best_epoch": metrics.get("best_epoch"),
        "best_epoch_is_last": metrics.get("best_epoch_is_last"),
        "wall_s": round(seconds, 1),
    }


def run_ease(split: PreparedSplit) -> dict[str, Any]:
    """EASE's l2 chosen on valid NDCG@10; test read once, for that l2."""
    started = time.perf_counter()
    valid: dict[float, dict[str, float]] = {}
    for l2 in EASE_GRID:
        model = EASE(split.n_users, split.n_items, l2=l2).fit(split)
        valid[l2] = _picked(evaluate(model, split, "valid", (10,)).metrics) or {}
    best = max(EASE_GRID, key=lambda l2: valid[l2]["ndcg@10"])
    model = EASE(split.n_users, split.n_items, l2=best).fit(split)
    test = _picked(evaluate(model, split, "test", (10,)).metrics)
    return {
        "l2": best,
        "grid_valid_ndcg@10": {str(k): round(v["ndcg@10"], 4) for k, v in valid.items()},
        "valid": valid[best],
        "test": test,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def run_auto(data: str, overrides: tuple[str, ...], budget: str, root: Path) -> dict[str, Any]:
    """``recstack-auto budget=<budget>``: the winner's test, every candidate's tuned validation score and trials."""
    out = root / "auto"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [_bin("recstack-auto"), f"data={data}", *overrides, f"budget={budget}", "torch_threads=1", f"out={out}"]
    seconds = _run(cmd, root / "logs" / "auto.log", env=ONE_THREAD)
    report = json.loads((out / "auto.json").read_text())
    candidates = [
        {
            "name": c["name"],
            "status": c["status"],
            "valid": _picked(c.get("valid")),
            "params": c.get("params"),
            "completed": c.get("completed"),
            "pruned": c.get("pruned"),
            "failed": c.get("failed"),
            "seconds": round(float(c.get("seconds") or 0.0), 1),
            "best_epoch_is_last": c.get("best_epoch_is_last"),
        }
        for c in report["candidates"]
    ]
    refit = report.get("refit") or {}
    return {
        "budget": budget,
        "winner": report["winner"],
        "test": _picked(refit.get("test")),
        "valid": _picked(refit.get("valid")),
        "candidates": candidates,
        "trials_completed": sum(c["completed"] or 0 for c in candidates),
        "trials_pruned": sum(c["pruned"] or 0 for c in candidates),
        "wall_s": round(seconds, 1),
        "auto_json": str(out / "auto.json"),
    }


def run_recbole(split: PreparedSplit, name: str, python: str, root: Path, models: str) -> dict[str, Any]:
    """RecBole's BPR and LightGCN at their defaults on ``split``, exported as RecBole benchmark files."""
    parity = REPO / "benchmarks" / "recbole_parity"
    data_path = root / "recbole-data"
    cmd = [sys.executable, str(parity / "export_split.py"), "--split-dir", str(split.root), "--out", str(data_path)]
    _run([*cmd, "--name", name], root / "logs" / "recbole-export.log")
    work = root / "recbole-work"
    work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Any] = {}
    for model, config in (pair.split("=", 1) for pair in models.split(",")):
        out = root / "recbole" / f"{model}.json"
        cmd = [python, str(parity / "run_recbole.py"), "--model", model, "--config", str(parity / config)]
        cmd += ["--data-path", str(data_path), "--dataset", name, "--out", str(out)]
        env = {**ONE_THREAD, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
        seconds = _run(cmd, root / "logs" / f"recbole-{model}.log", cwd=work, env=env)
        figures = json.loads(out.read_text())
        rows[model] = {
            "config": config,
            "valid": {"ndcg@10": figures["best_valid_ndcg@10"]},
            "test": _picked(figures["test"]),
            "epochs": figures["epochs_trained"],
            "train_s": figures["train_seconds"],
            "wall_s": round(seconds, 1),
        }
    return rows


def _cells(metrics: dict[str, float] | None) -> str:
    return " | ".join("-" if not metrics or m not in metrics else f"{metrics[m]:.4f}" for m in METRICS)


def table(name: str, result: dict[str, Any]) -> str:
    """The markdown table of one dataset: every row's valid NDCG@10, test metrics and cost, and the target ratio."""
    lines = [
        f"#### {name}: {result['description']} (split `{result['split_hash']}`)",
        "",
        "| model | valid ndcg@10 | test ndcg@10 | test recall@10 | test map@10 | cost |",
        "|---|---|---|---|---|---|",
    ]

    def row(label: str, part: dict[str, Any], cost: str) -> None:
        valid = (part.get("valid") or {}).get("ndcg@10")
        shown = "-" if valid is None else f"{valid:.4f}"
        lines.append(f"| {label} | {shown} | {_cells(part.get('test'))} | {cost} |")

    for model, part in (result.get("defaults") or {}).items():
        last = " (best epoch = last)" if part.get("best_epoch_is_last") else ""
        row(f"{model}, defaults", part, f"{part['wall_s']:.0f} s, {part['epochs']} epochs{last}")
    if result.get("ease"):
        row(f"EASE, l2 {result['ease']['l2']:g} chosen on valid", result["ease"], f"{result['ease']['wall_s']:.0f} s")
    auto = result.get("auto")
    if auto:
        for c in auto["candidates"]:
            trials = f"{c['completed']} trials, {c['pruned']} pruned" if c["completed"] is not None else ""
            row(
                f"{c['name']}, tuned (auto's study; test not read)",
                {"valid": c["valid"]},
                f"{c['seconds']:.0f} s {trials}",
            )
        row(f"**recstack-auto budget={auto['budget']}**: {auto['winner']}", auto, f"{auto['wall_s']:.0f} s in all")
    for model, part in (result.get("recbole") or {}).items():
        row(f"RecBole 1.2.1 {model} ({part['config']})", part, f"{part['train_s']:.0f} s, {part['epochs']} epochs")
    ratio = target_ratio(result)
    if ratio is not None:
        lines += ["", f"recstack-auto / max(EASE, RecBole's best) test NDCG@10 = **{ratio:.3f}** (target 1.05)."]
    return "\n".join(lines)


def target_ratio(result: dict[str, Any]) -> float | None:
    """recstack-auto's test NDCG@10 over the better of EASE's and RecBole's best model's (None until all ran)."""
    auto, ease, recbole = result.get("auto"), result.get("ease"), result.get("recbole")
    if not (auto and auto.get("test") and ease and recbole):
        return None
    peers = [ease["test"]["ndcg@10"], *(r["test"]["ndcg@10"] for r in recbole.values())]
    return auto["test"]["ndcg@10"] / max(peers)


def regimes(results: dict[str, dict[str, Any]]) -> str:
    """Issue 17 part 3's table: what each dataset's tuned candidates chose (their best trial's values, its epochs and
    best epoch), from each recstack-auto run's auto.json."""
    lines = ["| dataset | candidate | valid ndcg@10 | chosen values | epochs (best) |", "|---|---|---|---|---|"]
    for name, result in results.items():
        path = Path((result.get("auto") or {}).get("auto_json", ""))
        if not path.is_file():
            continue
        for c in json.loads(path.read_text())["candidates"]:
            if not c.get("params") or c.get("valid_score") is None:
                continue
            values = ", ".join(
                f"{k.split('.')[-1]} {v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]} {v}"
                for k, v in c["params"].items()
            )
            epochs = "-" if c.get("epochs") is None else f"{c['epochs']} ({c['best_epoch']})"
            lines.append(f"| {name} | {c['name']} | {c['valid_score']:.4f} | {values} | {epochs} |")
    return "\n".join(lines)


def merged(files: list[Path]) -> dict[str, dict[str, Any]]:
    """Results files merged per dataset, in the order given (parts run in separate processes on the same split)."""
    results: dict[str, dict[str, Any]] = {}
    for file in files:
        result = json.loads(file.read_text())
        into = results.setdefault(result["dataset"], {})
        if into and into["split_hash"] != result["split_hash"]:
            raise SystemExit(
                f"{file}: split {result['split_hash']}, the other {result['dataset']} files {into['split_hash']}"
            )
        for key, value in result.items():
            if key in ("defaults", "recbole") and isinstance(into.get(key), dict):
                into[key] = {**into[key], **value}  # a later run of one model replaces that model's row only
            elif value is not None:
                into[key] = value
    for result in results.values():
        result["ratio_to_best_peer"] = target_ratio(result)
    return results


def bench_dataset(name: str, args: argparse.Namespace, run: Run) -> dict[str, Any]:
    data, overrides, description = DATASETS[name]
    root = Path(args.root).resolve() / name
    split = prepare_named(data, "random", list(overrides))
    result: dict[str, Any] = {
        "dataset": name,
        "description": description,
        "data": data,
        "overrides": list(overrides),
        "split_hash": split.config_hash,
        "counts": {
            "users": split.n_users,
            "items": split.n_items,
            **{s: len(split.frame(s)) for s in ("train", "valid", "test")},
        },
    }
    out = results_path(f"tune-{name}", run.started)

    def save() -> None:
        write_results(out, run, split, result)

    print(f"== {name}: {description}; split {split.config_hash}, {result['counts']}", flush=True)
    if "ease" in args.parts:
        result["ease"] = run_ease(split)
        save()
    if "defaults" in args.parts:
        result["defaults"] = {}
        for model in ("mf", "lightgcn"):
            result["defaults"][model] = run_defaults(model, data, overrides, root)
            save()
    if "recbole" in args.parts:
        result["recbole"] = run_recbole(split, f"{name}-recstack", args.recbole_python, root, args.recbole_models)
        save()
    if "auto" in args.parts:
        result["auto"] = run_auto(data, overrides, args.budget, root)
        save()
    result["ratio_to_best_peer"] = target_ratio(result)
    save()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--budget", default="20m", help="recstack-auto's budget per dataset")
    ap.add_argument("--recbole-python", default="/tmp/recbole-venv/bin/python", help="RecBole's venv interpreter")
    ap.add_argument(
        "--recbole-models",
        default=RECBOLE_MODELS,
        help="RecBole models and their configs under benchmarks/recbole_parity/ (MODEL=FILE,...)",
    )
    ap.add_argument("--root", default="benchmarks/out/tune", help="working folder (runs, logs, RecBole files)")
    ap.add_argument(
        "--report",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="print the tables of earlier results files instead of running (parts run apart are merged per dataset)",
    )
    args = ap.parse_args()
    if args.report:
        results = merged(args.report)
        print("\n\n".join(table(name, result) for name, result in results.items()))
        print("\n" + regimes(results))
        return
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s) {sorted(unknown)}; known: {', '.join(PARTS)}")
    if "recbole" in args.parts and not Path(args.recbole_python).is_file():
        ap.error(f"--recbole-python {args.recbole_python} is missing: see benchmarks/recbole_parity/README.md")
    run = start_run()
    tables = [table(name, bench_dataset(name, args, run)) for name in args.datasets]
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
