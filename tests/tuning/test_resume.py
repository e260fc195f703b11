"""A study whose process is killed mid-trial resumes: the lost trial is marked failed and redone with its values."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from recstack.data.prepared import PreparedSplit
from recstack.tuning.study import RETRY_OF
from recstack.tuning.tune import tune

pytestmark = pytest.mark.slow

OVERRIDES = ["model=mf", "fit.max_epochs=2", "fit.negatives=4", "trials=2", "budget=5m"]


def test_a_killed_study_resumes(tune_config, ml100k_split: PreparedSplit, tmp_path: Path) -> None:
    name = f"ml_100k-mf-{ml100k_split.config_hash}"
    first_ckpt = tmp_path / "studies" / name / "trials" / "trial-0000" / "checkpoints" / "last.ckpt"
    command = [
        sys.executable,
        "-m",
        "recstack.cli.tune",
        *OVERRIDES,
        "torch_threads=1",
        f"study_root={tmp_path / 'studies'}",
        f"experiment_dir={tmp_path / 'exp'}",
        f"processed_root={ml100k_split.root.parents[1]}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not first_ckpt.is_file():  # killed after trial 0's first epoch, in the middle of the trial
            assert proc.poll() is None, f"recstack-tune exited early with {proc.returncode}"
            assert time.monotonic() < deadline, "trial 0 wrote no checkpoint within 180 s"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    storage = f"sqlite:///{tmp_path / 'studies' / name / 'study.db'}"
    [killed] = optuna.load_study(study_name=name, storage=storage).trials
    assert killed.state == TrialState.RUNNING  # what a killed process leaves behind

    result = tune(tune_config(*OVERRIDES), split=ml100k_split)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].user_attrs[RETRY_OF] == 0 and trials[1].params == killed.params  # redone with its values
    assert trials[2].params != killed.params  # the resumed sampler moved on: it does not redraw the first session's
    assert result.counts == {"complete": 2, "pruned": 0, "fail": 1}
