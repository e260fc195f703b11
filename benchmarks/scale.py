"""50M interactions on this machine (issue 16, part 3): prepare, one MF epoch, full-ranking evaluation, FAISS at scale.

    RECSTACK_DATA_HOME=../shared/data nice .venv/bin/python benchmarks/scale.py --workdir /tmp/scale50m \
        [--parts prepare,train,evaluate,index] [--runs 3] [--interactions 50000000 --users 1000000 --items 200000]

Every part runs in a fresh child process, so its peak RSS (the process tree's, sampled every 0.1 s) is its own:

* ``prepare``: ``recstack-data prepare engine=duckdb data=synthetic`` (the embedded default) at the size above, the
  command a user types; generation is the source's ``load`` step. ``--runs`` runs; the last one's folder is kept
  under ``--workdir`` for the other parts. Beside it, ``--spark-size`` (default 2M, the size whose Spark run fits this
  machine's budget; ``--spark-size 50m`` to try the full size, capped by ``--spark-timeout-min``, with
  ``--spark-driver-memory`` for the local-mode JVM) runs both engines, each into a temporary folder, and records
  whether they gave the same split (config hash, counts and, with ``--pair-digest``, the rows' hash).
  ``--spark-write`` picks Spark's write path: ``collect`` (a local ``processed_root``: Spark builds the split and
  every row is collected back to Python for the shared local writer) or ``spark`` (the folder given as a ``file://``
  URI: ``SparkEngine.prepare_at`` writes each table as a folder of Parquet part files and collects nothing, as a
  cluster writing to an object store does). The default is ``collect`` at 2M, so the figure stays comparable with the
  earlier ones (benchmarks/RESULTS.md), and ``spark`` at 50M, where collecting failed after about 18 minutes inside
  ``collectAsArrowToPython``. The rows' hash reads every table into this process (minutes and GiBs at 50M), so
  ``--pair-digest`` defaults to on at 2M and off at 50M. Each run's ``write`` in the JSON says which path ran.
* ``train``: MF (``configs/model/mf.yaml``) for one epoch over the prepared training split with validation off,
  through the same datamodule and Lightning module as ``recstack-train``. The datamodule gathers the shuffled rows
  and samples their negatives one chunk at a time (``InteractionDataModule.chunk_rows``): the epoch's only full-size
  copy is its permutation. ``--batch-size`` (default 65,536): the tables get a dense Adam step per batch, so the
  default 2,048 would spend an hour of this CPU on optimiser steps alone; the epoch time is for the stated batch.
* ``evaluate``: the trained MF, test stage, on ``--eval-users`` users sampled (seeded) among those with a test
  interaction, by :func:`recstack.evaluation.evaluator.evaluate` (chunked, 1 GiB bound by default), K in {10, 20}.
* ``index``: ``benchmarks/scale_index.py`` (FAISS IVF-PQ over a 200k-item and a 10M-item table against exact search).

Results: ``benchmarks/results/scale-<UTC time>.json`` and a markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psutil
from invocation import command_line, results_path
from prepare_engines import SPARK_WRITES, run_once, watched_run

HERE = Path(__file__).resolve().parent

TRAIN_CHILD = """
import json, sys, time
import lightning as L
import torch
from recstack.config import compose
from recstack.data.prepared import PreparedSplit
from recstack.training.build import build_model
from recstack.training.datamodule import InteractionDataModule
from recstack.training.module import RecommenderModule
from hydra.utils import instantiate

root, out, batch_size, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if threads > 0:
    torch.set_num_threads(threads)
t0 = time.perf_counter()
split = PreparedSplit.load(root)
cfg = compose("train", ["model=mf", f"fit.batch_size={batch_size}"])
loaded = time.perf_counter()
L.seed_everything(cfg.seed, verbose=False)
model = build_model(cfg.model, split, text_side_input=False, text_cache_dir=cfg.text_cache_dir, progress=False)
datamodule = InteractionDataModule(split, batch_size=batch_size, negatives=cfg.fit.negatives, seed=cfg.seed)
module = RecommenderModule(model, optimizer=instantiate(cfg.optimizer), split=split, ks=tuple(cfg.ks))
trainer = L.Trainer(
    accelerator="cpu", devices=1, max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
)
built = time.perf_counter()
trainer.fit(module, datamodule=datamodule)
done = time.perf_counter()
torch.save(model.state_dict(), out)
print(json.dumps({
    "load_split_s": loaded - t0, "build_s": built - loaded, "epoch_s": done - built,
    "train_rows": len(split.train), "steps": trainer.global_step, "batch_size": batch_size,
    "negatives": int(cfg.fit.negatives), "chunk_rows": datamodule.chunk_rows, "torch_threads": torch.get_num_threads(),
    "loss": float(trainer.callback_metrics.get("train/loss", float("nan"))),
}))
"""

EVAL_CHILD = """
import json, sys, time
import numpy as np
import torch
from recstack.config import compose
from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate
from recstack.training.build import build_model

