"""Closing-the-loop benchmark (issue 15): what impressions cost the request path, and what a hot-swap costs traffic.

    RECSTACK_DATA_HOME=../shared/data .venv/bin/python benchmarks/loop.py [--part impressions|swap|all]
        [--duration 20] [--repeats 3]

* ``impressions``: the recstack service (2 workers, ML-100K SVD bundle with an ONNX ranker, mixed known and unknown
  users) under wrk at concurrency 16, with impressions on and off (``impressions=true|false``), alternating which
  goes first per repeat so both share the machine's state. The target: at most 1 ms of added p99.
* ``swap``: one service with impressions on, two different ML-100K bundles (SVD factorisations of dimension 32 and
  48). wrk at c=16 for ``--duration`` seconds steady, then for ``2 x --duration`` seconds while three reloads
  (``POST /admin/reload``: 32 -> 48 -> 32 -> 48) run one after another, each waited for (200) and followed by the
  other worker within ``reload_poll_s``, then ``--duration`` seconds after. Errors and p50/p99 per phase; the target
  is zero errors and a p99 during swaps within 2x of the steady state.

The ``recstack-monitor`` figure (10M impressions) is ``benchmarks/monitor_bench.py``; the retrain cycle's is
``benchmarks/retrain_cycle.py``. Results go to ``benchmarks/results/loop-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from invocation import command_line, results_path
from serve_load import build_ml100k_bundle, free_port, loadavg, run_wrk, stop, wait_ready, wrk_script

REPO = Path(__file__).resolve().parents[1]
SERVE = str(Path(sys.executable).with_name("recstack-serve"))
HMAC = "benchmark-only-pseudonymisation-key-0123456789abcdef"
MECHANICS = ["consent_for_personalisation=false", "collector.consent_required=false", "auth=false", "rate_limit=false"]


def bodies(users: list[str], n: int = 2000, seed: int = 0) -> list[str]:
    """80% known users, 20% unknown (cold starts), as serve_load.py mixes them."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        user = rng.choice(users) if rng.random() < 0.8 else f"cold-{i}"
        out.append(json.dumps({"user_id": user, "k": 10}))
    return out


def start(bundle: Path, prefix: str, port: int, extra: list[str]) -> subprocess.Popen:
    argv = [
        SERVE,
        f"bundle={bundle}",
        f"port={port}",
        "host=127.0.0.1",
        f"redis_prefix={prefix}",
        f"collector.stream={prefix}collect",
        *MECHANICS,
        *extra,
    ]
    env = {**os.environ, "RECSTACK_HMAC_KEY": HMAC, "BENTOML_DO_NOT_TRACK": "True"}
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{port}/readyz", process, timeout=180)
    return process


def cleanup(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)


def impressions_part(bundle: Path, script: Path, duration: int, repeats: int) -> list[dict]:
    rows = []
    for repeat in range(repeats):
        order = (True, False) if repeat % 2 == 0 else (False, True)
        for on in order:
            prefix = f"bench-loop:{uuid.uuid4().hex[:8]}:"
            port = free_port()
            process = start(bundle, prefix, port, [f"impressions={'true' if on else 'false'}"])
            try:
                url = f"http://127.0.0.1:{port}/recommend"
                run_wrk(url, script, 4, 3)  # warm-up, past the GC freeze
                load = loadavg()
                row = run_wrk(url, script, 16, duration)
                pending = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json().get("impressions")
                row.update(repeat=repeat, impressions=on, load_before=load, impressions_state=pending)
                if on:
                    import redis

                    row["stream_entries"] = redis.Redis.from_url("redis://127.0.0.1:6379/0").xlen(f"{prefix}collect")
                print(json.dumps(row), flush=True)
                rows.append(row)
            finally:
                stop(process)
                cleanup(prefix)
    return rows


