"""The data window a retrain reads, and the hold-out of its newest days.

For the event lake (``data=lake``: a sliding window of ``data.source.window_days`` whole UTC dates), ``holdout.days=N``
makes the hold-out the window's newest N dates and validation the ``valid_days`` dates before them: a global time split
(``split=time``) cut at those dates, so the candidate is validated and judged on days after everything it trained on.
Any other dataset keeps its configured split, whose test stage is the hold-out (ML-100K's default: a per-user random
10%).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recstack.config import config_dir
from recstack.data.prepared import PreparedSplit
from recstack.retrain.outcome import ExitCode, RetrainError

LAKE = "lake"


def holdout_split(cfg: DictConfig, days: int | None, valid_days: int | None = None) -> DictConfig | None:
    """The ``split`` config that makes the hold-out the newest ``days`` dates of a lake window and validation the
    ``valid_days`` (default: ``days``) dates before them: ``configs/split/time.yaml`` cut at those dates. None when
    ``days`` is None (the configured split stays). Refused (``ExitCode.CONFIG``) for a dataset that is not the lake,
    whose dates are unknown until it is read: give it a time split instead (``split=time``)."""
    if days is None:
        return None
    valid_days = days if valid_days is None else valid_days
    if int(days) < 1 or int(valid_days) < 1:
        raise RetrainError(ExitCode.CONFIG, f"holdout.days={days}, holdout.valid_days={valid_days}: give days >= 1")
    if cfg.data.get("name") != LAKE:
        raise RetrainError(
            ExitCode.CONFIG,
            f"holdout.days={days} needs the event lake (data=lake); data={cfg.data.get('name')} keeps its split's "
            "test stage as the hold-out (choose split=time for the newest interactions): set holdout.days=null",
        )
    from recstack.data.sources.lake import resolve_window

    source = cfg.data.source
    window = resolve_window(source.get("window_days"), source.get("start"), source.get("end"), source.get("now"))
    test_start = window.end - timedelta(days=int(days) - 1)
    valid_start = test_start - timedelta(days=int(valid_days))
    if valid_start <= window.start:
        raise RetrainError(
            ExitCode.CONFIG,
            f"holdout.days={days} + valid_days={valid_days} leave no training dates in the window {window} "
            "(data.source.window_days): widen the window or shorten the hold-out",
        )
    split = OmegaConf.load(config_dir() / "split" / "time.yaml")
    split.valid_start = valid_start.isoformat()
    split.test_start = test_start.isoformat()
    return split


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).isoformat(timespec="seconds")


def data_window(split: PreparedSplit) -> dict[str, Any]:
    """What the run read: the lake window's dates when the split came from the lake, and always the first and last
    interaction time of each stage (UTC), with counts."""
    out: dict[str, Any] = {"dataset": split.dataset, "split": split.config_hash}
    snapshot = (split.manifest.get("config") or {}).get("data", {}).get("snapshot") or {}
    if snapshot.get("window"):
        out["window"] = list(snapshot["window"])
    for stage in ("train", "valid", "test"):
        frame = split.frame(stage)  # type: ignore[arg-type]
        out[stage] = {"interactions": len(frame)}
        if len(frame):
            out[stage] |= {"first": _iso(frame["timestamp"].min()), "last": _iso(frame["timestamp"].max())}
    return out
