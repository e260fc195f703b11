"""The hold-out of a lake window's newest days (a time split cut at dates), and what a run records of its window."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from recstack.config import compose
from recstack.data.prepared import PreparedSplit
from recstack.retrain.outcome import ExitCode, RetrainError
from recstack.retrain.window import data_window, holdout_split

LAKE = ["data=lake", "data.source.now=2026-12-06T12:00:00Z", "data.source.window_days=30"]


def test_the_newest_days_of_the_lake_window_are_the_holdout() -> None:
    split = holdout_split(compose("retrain", LAKE), 7)
    assert split is not None
    # The window is 2026-11-07 .. 2026-12-06 (30 dates, today included): test = its last 7 dates, valid the 7 before.
    assert (split.name, split.test_start, split.valid_start) == ("time", "2026-11-30", "2026-11-23")
    assert holdout_split(compose("retrain", LAKE), 1, valid_days=3).valid_start == "2026-12-03"  # type: ignore[union-attr]
    assert holdout_split(compose("retrain", LAKE), None) is None  # the configured split stays


@pytest.mark.parametrize(
    ("overrides", "days", "message"),
    [
        (["data=ml100k"], 7, "needs the event lake"),
        (LAKE, 15, "leave no training dates"),
        (LAKE, 0, "give days >= 1"),
    ],
)
def test_a_holdout_that_cannot_be_cut_is_a_config_error(overrides: list[str], days: int, message: str) -> None:
    with pytest.raises(RetrainError, match=message) as error:
        holdout_split(compose("retrain", overrides), days)
    assert error.value.code == ExitCode.CONFIG


def test_the_data_window_records_each_stage(tiny_split_writer: Callable[..., Path], tmp_path: Path) -> None:
    window = data_window(PreparedSplit.load(tiny_split_writer(tmp_path / "tiny")))
    assert (window["dataset"], window["split"]) == ("tiny", "tiny0000")
    assert window["test"]["interactions"] == 30 and window["train"]["first"] == "1970-01-12T13:46:40+00:00"
    assert "window" not in window  # only a lake split has dates of its own
