"""The command a benchmark was really run with, and where its small JSON results go.

Benchmarks print and record :func:`command_line` instead of a hand-written command, so what RESULTS.md quotes is what
ran: the environment variables that change the run (data folder, thread counts, offline flags) with the values
actually used, the niceness, the interpreter as typed (relative to the working directory when inside it) and argv.
"""

from __future__ import annotations

import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

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
