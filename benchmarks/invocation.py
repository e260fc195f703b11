"""The command a benchmark was really run with, where its small JSON results go and what each of them starts with.

Benchmarks print and record :func:`command_line` instead of a hand-written command, so what RESULTS.md quotes is what
ran: the environment variables that change the run (data folder, thread counts, offline flags) with the values
actually used, the niceness, the interpreter as typed (relative to the working directory when inside it) and argv.
A benchmark calls :func:`start_run` first and :func:`write_results` last; :func:`metric_cells` formats its table rows.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"

# Variables that change what a benchmark measures or reads. RECSTACK_* are added whatever their name.
_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def command_line() -> str:
    """``[cd DIR &&] [VAR=value ...] [nice -n N] python script args`` for this process."""
    env = sorted(k for k in os.environ if k.startswith("RECSTACK_")) + [k for k in _ENV if k in os.environ]
    cwd = Path.cwd()
    python = Path(sys.executable)
    shown = os.path.relpath(python, cwd) if python.is_relative_to(cwd) else str(python)
    # secrets (the pseudonymisation key, API keys) are named, never printed or committed
    parts = [
        f"{k}=<redacted>"
        if any(w in k for w in ("KEY", "SECRET", "TOKEN", "PASSWORD")) and not k.endswith("_FILE")
        else f"{k}={shlex.quote(os.environ[k])}"
        for k in env
    ]
    niceness = os.nice(0)
    if niceness:
        parts += ["nice", "-n", str(niceness)]
    parts += [shown, *map(shlex.quote, sys.argv)]
    prefix = "" if cwd == REPO else f"cd {shlex.quote(os.path.relpath(cwd, REPO))} && "
    return prefix + " ".join(parts)


def results_path(name: str, started: datetime | None = None) -> Path:
    """``benchmarks/results/<name>-<UTC yyyymmdd-hhmmss>.json``: small per-run outputs, committed with the figures."""
    stamp = (started or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return RESULTS_DIR / f"{name}-{stamp}.json"


@dataclass(frozen=True)
class Run:
    """One benchmark run: the command it was run with (:func:`command_line`) and when it started (UTC)."""

    command: str
    started: datetime


def start_run() -> Run:
    """Note the start of this run and print its command line (``command: ...``, then a blank line)."""
    started = datetime.now(UTC)
    command = command_line()
    print(f"command: {command}\n")
    return Run(command, started)


def write_results(out: Path, run: Run, split: object, fields: Mapping[str, Any]) -> None:
    """Write ``out`` as indented JSON: the run's command, start, 1-minute load average and ``repr(split)``, then
    ``fields`` (a value JSON does not know is written as its ``str``); print where it went."""
    result = {
        "command": run.command,
        "started_utc": run.started.isoformat(timespec="seconds"),
        "load_avg_1m": os.getloadavg()[0],
        "split": repr(split),
        **fields,
    }
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")


def metric_cells(result: Mapping[str, Mapping[str, float]], stages: Iterable[str], metrics: Iterable[str]) -> str:
    """A markdown row's cells: ``result[stage][metric]`` to 4 decimals, stage by stage, metric by metric."""
    metrics = tuple(metrics)
    return " | ".join(f"{result[s][m]:.4f}" for s in stages for m in metrics)
