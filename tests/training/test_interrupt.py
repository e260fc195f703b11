"""Ctrl-C and SIGTERM during ``recstack-train``: real signals to a real training process, then the README's resume.

What happens (see :mod:`recstack.training.signals`): the first SIGINT or SIGTERM raises ``KeyboardInterrupt`` inside
``trainer.fit``; Lightning (2.6) logs "Detected KeyboardInterrupt, attempting graceful shutdown ...", runs the
``on_exception`` hooks (``OnExceptionCheckpoint`` writes ``checkpoints/interrupted.ckpt``) and calls ``sys.exit(1)``:
exit status 1, no traceback, no ``metrics.json``. ``last.ckpt`` is the one of the last finished epoch. Resuming with
``ckpt_path=<run>/checkpoints/last.ckpt run_dir=<run>`` finishes the run and writes ``metrics.json``; at the end of that
successful fit ``OnExceptionCheckpoint`` deletes ``interrupted.ckpt``. A second signal exits at once (128 + signal),
however long the shutdown the first one started would take.

The tests wait on what the process reports (its log lines, read by a thread), never on fixed sleeps. The timeouts
only bound a broken run: start-up alone took 30-95 s with both cores of the 2-core CI machine busy, ~12 s idle. That
start-up (importing torch and Lightning) is most of each process's time, so the resume, which needs no signal, runs in
this process: ``train(cfg)``, what ``recstack-train`` calls, with the same overrides.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import pytest
import torch
from slow_shutdown import STARTED as SLOW_SHUTDOWN_STARTED

from recstack.config import compose
from recstack.training.train import train

pytestmark = pytest.mark.slow

START_TIMEOUT = 240.0  # process start to the first finished epoch (imports, data, model), on a loaded machine
EXIT_TIMEOUT = 180.0  # signal to exit: the checkpoint, the trainer's teardown and the interpreter's own shutdown
# RecommenderModule's line per epoch; ModelCheckpoint saves the epoch's checkpoints just after it, so once epoch 1 is
# reported done, checkpoints/last.ckpt (epoch 0) exists.
SECOND_EPOCH_DONE = re.compile(r"epoch 1 done")


def _overrides(tmp_path: Path, run_dir: Path, *overrides: str) -> list[str]:
    # The synthetic set needs no download and its 200 users x 100 items train in a fraction of a second per epoch.
    return [
        "data=synthetic",
        "model=mf",
        "torch_threads=1",
        "progress=false",
        f"run_dir={run_dir}",
        f"processed_root={tmp_path / 'processed'}",
        "fit.patience=100000",  # early stopping must not end the run before the signal
        *overrides,
    ]


def _train_command(tmp_path: Path, run_dir: Path, *overrides: str) -> list[str]:
    # recstack-train is recstack.cli.train:main (pyproject [project.scripts]).
    return [
        sys.executable,
        "-m",
        "recstack.cli.train",
        *_overrides(tmp_path, run_dir, *overrides),
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]


def _env() -> dict[str, str]:
    # This folder on the path: the slow-shutdown test adds its callback from slow_shutdown.py by a Hydra override.
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1", "PYTHONPATH": path}


class Training:
    """A ``recstack-train`` process; a thread collects its output (stdout and stderr together) line by line."""

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), bufsize=1
        )
        self.lines: list[str] = []
        self._eof = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, pattern: re.Pattern[str] | str, timeout: float) -> re.Match[str]:
        """The first output line matching ``pattern``; fails if the process ends or ``timeout`` passes first."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                if self._eof:
                    self.proc.wait()
                    pytest.fail(f"training exited ({self.proc.returncode}) before {regex.pattern!r}:\n{self._tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"no {regex.pattern!r} within {timeout:.0f} s:\n{self._tail()}")
                self._changed.wait(remaining)

    def wait_exit(self, timeout: float) -> int:
        try:
            returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"training still running {timeout:.0f} s after the signal:\n{self._tail()}")
        self._reader.join(timeout=30)  # the pipe closes with the process
        return returncode

    def _tail(self) -> str:
        return "".join(self.lines[-60:])

    def __enter__(self) -> Training:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _epoch(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])


