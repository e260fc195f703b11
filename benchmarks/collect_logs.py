"""Server-log import speed: lines per second of ``recstack.collect.log_import.import_log`` on a large generated log.

    .venv/bin/python benchmarks/collect_logs.py [--lines 2000000] [--format combined] [--repeats 3] [--ip-mode drop]

The log is ``data/examples/make_access_log.py``'s (same seed, same shape as the shipped example: ~8% bots, ~35%
assets and health checks, a few malformed lines, 1 distinct User-Agent per 1,000 lines up to 3,000) written once to a
temporary folder. Each repeat imports it with ``configs/log_rules/demo.yaml`` into a fresh lake, in a fresh child
process, so no User-Agent or pseudonym cache carries over from the repeat before (a repeat is a cold import, as a
nightly job would run it). The time is the import alone (reading, parsing, minimising, writing the Parquet files),
not the interpreter start. Prints one JSON line: lines/s per repeat, min / median / max, CPU seconds, and the load
average, because other work on the machine changes the figure. Target: >= 200,000 lines/s on the 2-core dev box.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "configs" / "log_rules" / "demo.yaml"

CHILD = """
import json, sys, time
from recstack.collect.log_import import import_log
from recstack.collect.log_rules import load_rules
from recstack.config import collect_settings
path, fmt, rules, lake, ip_mode, workers = sys.argv[1:7]
settings = collect_settings([f"lake={lake}", f"ip_mode={ip_mode}"])
cpu = time.process_time()
summary = import_log(path, fmt, load_rules(rules), settings, workers=int(workers) or None)
print(json.dumps({
    "seconds": summary.seconds, "cpu_s": time.process_time() - cpu, "lines": summary.lines,
    "events": summary.events, "skipped": summary.skipped, "files": len(summary.files),
}))
"""


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_access_log", REPO / "data" / "examples" / "make_access_log.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--format", default="combined", choices=("combined", "common", "json"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ip-mode", default="drop", choices=("drop", "truncate"))
    parser.add_argument("--workers", type=int, default=0, help="threads (0: import_log's default)")
    args = parser.parse_args()
    env = {**os.environ, "RECSTACK_HMAC_KEY": os.environ.get("RECSTACK_HMAC_KEY") or "benchmark-" + "k" * 40}
    with tempfile.TemporaryDirectory(prefix="recstack-logs-") as tmp:
        log = Path(tmp) / f"access.{args.format}.log"
        started = time.perf_counter()
        generator().write(log, args.lines, fmt=args.format)
        generated_s = time.perf_counter() - started
        size_mib = log.stat().st_size / 2**20
        runs = []
        for repeat in range(args.repeats):
            command = [sys.executable, "-c", CHILD, str(log), args.format, str(RULES), f"{tmp}/lake{repeat}"]
            done = subprocess.run(
                [*command, args.ip_mode, str(args.workers)], capture_output=True, text=True, env=env, check=False
            )
            if done.returncode:
                sys.exit(f"import failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    rates = [run["lines"] / run["seconds"] for run in runs]
    print(
        json.dumps(
            {
                "benchmark": "collect_logs",
                "format": args.format,
                "ip_mode": args.ip_mode,
                "lines": runs[0]["lines"],
                "log_mib": round(size_mib, 1),
                "events": runs[0]["events"],
                "skipped": runs[0]["skipped"],
                "lines_per_s": [round(rate) for rate in rates],
                "lines_per_s_min": round(min(rates)),
                "lines_per_s_median": round(statistics.median(rates)),
                "lines_per_s_max": round(max(rates)),
                "seconds": [round(run["seconds"], 2) for run in runs],
                "cpu_s": [round(run["cpu_s"], 2) for run in runs],
                "generate_s": round(generated_s, 1),
                "cpus": os.cpu_count(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
