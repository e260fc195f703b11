"""The wall-clock budget bounds the study, not only when its last trial may start; bad input exits with one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from recstack.data.prepared import PreparedSplit
from recstack.tuning.tune import tune

pytestmark = pytest.mark.slow


def test_a_trial_running_at_the_deadline_stops_at_its_next_epoch(tune_config, synthetic_split: PreparedSplit) -> None:
    # Epochs of a fraction of a second and no early stopping: only the deadline can end this trial.
    max_epochs = 100_000
    cfg = tune_config(
        "model=mf",
        f"fit.max_epochs={max_epochs}",
        "fit.patience=100000",
        "fit.negatives=4",
        "tune.min_trial=6s",
        "budget=6s",
        "trials=5",
    )
    started = time.monotonic()
    result = tune(cfg, split=synthetic_split)
    elapsed = time.monotonic() - started
    [trial] = optuna.load_study(study_name=result.study_name, storage=result.storage).trials
    assert trial.user_attrs["cut_by_budget"] is True and 1 <= trial.user_attrs["epochs"] < max_epochs
    assert result.counts == {"complete": 1, "pruned": 0, "fail": 0}
    assert elapsed < 120  # 6 s, one epoch past it, the winner's test reading and the report, on a shared 2-core CPU


def test_the_cli_refuses_a_budget_below_one_trial_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recstack.cli.tune",
            "model=mf",
            "budget=5s",
            f"study_root={tmp_path}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "recstack-tune: error: budget=5s is too small for even one mf trial: the minimum is 30s "
        "(configs/tune/mf.yaml min_trial); pass budget=30s or more"
    )
    assert "Traceback" not in done.stderr and not list(tmp_path.glob("*/study.db"))


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="parallel trials need 2 cores")
def test_parallel_trials_share_one_study(tune_config, synthetic_split: PreparedSplit, tmp_path: Path) -> None:
    # trial_barrier.py holds each trial until both processes have started one (a trial here is shorter than the skew
    # between the two processes' start-up), so both take part whatever the machine's load.
    barrier = [
        "+callbacks.barrier._target_=trial_barrier.TrialBarrier",
        f"+callbacks.barrier.folder={tmp_path / 'barrier'}",
    ]
    cfg = tune_config("model=mf", "fit.max_epochs=2", "fit.negatives=4", "trials=2", "n_jobs=2", "budget=3m", *barrier)
    result = tune(cfg, split=synthetic_split)
    trials = optuna.load_study(study_name=result.study_name, storage=result.storage).trials
    assert result.counts["complete"] >= 2 and result.counts["fail"] == 0
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # two processes, one SQLite study
    assert len({t.params["fit.lr"] for t in trials}) == len(trials)  # each process samples with its own seed
