"""The training signal handler in-process; the subprocess tests in test_interrupt.py send real signals to a real run."""

from __future__ import annotations

import signal

import pytest

from recstack.training.signals import HANDLED, SecondSignalExits, Terminated, interrupt_handling


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
