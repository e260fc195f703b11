"""Ctrl-C during ``recstack-train``: a real SIGINT to a real training process, then the README's resume command.

What Lightning (2.6) does on SIGINT inside ``trainer.fit``: it logs "Detected KeyboardInterrupt, attempting graceful
shutdown ...", runs the ``on_exception`` hooks (``OnExceptionCheckpoint`` writes ``checkpoints/interrupted.ckpt``) and
calls ``sys.exit(1)``: exit status 1, no traceback, no ``metrics.json``. ``last.ckpt`` is the one of the last finished
epoch. Resuming with ``ckpt_path=<run>/checkpoints/last.ckpt run_dir=<run>`` finishes the run and writes
``metrics.json``; at the end of that successful fit ``OnExceptionCheckpoint`` deletes ``interrupted.ckpt``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


def _train_command(tmp_path: Path, run_dir: Path, *overrides: str) -> list[str]:
    # recstack-train is recstack.cli.train:main (pyproject [project.scripts]); the synthetic set needs no download and
    # its 200 users x 100 items train in a fraction of a second per epoch, so startup dominates each process.
    return [
        sys.executable,
        "-m",
        "recstack.cli.train",
        "data=synthetic",
        "model=mf",
        "torch_threads=1",
        "progress=false",
        f"run_dir={run_dir}",
        f"processed_root={tmp_path / 'processed'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "fit.patience=100000",  # early stopping must not end the run before the signal
        *overrides,
    ]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(
                f"training exited ({proc.returncode}) before {path.name} appeared:\n{out[-2000:]}\n{err[-4000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail(f"{path} did not appear within {timeout:.0f} s")
        time.sleep(0.05)


def test_ctrl_c_checkpoints_and_last_ckpt_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.Popen(
        _train_command(tmp_path, run, "fit.max_epochs=100000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _wait_for(checkpoints / "last.ckpt", proc, timeout=40)
        time.sleep(0.3)  # well into a later epoch, still inside trainer.fit
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    # Lightning's graceful shutdown ends in sys.exit(1): status 1, a log line, no traceback, no metrics.
    assert proc.returncode == 1, (out[-2000:], err[-4000:])
    assert "Detected KeyboardInterrupt, attempting graceful shutdown" in out + err
    assert "Traceback" not in err, err[-4000:]
    assert "KeyboardInterrupt" not in err.replace("Detected KeyboardInterrupt", ""), err[-4000:]
    assert (checkpoints / "interrupted.ckpt").is_file()  # OnExceptionCheckpoint, at the moment of the signal
    assert (checkpoints / "last.ckpt").is_file()  # ModelCheckpoint(save_last), at the last finished epoch
    assert not (run / "metrics.json").exists()

    last_epoch = int(torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)["epoch"])
    interrupted_epoch = int(
        torch.load(checkpoints / "interrupted.ckpt", map_location="cpu", weights_only=False)["epoch"]
    )
    assert interrupted_epoch >= last_epoch

    # The README's resume: ckpt_path=<run>/checkpoints/last.ckpt run_dir=<run>, two more epochs.
    target = last_epoch + 3  # epochs are 0-based: last.ckpt holds epoch last_epoch, so last_epoch + 1 are done
    resumed = subprocess.run(
        _train_command(tmp_path, run, f"fit.max_epochs={target}", f"ckpt_path={checkpoints / 'last.ckpt'}"),
        capture_output=True,
        text=True,
        env=env,
        timeout=40,
    )
    assert resumed.returncode == 0, (resumed.stdout[-2000:], resumed.stderr[-4000:])
    assert f"Restored all states from the checkpoint at {checkpoints / 'last.ckpt'}" in resumed.stdout + resumed.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == target
    assert set(metrics["valid"]) >= {"ndcg@10"} and metrics["test"] is not None
    assert (checkpoints / "last.ckpt").is_file()
    # OnExceptionCheckpoint.teardown removes its file once a fit finishes normally.
    assert not (checkpoints / "interrupted.ckpt").exists()
