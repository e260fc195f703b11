"""How a retrain run ends: one exit status per failure class, so a scheduler can tell them apart.

A refused gate is not a crash: the serving bundle stays, and the status is 99, the exit code Airflow's
``BashOperator`` reads as "skipped" by default (``skip_on_exit_code``), so a DAG shows it as such rather than as a
failure. Anything not listed (a bug) ends with Python's traceback and status 1.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    """deployed (registered, and reloaded when a service is configured)"""
    CONFIG = 2
    """the retrain settings are invalid (gate tolerance, the serving bundle named does not exist, no admin key or one
    the service refuses, ``ranker`` overrides), or the bundle the service serves cannot be read here"""
    DATA = 3
    """the window's split could not be prepared (the source is missing, empty, unreadable)"""
    TRAIN = 4
    """training the candidate or the refit failed"""
    EVALUATE = 5
    """the candidate or the serving bundle could not be judged on the hold-out"""
    EXPORT = 6
    """the deploy bundle could not be written (including an export refused for erasure reasons)"""
    REGISTER = 7
    """the bundle could not be saved to the BentoML model store, or the run registry could not be written"""
    RELOAD = 8
    """the service did not load the bundle (unreachable, or it answered 4xx/5xx); the bundle is registered"""
    HOLDOUT_NOT_FRESH = 10
    """the serving bundle has already seen every hold-out interaction (nothing left to judge it on); nothing deployed"""
    GATE_REFUSED = 99
    """the candidate is worse than the serving bundle by more than the tolerance; nothing deployed"""


class RetrainError(RuntimeError):
    """A retrain step failed in a known way: ``code`` is the exit status, the message says what to do."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
