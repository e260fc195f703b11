"""Which process of a data-parallel run this is before Lightning sets up its process group, and the one run folder
every rank shares.

Lightning's DDP launcher (``trainer=ddp``, ``trainer=ddp_cpu``) starts ranks 1.. when rank 0 reaches ``trainer.fit``,
by running the same command line again with ``LOCAL_RANK`` set; they prepare the split and build the model as rank 0
did. Two things must not be decided again there: the timestamped run folder (a second later it would be another one)
and writing into it (rank 0's job). Rank 0 hands its folder down through :data:`RUN_DIR_ENV`, which the launcher
copies into the ranks' environment. torchrun, SLURM and a launch on several nodes start every rank on its own, from
the same command line: there the run folder has to be named (``run_dir=``), on a filesystem every node reaches.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RUN_DIR_ENV = "RECSTACK_RUN_DIR"


def _env_int(key: str, default: int = 0) -> int:
    return int(os.environ.get(key, default))


def is_rank_zero() -> bool:
    """Whether this process is global rank 0 (or the only process), as its launcher's environment says."""
    if "RANK" in os.environ:  # torchrun
        return _env_int("RANK") == 0
    if "SLURM_PROCID" in os.environ:  # srun
        return _env_int("SLURM_PROCID") == 0
    return _env_int("NODE_RANK") == 0 and _env_int("LOCAL_RANK") == 0  # Lightning's own launcher


def _started_on_its_own() -> bool:
    """Whether this process is one of several started together by an outside launcher (not by rank 0)."""
    return (
        ("RANK" in os.environ and _env_int("WORLD_SIZE", 1) > 1)
        or _env_int("SLURM_STEP_NUM_TASKS", 1) > 1  # srun's tasks (not a batch script's lone process)
        or _env_int("NODE_RANK") > 0
    )


def inherited_run_dir() -> Path | None:
    """Rank 0's run folder in a rank that Lightning's launcher started; None in rank 0 or a single process.

    Raises ``ValueError`` in a rank that torchrun, SLURM or another node started: nothing was handed down there, and
    each rank would pick its own timestamped folder.
    """
    if not is_rank_zero() and RUN_DIR_ENV in os.environ:
        return Path(os.environ[RUN_DIR_ENV])
    if _started_on_its_own():
        raise ValueError(
            "this process is one rank of a run started by torchrun, SLURM or on several nodes, and run_dir is not "
            "set: every rank would pick its own timestamped folder. Pass run_dir=<folder> (the same on every rank, on "
            "a filesystem every node reaches)"
        )
    return None


@contextmanager
def handed_down(run_dir: Path) -> Iterator[None]:
    """Around ``trainer.fit``: the ranks that Lightning's launcher starts there find ``run_dir`` in their environment
    (:func:`inherited_run_dir`). The variable is restored afterwards; nothing in rank 0 reads it."""
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous
