"""``recstack-train`` with every file this process writes, moves or deletes under one folder recorded (test_ddp.py).

    RECSTACK_TEST_WATCH=<folder> RECSTACK_TEST_WRITES=<log folder> python tests/training/audited_train.py <overrides>

Lightning's DDP launcher starts the other ranks by running this same script again (with ``LOCAL_RANK`` set), so every
rank records its own writes, through a Python audit hook (``sys.addaudithook``: ``open`` for writing, rename, remove,
mkdir, ...), one line per write in ``<log folder>/rank<LOCAL_RANK>-<pid>.txt``. Nothing is replaced: the run is the
real entry point, only observed.
"""

from __future__ import annotations

import os
import sys
from contextlib import suppress
from typing import Any

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# Audit events that change the filesystem; their first argument is the path (rename: the source, then the target).
CHANGING = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "shutil.copyfile", "os.truncate"}


def _paths(event: str, args: tuple[Any, ...]) -> list[str]:
    if event == "open":
        path, mode, flags = args[0], args[1], args[2]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & WRITE_FLAGS
        )
        candidates = [path] if writing else []
    elif event in CHANGING:
        candidates = list(args[:2]) if event in {"os.rename", "os.symlink", "os.link", "shutil.copyfile"} else [args[0]]
    else:
        return []
    return [os.path.abspath(os.fsdecode(p)) for p in candidates if isinstance(p, str | bytes | os.PathLike)]


def install(watched: str, log_dir: str) -> None:
    """Record this process's writes under ``watched`` to a file in ``log_dir`` (opened now, before the hook)."""
    watched = os.path.abspath(watched)
    os.makedirs(log_dir, exist_ok=True)
    rank = os.environ.get("LOCAL_RANK", "0")
    fd = os.open(os.path.join(log_dir, f"rank{rank}-{os.getpid()}.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        with suppress(Exception):  # an audit hook that raises would break the very call it observes
            for path in _paths(event, args):
                if path == watched or path.startswith(watched + os.sep):
                    os.write(fd, f"{event}\t{path}\n".encode())

    sys.addaudithook(hook)


if __name__ == "__main__":
    install(os.environ["RECSTACK_TEST_WATCH"], os.environ["RECSTACK_TEST_WRITES"])
    from recstack.cli.train import main

    main()
