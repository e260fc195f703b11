"""Data preparation benchmark: ML-100K prepare time, and a 20M-interaction synthetic prepare (wall time, peak RSS).

    RECSTACK_DATA_HOME=../shared/data .venv/bin/python benchmarks/prepare.py [--write]

(a) ML-100K: the full ``prepare`` (load, clean, index, split, write Parquet), forced, after a warm-up run so that
    imports and first-call costs are out; min and median of ``--repeats`` runs. Target <= 3 s.
(b) Synthetic, default random split: one fresh child process runs ``prepare_named("synthetic", ...)`` so that its
    peak RSS (``ru_maxrss``) is the preparation's alone. Generation is part of the wall time (it is the source's
    "load"); the manifest's per-step timing shows it apart. Targets <= 60 s and <= 4 GiB.

``--write`` replaces this benchmark's section of ``benchmarks/RESULTS.md`` (other sections are left alone). The figures
and the command it was really run with also go to ``benchmarks/results/prepare-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from invocation import command_line, results_path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## Data preparation (`benchmarks/prepare.py`)"

CHILD = """
import json, resource, sys, time
start = time.perf_counter()
from recstack.config import prepare_named
imported = time.perf_counter()
cpu = time.process_time()
users, items, n, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
split = prepare_named(
    "synthetic",
    "random",
    overrides=[f"data.source.n_users={users}", f"data.source.n_items={items}", f"data.source.n_interactions={n}"],
    out_root=out,
    force=True,
)
done = time.perf_counter()
print(json.dumps({
    "import_s": imported - start,
    "prepare_s": done - imported,
    "prepare_cpu_s": time.process_time() - cpu,
    "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "manifest": split.manifest,
}))
"""


def machine() -> str:
    load = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)"


def bench_ml100k(repeats: int, out: Path) -> dict:
    from recstack.config import prepare_named

    prepare_named("ml100k", "random", out_root=out, force=True)  # warm-up: imports, first calls
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        split = prepare_named("ml100k", "random", out_root=out, force=True)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    prepare_named("ml100k", "random", out_root=out)
    reuse = time.perf_counter() - start
    return {"times": times, "reuse_s": reuse, "manifest": split.manifest}


def bench_synthetic(users: int, items: int, n: int, out: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(users), str(items), str(n), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"synthetic prepare failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def render(args: argparse.Namespace, ml: dict | None, syn: dict | None, env: str, env_after: str) -> str:
    import numpy
    import pandas
    import pyarrow

    lines = [
        SECTION,
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {env} (at the end: {env_after.split('load average ', 1)[1]}); "
        f"Python {platform.python_version()}, numpy {numpy.__version__}, pandas {pandas.__version__}, "
        f"pyarrow {pyarrow.__version__}. The machine is shared with other jobs, so wall times vary with the load; "
        "CPU time is the steadier figure.",
        "",
        "Command:",
        "",
        "```",
        command_line(),
        "```",
        "",
        "| measure | result | target |",
        "|---|---|---|",
    ]
    if ml is not None:
        t = ml["times"]
        lines.append(
            f"| ML-100K prepare, forced, after warm-up (min / median of {len(t)}) | "
            f"{min(t):.2f} s / {statistics.median(t):.2f} s | <= 3 s |"
        )
        lines.append(f"| ML-100K prepare, folder reused (same config) | {ml['reuse_s'] * 1000:.0f} ms | |")
    if syn is not None:
        m = syn["manifest"]
        timing = m["timing_s"]
        rss_gib = syn["peak_rss_kib"] / 1024**2
        lines.append(
            f"| synthetic {args.interactions:,} interactions / {args.users:,} users / {args.items:,} items, "
            f"random split: wall time of `prepare_named` (generation included) | {syn['prepare_s']:.1f} s | <= 60 s |"
        )
        lines.append(f"| same, peak RSS of the process | {rss_gib:.2f} GiB | <= 4 GiB |")
        lines.append(f"| same, CPU time of the process (user + system) | {syn['prepare_cpu_s']:.1f} s | |")
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in timing.items() if k != "total")
        lines += [
            "",
            f"Synthetic run, per step (manifest `timing_s`; `load` is the generator): {steps}; then "
            f"{syn['prepare_s'] - timing['total']:.1f} s to compose the config, rename the folder into place and hand "
            f"the tables back as pandas frames. Peak RSS after each step (MiB): "
            f"{', '.join(f'{k} {v:,.0f}' for k, v in m.get('peak_rss_mib', {}).items())}. After cleaning: "
            f"{m['n_users']:,} users, {m['n_items']:,} items, {m['n_interactions']:,} interactions "
            f"({m['cleaning']['duplicates_removed']:,} exact duplicates removed), {m['n_pairs']:,} distinct pairs; "
            f"train/valid/test {m['counts']['train']:,} / {m['counts']['valid']:,} / {m['counts']['test']:,}.",
        ]
    if ml is not None:
        m = ml["manifest"]
        lines += [
            "",
            f"ML-100K: {m['n_users']:,} users, {m['n_items']:,} items, train/valid/test "
            f"{m['counts']['train']:,} / {m['counts']['valid']:,} / {m['counts']['test']:,}.",
        ]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace this benchmark's section in RESULTS.md (up to the next ``## `` heading), or append it."""
    current = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n"
    if SECTION in current:
        head, rest = current.split(SECTION, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
        current = head + text + ("\n" + tail if tail else "")
    else:
        current = current.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--interactions", type=int, default=20_000_000)
    parser.add_argument("--skip-ml100k", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--write", action="store_true", help=f"write the section into {RESULTS}")
    args = parser.parse_args()
    started = datetime.now(UTC)
    env = machine()  # before the runs: the load we ran under, not the load we caused
    with tempfile.TemporaryDirectory(prefix="recstack-bench-") as tmp:
        ml = None if args.skip_ml100k else bench_ml100k(args.repeats, Path(tmp) / "ml")
        syn = None if args.skip_synthetic else bench_synthetic(args.users, args.items, args.interactions, Path(tmp))
    env_after = machine()
    text = render(args, ml, syn, env, env_after)
    print(text)
    out = results_path("prepare", started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": command_line(),
                "started_utc": f"{started:%Y-%m-%d %H:%M:%S UTC}",
                "machine_before": env,
                "machine_after": env_after,
                "ml100k": ml,
                "synthetic": syn,
            },
            indent=1,
            default=str,
        )
        + "\n"
    )
    print(f"wrote {out}")
    if args.write:
        write_section(text)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