root, weights, n_users, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
split = PreparedSplit.load(root)
cfg = compose("train", ["model=mf"])
model = build_model(cfg.model, split, text_side_input=False, text_cache_dir=cfg.text_cache_dir, progress=False)
model.load_state_dict(torch.load(weights, map_location="cpu"))
model.eval()
with_test = np.flatnonzero(np.diff(split.matrix("test").indptr) > 0)
users = np.sort(np.random.default_rng(seed).choice(with_test, size=min(n_users, len(with_test)), replace=False))
loaded = time.perf_counter()
with torch.no_grad():
    result = evaluate(model, split, "test", ks=(10, 20), users=users)
done = time.perf_counter()
print(json.dumps({
    "load_s": loaded - t0, "evaluate_s": done - loaded, "users": int(result.n_users_evaluated),
    "users_with_test": int(len(with_test)), "n_items": int(split.n_items),
    "metrics": {k: v for k, v in result.metrics.items() if k.split("@")[0] in ("ndcg", "recall", "map")},
}))
"""


def run_child(argv: list[str]) -> dict:
    """Run ``argv``; its last stdout line is JSON. Adds wall seconds and the tree's peak RSS (sampled every 0.1 s)."""
    stdout, wall, peak = watched_run(argv, what=" ".join(argv[:2]))
    out = json.loads(stdout.strip().splitlines()[-1])
    return {**out, "finished": True, "wall_s": round(wall, 2), "peak_rss_mib": round(peak / 2**20)}


def synthetic(users: int, items: int, interactions: int) -> list[str]:
    return [
        "data=synthetic",
        f"data.source.n_users={users}",
        f"data.source.n_items={items}",
        f"data.source.n_interactions={interactions}",
    ]


def prepare_part(args: argparse.Namespace, work: Path) -> dict:
    overrides = synthetic(args.users, args.items, args.interactions)
    runs = []
    for n in range(args.runs):
        out = work / "prepared" if n == args.runs - 1 else Path(tempfile.mkdtemp(prefix="scale-prepare-", dir=work))
        run = run_once("duckdb", overrides, out, [], digest=False)
        runs.append(run)
        print(f"prepare duckdb {args.interactions:,} run {n + 1}: wall {run['wall_s']} s, peak RSS "
              f"{run['peak_rss_mib']} MiB, counts {run['counts']}", flush=True)  # fmt: skip
        if out != work / "prepared":
            subprocess.run(["rm", "-rf", str(out)], check=True)
    result: dict = {"duckdb": runs, "overrides": overrides}
    if args.spark_size:
        size = {"2m": (100_000, 10_000, 2_000_000), "50m": (args.users, args.items, args.interactions)}[args.spark_size]
        spark_overrides = synthetic(*size)
        spark_write, digest = pair_settings(args.spark_size, args.spark_write, args.pair_digest)
        pair = {}
        for engine in ("duckdb", "spark"):
            cmd_out = Path(tempfile.mkdtemp(prefix=f"scale-{engine}-", dir=work))
            try:
                extra = [f"engine.driver_memory={args.spark_driver_memory}"] if engine == "spark" else []
                pair[engine] = _capped_prepare(
                    engine,
                    spark_overrides + extra,
                    cmd_out,
                    args.spark_timeout_min * 60,
                    spark_write="collect" if engine == "duckdb" else spark_write,
                    digest=digest,
                )
            finally:
                subprocess.run(["rm", "-rf", str(cmd_out)], check=True)
            print(f"prepare {engine} {size[2]:,}: {pair[engine]}", flush=True)
        same = same_split(pair["duckdb"], pair["spark"])
        result["engines"] = {
            "size": args.spark_size,
            "overrides": spark_overrides,
            "spark_write": spark_write,
            "spark_write_means": SPARK_WRITES[spark_write],
            "rows_digest": digest,
            **pair,
            "same_split": same,
        }
        print(f"prepare {size[2]:,}: Spark's write path {spark_write!r}, rows hashed: {digest}; "
              f"same split on both engines: {same}", flush=True)  # fmt: skip
    return result


def pair_settings(spark_size: str, spark_write: str | None, pair_digest: bool | None) -> tuple[str, bool]:
    """``(Spark's write path, hash the rows?)`` for the engine pair: what was asked, else the size's default (module
    docstring: collect and hash at 2M, as the earlier figures did; Spark's own writer and no hash at 50M)."""
    full = spark_size == "50m"
    write = spark_write or ("spark" if full else "collect")
    return write, (not full) if pair_digest is None else pair_digest


def same_split(a: dict, b: dict) -> bool | None:
    """Whether two prepare runs gave the same split: config hash, counts and (when both hashed them) rows. None when
    a run did not finish: nothing to compare."""
    if not (a.get("finished") and b.get("finished")):
        return None
    keys = ["config_hash", "counts"] + (["rows_digest"] if a["rows_digest"] and b["rows_digest"] else [])
    return all(a[k] == b[k] for k in keys)


def _capped_prepare(
    engine: str, overrides: list[str], out: Path, timeout_s: float, *, spark_write: str, digest: bool
) -> dict:
    conf = ["spark.sql.adaptive.enabled=false", "spark.sql.codegen.wholeStage=false"] if engine == "spark" else []
    try:
        run = run_once(engine, overrides, out, conf, timeout_s=timeout_s, digest=digest, spark_write=spark_write)
        return {"finished": True, **run}
    except (TimeoutError, RuntimeError) as exc:  # a cap reached or a failed run: recorded, the other parts go on
        write = spark_write if engine == "spark" else "local"
        return {"finished": False, "write": write, "timeout_s": timeout_s, "error": str(exc)[-6000:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="keeps the prepared 50M split and the trained weights")
    ap.add_argument("--parts", default="prepare,train,evaluate,index")
    ap.add_argument("--runs", type=int, default=3, help="prepare runs")
    ap.add_argument("--interactions", type=int, default=50_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--spark-size", choices=["2m", "50m", ""], default="2m")
    ap.add_argument("--spark-timeout-min", type=float, default=20.0)
    ap.add_argument("--spark-driver-memory", default="4g", help="engine.driver_memory (local mode: all of Spark)")
    ap.add_argument(
        "--spark-write",
        choices=list(SPARK_WRITES),
        default=None,
        help="Spark's write path: collect (local processed_root, rows collected to Python) or spark (file:// root, "
        "Spark writes the Parquet); default collect at --spark-size 2m, spark at 50m",
    )
    ap.add_argument(
        "--pair-digest",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hash both engines' rows in the pair (reads every table here); default on at 2m, off at 50m",
    )
    ap.add_argument("--batch-size", type=int, default=65_536)
    ap.add_argument("--torch-threads", type=int, default=0, help="0: torch's default (one per core)")
    ap.add_argument("--eval-users", type=int, default=100_000)
    ap.add_argument("--index-args", default="", help="extra arguments for benchmarks/scale_index.py")
    args = ap.parse_args()
    parts = args.parts.split(",")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    result: dict = {
        "command": command_line(),
        "started": started.isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "size": {"interactions": args.interactions, "users": args.users, "items": args.items},
    }
    prepared, weights = work / "prepared", work / "mf-one-epoch.pt"
    if "prepare" in parts:
        result["prepare"] = prepare_part(args, work)
    root = _prepared_root(prepared)
    if "train" in parts:
        argv = [
            sys.executable,
            "-c",
            TRAIN_CHILD,
            str(root),
            str(weights),
            str(args.batch_size),
            str(args.torch_threads),
        ]
        result["train"] = run_child(argv)
        print(f"train: {result['train']}", flush=True)
    if "evaluate" in parts:
        argv = [sys.executable, "-c", EVAL_CHILD, str(root), str(weights), str(args.eval_users), "0"]
        result["evaluate"] = run_child(argv)
        print(f"evaluate: {result['evaluate']}", flush=True)
    if "index" in parts:
        argv = [sys.executable, str(HERE / "scale_index.py"), *args.index_args.split()]
        index = subprocess.run(argv, check=True, capture_output=True, text=True)
        result["index"] = {"stdout": index.stdout[-6000:]}
        print(index.stdout)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    path = results_path("scale", started)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def _prepared_root(prepared: Path) -> Path:
    """The split folder ``recstack-data prepare`` wrote under ``processed_root`` (one per config hash)."""
    if (prepared / "manifest.json").exists():
        return prepared
    found = sorted(prepared.glob("**/manifest.json"))
    return found[-1].parent if found else prepared


if __name__ == "__main__":
    main()
