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

HERE = Path(__file__).parent
OVERRIDES = ["model=mf", "fit.max_epochs=2", "fit.negatives=4", "trials=2", "budget=5m"]


def test_a_killed_study_resumes(tune_config, synthetic_split: PreparedSplit, tmp_path: Path) -> None:
    name = f"synthetic-mf-{synthetic_split.config_hash}"
    first_ckpt = tmp_path / "studies" / name / "trials" / "trial-0000" / "checkpoints" / "last.ckpt"
    held = tmp_path / "held"  # hold_trial.py writes it once trial 0 has finished its first epoch, then blocks
    command = [
        sys.executable,
        "-m",
        "recstack.cli.tune",
        *OVERRIDES,
        "data=synthetic",
        "torch_threads=1",
        f"study_root={tmp_path / 'studies'}",
        f"experiment_dir={tmp_path / 'exp'}",
        f"processed_root={synthetic_split.root.parents[1]}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "+callbacks.hold._target_=hold_trial.HoldTrial",
        f"+callbacks.hold.marker={held}",
    ]
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    try:
        deadline = time.monotonic() + 180
        while not held.is_file():  # killed after trial 0's first epoch, in the middle of the trial
            assert proc.poll() is None, f"recstack-tune exited early with {proc.returncode}"
            assert time.monotonic() < deadline, "trial 0 did not finish its first epoch within 180 s"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert first_ckpt.is_file()
    storage = f"sqlite:///{tmp_path / 'studies' / name / 'study.db'}"
    [killed] = optuna.load_study(study_name=name, storage=storage).trials
    assert killed.state == TrialState.RUNNING  # what a killed process leaves behind

    result = tune(tune_config(*OVERRIDES), split=synthetic_split)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].user_attrs[RETRY_OF] == 0 and trials[1].params == killed.params  # redone with its values
    assert trials[2].params != killed.params  # the resumed sampler moved on: it does not redraw the first session's
    assert result.counts == {"complete": 2, "pruned": 0, "fail": 1}
