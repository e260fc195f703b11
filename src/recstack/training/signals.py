"""Ctrl-C and SIGTERM during training: the first one stops the run with a checkpoint, a second one exits at once.

Lightning (2.6) turns a ``KeyboardInterrupt`` raised inside ``trainer.fit`` / ``trainer.test`` into a graceful
shutdown: it runs the ``on_exception`` hooks (``OnExceptionCheckpoint`` writes ``checkpoints/interrupted.ckpt``),
tears the trainer down and calls ``sys.exit(1)``. Two gaps are closed here:

* Before that shutdown it sets SIGINT to ``SIG_IGN`` ("user could press Ctrl+C many times"), so if the shutdown
  blocks (a checkpoint on a slow or full disk, a DDP barrier waiting for a rank that is gone, a logger that will not
  flush) nothing but SIGKILL ends the process. :class:`SecondSignalExits` re-arms the handler in the first
  ``on_exception`` hook, so a second Ctrl-C exits at once with status ``128 + signal``.
* SIGTERM (what schedulers and ``docker stop`` send) only sets a flag in Lightning's own handler; the loops stop at the
  next batch boundary and the process then exits with status 0, as if the run had finished. Here SIGTERM takes the
  same path as Ctrl-C: ``interrupted.ckpt``, exit status 1, resumable from ``last.ckpt``.

A signal outside the trainer (preparing the data, building the model, fitting a baseline, the final evaluation) is no
business of Lightning's: :func:`recstack.training.train.train` turns it into ``SystemExit(128 + signal)`` (130 for
Ctrl-C, 143 for SIGTERM) after one line saying what was kept, with no traceback.

Messages from the handlers go straight to file descriptor 2: a handler that printed through ``sys.stderr`` while the
interrupted code was itself writing to it would raise "reentrant call" instead.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any, Literal

from lightning.pytorch.callbacks import Callback

HANDLED: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
Stage = Literal["before", "trainer", "after"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as a ``KeyboardInterrupt`` so that Lightning shuts the run down as it does for Ctrl-C."""


class InterruptHandler:
    """The SIGINT / SIGTERM handler: the first signal raises, any later one ends the process without cleanup.

    ``stage`` says what a first signal interrupts, and so what it keeps: ``"before"`` the trainer (nothing saved),
    inside the ``"trainer"`` (Lightning's shutdown writes ``interrupted.ckpt``) or ``"after"`` it (checkpoints kept,
    no ``metrics.json``). :meth:`inside_trainer` moves it along.
    """

    def __init__(self) -> None:
        self.received: list[signal.Signals] = []
        self.stage: Stage = "before"

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        self.received.append(sig)
        if len(self.received) > 1:
            _say(f"{sig.name} again: exiting now, without waiting for the shutdown (status {128 + signum})")
            os._exit(128 + signum)
        if self.stage == "trainer":
            _say(
                f"{sig.name} received: stopping with a checkpoint first (checkpoints/interrupted.ckpt; resume from "
                "checkpoints/last.ckpt). Send it again to exit at once."
            )
        elif self.stage == "before":
            _say(f"{sig.name} received before training started: nothing was saved; exiting (status {128 + signum})")
        else:
            _say(
                f"{sig.name} received after training: its checkpoints are kept, metrics.json was not written; "
                f"exiting (status {128 + signum})"
            )
        raise Terminated(sig.name) if sig == signal.SIGTERM else KeyboardInterrupt

    def arm(self) -> None:
        """(Re)install this handler for SIGINT and SIGTERM; main thread only (Python's rule for signal handlers)."""
        for sig in HANDLED:
            signal.signal(sig, self)

    @contextmanager
    def inside_trainer(self) -> Iterator[None]:
        """Around ``trainer.fit`` / ``trainer.test``: a signal there is Lightning's to shut down (status 1)."""
        self.stage = "trainer"
        try:
            yield
        finally:
            self.stage = "after"

    def exit_status(self) -> int | None:
        """``128 + signal`` of the first signal received, or None if none was."""
        return 128 + self.received[0] if self.received else None


class SecondSignalExits(Callback):
    """Re-arms :class:`InterruptHandler` once Lightning has started its shutdown (and set SIGINT to ``SIG_IGN``).

    Put it first in the trainer's callbacks: ``on_exception`` hooks run in list order (Lightning moves checkpoint
    callbacks, ``OnExceptionCheckpoint`` included, to the end), so the handler is armed before anything slow runs.
    """

    def __init__(self, handler: InterruptHandler) -> None:
        self.handler = handler

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if threading.current_thread() is threading.main_thread():
            self.handler.arm()


@contextmanager
def interrupt_handling() -> Iterator[InterruptHandler]:
    """Install the handler for the duration of a run and restore the previous handlers afterwards.

    Outside the main thread (where Python allows no signal handlers) nothing is installed and the handler is inert.
    """
    handler = InterruptHandler()
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    previous = {sig: signal.getsignal(sig) for sig in HANDLED}
    handler.arm()
    try:
        yield handler
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def _say(message: str) -> None:
    with suppress(OSError):  # stderr closed: the exit status still tells
        os.write(2, f"recstack-train: {message}\n".encode())