def reload_in_turn(base: str, targets: tuple[Path, ...], pause_s: float, swaps: list[dict]) -> None:
    """POST /admin/reload to each target in turn, ``pause_s`` apart (the other worker follows within reload_poll_s)."""
    time.sleep(pause_s)
    with httpx.Client(base_url=base, timeout=60) as client:
        for target in targets:
            t0 = time.perf_counter()
            answer = client.post("/admin/reload", json={"bundle": str(target)})
            swaps.append({"status": answer.status_code, "seconds": time.perf_counter() - t0, "to": target.parent.name})
            time.sleep(pause_s)


def swap_part(bundles: list[Path], script: Path, duration: int, repeats: int) -> list[dict]:
    out = []
    for repeat in range(repeats):
        prefix = f"bench-loop:{uuid.uuid4().hex[:8]}:"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = start(bundles[0], prefix, port, ["impressions=true", "reload_poll_s=1.0"])
        try:
            url = f"{base}/recommend"
            run_wrk(url, script, 4, 3)
            before = run_wrk(url, script, 16, duration)
            swaps: list[dict] = []

            targets = (bundles[1], bundles[0], bundles[1])
            swapper = threading.Thread(target=reload_in_turn, args=(base, targets, duration / 4, swaps))
            swapper.start()
            during = run_wrk(url, script, 16, 2 * duration)
            swapper.join()
            after = run_wrk(url, script, 16, duration)
            row = {
                "repeat": repeat,
                "load": loadavg(),
                "before": before,
                "during": during,
                "after": after,
                "swaps": swaps,
                "p99_ratio_during_vs_before": during["p99_ms"] / before["p99_ms"],
            }
            print(json.dumps(row), flush=True)
            out.append(row)
        finally:
            stop(process)
            cleanup(prefix)
    return out


def summarise(results: dict) -> dict:
    summary: dict = {}
    imp = results.get("impressions") or []
    if imp:
        for on in (True, False):
            p99 = [r["p99_ms"] for r in imp if r["impressions"] is on]
            rps = [r["rps"] for r in imp if r["impressions"] is on]
            summary[f"impressions_{'on' if on else 'off'}"] = {
                "p99_ms": [min(p99), statistics.median(p99), max(p99)],
                "rps": [min(rps), statistics.median(rps), max(rps)],
                "errors": sum(r["errors"] for r in imp if r["impressions"] is on),
            }
        pairs = [
            next(r["p99_ms"] for r in imp if r["repeat"] == k and r["impressions"])
            - next(r["p99_ms"] for r in imp if r["repeat"] == k and not r["impressions"])
            for k in sorted({r["repeat"] for r in imp})
        ]
        summary["added_p99_ms_per_repeat"] = pairs
    swaps = results.get("swap") or []
    if swaps:
        summary["swap"] = {
            "errors": sum(r[p]["errors"] for r in swaps for p in ("before", "during", "after")),
            "reload_statuses": [s["status"] for r in swaps for s in r["swaps"]],
            "p99_before_ms": [r["before"]["p99_ms"] for r in swaps],
            "p99_during_ms": [r["during"]["p99_ms"] for r in swaps],
            "p99_after_ms": [r["after"]["p99_ms"] for r in swaps],
            "p99_ratio_during_vs_before": [r["p99_ratio_during_vs_before"] for r in swaps],
            "reload_seconds": [s["seconds"] for r in swaps for s in r["swaps"]],
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("impressions", "swap", "all"), default="all")
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recstack-loop-") as tmp:
        work = Path(tmp)
        first = build_ml100k_bundle(work / "svd32", dim=32)
        second = build_ml100k_bundle(work / "svd48", dim=48)
        import pandas as pd

        users = pd.read_parquet(first / "users.parquet")["user_id"].astype(str).tolist()
        script = wrk_script(work / "bodies.lua", bodies(users))
        results: dict = {
            "command": command_line(),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_at_start": loadavg()},
        }
        if args.part in ("impressions", "all"):
            results["impressions"] = impressions_part(first, script, args.duration, args.repeats)
        if args.part in ("swap", "all"):
            results["swap"] = swap_part([first, second], script, args.duration, args.repeats)
    results["summary"] = summarise(results)
    path = results_path("loop")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"], indent=2))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
