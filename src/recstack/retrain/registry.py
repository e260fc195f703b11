"""The run registry: every retrain run's config, data window, metrics, gate decision and step times, in MLflow's
tracking store (by default its embedded SQLite store under ``outputs/mlruns``; any MLflow tracking URI works, a
tracking server included), with each run's files (config, decision, steps) as its artifacts.

One MLflow run per retrain run, in one experiment. The candidate's and the refit's training curves (and the
re-ranker's) land in the same run through Lightning's ``MLFlowLogger`` (:func:`training_logger`), their metric names
prefixed ``candidate-`` and ``refit-`` (``ranker-``, ``ranker-refit-``). MLflow allows letters, digits and ``_ - . / space`` in names, so ``ndcg@10`` is logged as ``ndcg_at_10``
(:func:`metric_key`). Tags a later run reads back: ``decision`` (``deployed``, ``refused``, ``not_fresh``,
``failed``), ``bundle`` (the deployed folder) and ``model_tag`` (its BentoML tag).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)
DEFAULT_EXPERIMENT = "recstack-retrain"
DEPLOYED = "deployed"
_BAD = re.compile(r"[^\w\-. /]")


def metric_key(name: str) -> str:
    """``ndcg@10`` -> ``ndcg_at_10``; other characters MLflow refuses become ``_``."""
    return _BAD.sub("_", name.replace("@", "_at_"))


def tracking_uri_for(folder: str | Path) -> str:
    """The embedded SQLite store in ``folder`` (created)."""
    path = Path(folder).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``a/b/c`` keys (lists and other leaves kept as they are)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat(value, f"{name}/"))
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class Deployed:
    """The last run that deployed a bundle: where the bundle is and how the model store names it."""

    run_id: str
    bundle: str
    model_tag: str | None


class RunRegistry:
    """An MLflow experiment holding the retrain runs (``tracking_uri``; ``artifact_root``: where a new experiment
    keeps its runs' files, by default beside a local store)."""

    def __init__(self, tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT, artifact_root: str | None = None):
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            if artifact_root is None and tracking_uri.startswith("sqlite:///"):
                artifact_root = Path(tracking_uri.removeprefix("sqlite:///")).parent.joinpath("artifacts").as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_root)
        else:
            self.experiment_id = found.experiment_id
        self.experiment = experiment

    def start(self, name: str, tags: Mapping[str, str] | None = None) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags or {}))
        return str(run.info.run_id)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(metric_key(k), str(v)[:6000]) for k, v in flat(params).items()]
        for start in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any]) -> None:
        """Numeric leaves of ``metrics`` (nested mappings become ``a/b`` names); others are skipped."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(metric_key(k), float(v), now, 0)
            for k, v in flat(metrics).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start : start + 1000])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            if value is not None:
                self.client.set_tag(run_id, key, str(value))

    def log_dict(self, run_id: str, value: Any, name: str) -> None:
        self.client.log_text(run_id, json.dumps(value, indent=2, default=str) + "\n", name)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def last_deployed(self) -> Deployed | None:
        """The newest run tagged ``decision=deployed``, or None."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.decision = '{DEPLOYED}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            return None
        tags = runs[0].data.tags
        return Deployed(runs[0].info.run_id, tags.get("bundle", ""), tags.get("model_tag"))

    def history(self) -> pd.DataFrame:
        """Every run of the experiment, oldest first: one row per run with its start time and status, its tags
        (``tag:<name>``), parameters (``param:<name>``) and metrics (by their MLflow names)."""
        runs = self.client.search_runs([self.experiment_id], order_by=["attributes.start_time ASC"], max_results=50_000)
        rows = []
        for run in runs:
            row: dict[str, Any] = {
                "run_id": run.info.run_id,
                "name": run.info.run_name,
                "start": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
                "status": run.info.status,
            }
            row |= {f"tag:{k}": v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
            row |= {f"param:{k}": v for k, v in run.data.params.items()}
            row |= dict(run.data.metrics)
            rows.append(row)
        return pd.DataFrame(rows)


def training_logger(registry: RunRegistry, run_id: str, prefix: str) -> dict[str, Any]:
    """A ``configs/logger`` entry for Lightning's ``MLFlowLogger`` writing into ``run_id`` with metric names prefixed
    ``<prefix>-``; added to the training config's ``logger`` group next to the configured ones."""
    return {
        "_target_": "lightning.pytorch.loggers.MLFlowLogger",
        "tracking_uri": registry.tracking_uri,
        "run_id": run_id,
        "prefix": prefix,
    }