def _assert_stopped_with_checkpoints(training: Training, run: Path, returncode: int) -> None:
    out = training.output
    # Lightning's graceful shutdown ends in sys.exit(1): status 1, a log line, no traceback, no metrics.
    assert returncode == 1, out[-6000:]
    assert "Detected KeyboardInterrupt, attempting graceful shutdown" in out
    assert "Traceback" not in out, out[-6000:]
    checkpoints = run / "checkpoints"
    assert (checkpoints / "interrupted.ckpt").is_file()  # OnExceptionCheckpoint, at the moment of the signal
    assert (checkpoints / "last.ckpt").is_file()  # ModelCheckpoint(save_last), at the last finished epoch
    assert not (run / "metrics.json").exists()
    assert _epoch(checkpoints / "interrupted.ckpt") >= _epoch(checkpoints / "last.ckpt")


def test_ctrl_c_checkpoints_and_last_ckpt_resumes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    with Training(_train_command(tmp_path, run, "fit.max_epochs=100000")) as training:
        training.wait_for(SECOND_EPOCH_DONE, START_TIMEOUT)  # last.ckpt is written; training goes on
        training.proc.send_signal(signal.SIGINT)
        returncode = training.wait_exit(EXIT_TIMEOUT)
    assert "SIGINT received: stopping with a checkpoint first" in training.output
    _assert_stopped_with_checkpoints(training, run, returncode)

    # The README's resume: ckpt_path=<run>/checkpoints/last.ckpt run_dir=<run>, two more epochs (in this process).
    last_epoch = _epoch(checkpoints / "last.ckpt")
    target = last_epoch + 3  # epochs are 0-based: last.ckpt holds epoch last_epoch, so last_epoch + 1 are done
    caplog.set_level(logging.INFO)
    resumed = train(
        compose(
            "train", _overrides(tmp_path, run, f"fit.max_epochs={target}", f"ckpt_path={checkpoints / 'last.ckpt'}")
        )
    )
    assert f"Restored all states from the checkpoint at {checkpoints / 'last.ckpt'}" in caplog.text
    assert resumed.run_dir == run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == target
    assert set(metrics["valid"]) >= {"ndcg@10"} and metrics["test"] is not None
    assert (checkpoints / "last.ckpt").is_file()
    # OnExceptionCheckpoint.teardown removes its file once a fit finishes normally.
    assert not (checkpoints / "interrupted.ckpt").exists()


def test_sigterm_stops_with_a_checkpoint_and_a_failure_status(tmp_path: Path) -> None:
    # Lightning alone would stop at the next batch on SIGTERM and exit 0, as if the run had finished.
    run = tmp_path / "run"
    with Training(_train_command(tmp_path, run, "fit.max_epochs=100000")) as training:
        training.wait_for(SECOND_EPOCH_DONE, START_TIMEOUT)
        training.proc.send_signal(signal.SIGTERM)
        returncode = training.wait_exit(EXIT_TIMEOUT)
    assert "SIGTERM received: stopping with a checkpoint first" in training.output
    _assert_stopped_with_checkpoints(training, run, returncode)


def test_second_ctrl_c_exits_while_the_shutdown_hangs(tmp_path: Path) -> None:
    # Lightning ignores SIGINT during its shutdown; here that shutdown blocks in an on_exception hook for an hour.
    run = tmp_path / "run"
    slow = "+callbacks.slow_shutdown._target_=slow_shutdown.SlowShutdown"
    with Training(_train_command(tmp_path, run, "fit.max_epochs=100000", slow)) as training:
        training.wait_for(SECOND_EPOCH_DONE, START_TIMEOUT)
        training.proc.send_signal(signal.SIGINT)
        training.wait_for(re.escape(SLOW_SHUTDOWN_STARTED), EXIT_TIMEOUT)
        training.proc.send_signal(signal.SIGINT)
        returncode = training.wait_exit(EXIT_TIMEOUT)
    assert returncode == 128 + signal.SIGINT, training.output[-6000:]
    assert "SIGINT again: exiting now" in training.output
    assert not (run / "metrics.json").exists()
