"""What a data-parallel run says when one of its ranks dies.

Lightning's launcher watches the ranks it started: when rank 1.. exits abnormally, rank 0 logs "Child process with PID
... terminated with code ..." and stops every process. When rank 0 itself dies (killed, out of memory), the others
find out at their next collective: gloo's TCP pair reads end with "Connection reset by peer" (or closed), a
``RuntimeError`` deep in a traceback. :func:`explain_lost_ranks` turns that into one line saying what happened and
what to do, and a distinct exit status, instead of a wall of stack frames (tests/training/test_ddp.py kills each rank).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_LOST_RANK = 3
LOST_RANK_MESSAGE = "lost contact with another rank of this data-parallel run"
_PEER_ERRORS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Connection refused")


def is_lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another process of the group is gone."""
    import torch.distributed as dist

    text = str(error)
    return dist.is_available() and dist.is_initialized() and any(marker in text for marker in _PEER_ERRORS)


@contextmanager
def explain_lost_ranks() -> Iterator[None]:
    """Run a training job; a collective that failed because a peer died exits with :data:`EXIT_LOST_RANK` and one
    line on stderr."""
    try:
        yield
    except RuntimeError as error:
        if not is_lost_peer(error):
            raise
        rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "?"))
        detail = str(error).strip().splitlines()[0][:200]
        print(
            f"recstack-train: rank {rank} {LOST_RANK_MESSAGE} ({detail}). Another rank exited or was killed (out of "
            "memory?): see its log. This run is stopped; resume it with ckpt_path=<run folder>/checkpoints/last.ckpt "
            "run_dir=<run folder>",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(EXIT_LOST_RANK) from None
