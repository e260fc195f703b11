"""A full retrain cycle on ML-100K: the wall time of each step (issue 15's benchmark line), one fresh process per run,
as a scheduler starts it.

    RECSTACK_DATA_HOME=/work/shared/data nice .venv/bin/python benchmarks/retrain_cycle.py --repeats 3

Setup (timed apart): a serving bundle that has not seen ML-100K's test split, as a bundle deployed before the newest
interactions came in would not have: the first deployment of a retrain with ``deploy_refit=false
export.seen=train_valid`` (MF trained on the training split, no comparison). Then ``--repeats`` full cycles, each a
``recstack-retrain`` process judged against that bundle: registry, prepare, serving, holdout, train (MF,
configs/fit/mf.yaml, early stopping on validation), evaluate (the candidate exported and both bundles served to every
test user), gate, refit (all interactions, the best epoch count), export (HNSW index, MiniLM item text vectors and the
content section, export defaults; no Redis read), register (BentoML store); no reload (no service). Everything it
writes goes under ``--work`` (a fresh folder per invocation: its own MLflow store and BentoML home).

Writes ``benchmarks/results/retrain-<YYYYmmdd-HHMMSS>.json``: per run the exit status, the process wall time, the steps'
seconds and the gate's figures; per step the min / median / max over the runs; the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

RETRAIN = Path(sys.executable).with_name("recstack-retrain")


def run(args: list[str], env: dict[str, str]) -> tuple[dict, float, int]:
    start = time.perf_counter()
    done = subprocess.run([str(RETRAIN), *args], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.stderr.write(done.stderr[-5000:])
        raise SystemExit(f"recstack-retrain {' '.join(args)} printed no summary (exit {done.returncode})")
    return json.loads(lines[-1]), seconds, done.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="default: a new temporary folder")
    ap.add_argument("--overrides", nargs="*", default=["torch_threads=1"], help="for every run (Hydra overrides)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="retrain-bench-"))
    env = dict(os.environ, BENTOML_HOME=str(work / "bentoml"), RECSTACK_LAKE=str(work / "no-lake"))
    env.setdefault("RECSTACK_DATA_HOME", "data/raw")
    common = [
        "data=ml100k",
        f"out={work / 'out'}",
        f"bundles_root={work / 'bundles'}",
        f"registry.dir={work / 'mlruns'}",
        "export.erasure.redis_url=",
        "export.content.redis_url=",
        *args.overrides,
    ]
    setup, setup_s, code = run([*common, "deploy_refit=false", "export.seen=train_valid", "store.enabled=false"], env)
    if code:
        raise SystemExit(f"setup failed (exit {code}): {setup}")
    print(f"setup: serving bundle {setup['bundle']} in {setup_s:.0f} s", flush=True)
    runs = []
    for i in range(args.repeats):
        load = os.getloadavg()[0]
        summary, seconds, code = run([*common, f"serving_bundle={setup['bundle']}"], env)
        runs.append({"exit": code, "process_seconds": round(seconds, 1), "load_1min_at_start": load, **summary})
        steps = ", ".join(f"{k} {v:.1f}" for k, v in summary["seconds"].items())
        print(f"run {i + 1}: exit {code}, {seconds:.0f} s ({steps}); gate: {summary['gate']}", flush=True)
    names = list(dict.fromkeys(k for r in runs for k in r["seconds"]))
    ranges = {}
    for name in [*names, "process"]:
        values = [r["process_seconds"] if name == "process" else r["seconds"].get(name) for r in runs]
        values = [v for v in values if v is not None]
        if values:
            ranges[name] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
    result = {
        "benchmark": "retrain_cycle",
        "dataset": "ml-100k",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/retrain_cycle.py", *sys.argv[1:]]),
        "overrides": common,
        "cpu_count": os.cpu_count(),
        "setup": {"process_seconds": round(setup_s, 1), **setup},
        "runs": runs,
        "seconds_per_step": ranges,
    }
    out = Path("benchmarks/results") / f"retrain-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("per step, seconds (min / median / max):")
    for name, r in ranges.items():
        print(f"  {name:<9} {r['min']:7.1f} {r['median']:7.1f} {r['max']:7.1f}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
