"""The training signal handler in-process, and train() stopped by a signal before its trainer starts; the subprocess
tests in test_interrupt.py send real signals to a real run inside the trainer."""

from __future__ import annotations

import signal

import pytest

import recstack.config
from recstack.config import compose
from recstack.training.signals import HANDLED, SecondSignalExits, Terminated, interrupt_handling
from recstack.training.train import train


def test_installed_for_the_run_and_the_previous_handlers_restored() -> None:
    before = {sig: signal.getsignal(sig) for sig in HANDLED}
    with interrupt_handling() as handler:
        assert all(signal.getsignal(sig) is handler for sig in HANDLED)
    assert {sig: signal.getsignal(sig) for sig in HANDLED} == before


@pytest.mark.parametrize(("sig", "raised"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)])
def test_the_first_signal_raises_a_keyboard_interrupt(sig: signal.Signals, raised: type[BaseException]) -> None:
    # Lightning's graceful shutdown (interrupted.ckpt, exit 1) catches KeyboardInterrupt, Terminated included.
    with interrupt_handling() as handler, pytest.raises(raised):
        signal.raise_signal(sig)
    assert handler.received == [sig]
    assert issubclass(Terminated, KeyboardInterrupt)


def test_second_signal_handler_is_rearmed_after_lightning_ignores_sigint() -> None:
    with interrupt_handling() as handler:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # what Lightning does before its shutdown
        SecondSignalExits(handler).on_exception(None, None, KeyboardInterrupt())
        assert signal.getsignal(signal.SIGINT) is handler


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_before_the_trainer_exits_with_128_plus_signal_and_one_line(
    sig: signal.Signals, status: int, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # The real train() up to data preparation, where the signal arrives (the CLI is @hydra.main around train(), and
    # Hydra lets SystemExit through: the status is the process's, the message its only output).
    def preparing(*args: object, **kwargs: object) -> None:
        signal.raise_signal(sig)
        raise AssertionError("the signal handler should have raised")

    monkeypatch.setattr(recstack.config, "prepare_from_config", preparing)
    before = {s: signal.getsignal(s) for s in HANDLED}
    with pytest.raises(SystemExit) as exit_info:
        train(compose("train", ["data=synthetic", "model=mf", "progress=false"]))
    assert exit_info.value.code == status
    assert exit_info.value.__context__ is None or exit_info.value.__suppress_context__  # no chained traceback
    assert capfd.readouterr().err.splitlines() == [
        f"recstack-train: {sig.name} received before training started: nothing was saved; exiting (status {status})"
    ]
    assert {s: signal.getsignal(s) for s in HANDLED} == before


def test_the_message_follows_the_stage() -> None:
    with interrupt_handling() as handler:
        assert handler.stage == "before"
        with handler.inside_trainer():
            assert handler.stage == "trainer"
        assert handler.stage == "after" and handler.exit_status() is None
        with pytest.raises(Terminated):
            signal.raise_signal(signal.SIGTERM)
        assert handler.exit_status() == 143
