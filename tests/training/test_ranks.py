"""Which rank a process is before DDP starts, and the run folder rank 0 hands down (recstack.training.ranks).

The environment a launcher sets is this module's whole input, so these tests set it as each launcher does; the real
two-process runs are in test_ddp.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recstack.config import compose
from recstack.data.prepared import PreparedSplit
from recstack.training import ranks
from recstack.training.train import train

LAUNCHER_VARS = (
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "WORLD_SIZE",
    "SLURM_PROCID",
    "SLURM_STEP_NUM_TASKS",
    ranks.RUN_DIR_ENV,
)


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in LAUNCHER_VARS:
        monkeypatch.delenv(key, raising=False)


def test_a_single_process_is_rank_zero_and_picks_its_own_folder() -> None:
    assert ranks.is_rank_zero() and ranks.inherited_run_dir() is None


def test_a_rank_lightning_started_takes_rank_zeros_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with ranks.handed_down(tmp_path / "run"):  # rank 0, around trainer.fit
        child_env = dict(os.environ)
    assert ranks.RUN_DIR_ENV not in os.environ  # restored after the fit
    # What Lightning's launcher gives rank 1: a copy of rank 0's environment, with LOCAL_RANK and WORLD_SIZE.
    monkeypatch.setenv(ranks.RUN_DIR_ENV, child_env[ranks.RUN_DIR_ENV])
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not ranks.is_rank_zero()
    assert ranks.inherited_run_dir() == tmp_path / "run"


@pytest.mark.parametrize(
    "env",
    [
        {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"},
        {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "4"},
        {"NODE_RANK": "1"},
    ],
    ids=["torchrun", "slurm", "second-node"],
)
def test_ranks_started_on_their_own_need_a_named_run_dir(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tiny_split: PreparedSplit, tmp_path: Path
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = compose("train", [f"runs_root={tmp_path / 'runs'}", "progress=false", "model=mf", "experiment=smoke"])
    with pytest.raises(ValueError, match=r"torchrun, SLURM or on several nodes.*run_dir=<folder>"):
        train(cfg, split=tiny_split)
    assert not (tmp_path / "runs").exists()


def test_only_rank_zero_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    assert not ranks.is_rank_zero()
    monkeypatch.setenv("RANK", "0")
    assert ranks.is_rank_zero()
