"""Data quality in the profiles' pass (``recstack-profiles check``, also run by ``build``), over the tables the build
loaded and the profiles it computed:

* imputation of missing demographics, one strategy per column, each imputed value flagged (quality_impute);
* anomaly flags for review: bot-like rates, users far outside their own baseline, site-wide drops and spikes per
  event type and hour (quality_anomalies);
* duplicate accounts sharing an e-mail hash, merged through the lake's aliases table (quality_duplicates): the merge
  applies from the next read of the lake, so the next build holds one profile for them.

:func:`run_checks` returns the imputed profiles, the anomalies and a :class:`QualityReport` (``quality.json``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from recstack.profiles.build import DEMOGRAPHICS
from recstack.profiles.quality_anomalies import AnomalySpec, find_anomalies
from recstack.profiles.quality_duplicates import find_duplicates, write_merges
from recstack.profiles.quality_impute import STRATEGIES, Imputation, ModelSettings, check_strategies, impute

__all__ = ["STRATEGIES", "QualityReport", "QualitySpec", "run_checks"]

DEFAULT_STRATEGIES: Mapping[str, str] = {"age_band": "model", "gender": "mode", "country": "mode", "language": "mode"}


@dataclass(frozen=True)
class QualitySpec:
    """What the checks do (``configs/profiles.yaml``: impute, model, anomalies, merge_duplicates)."""

    impute: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_STRATEGIES))
    model: ModelSettings = field(default_factory=ModelSettings)
    anomalies: AnomalySpec = field(default_factory=AnomalySpec)
    merge_duplicates: bool = True

    def __post_init__(self) -> None:
        check_strategies(self.impute, DEMOGRAPHICS)  # fail before any work


@dataclass(frozen=True)
class QualityReport:
    as_of_ms: int
    users: int
    imputations: tuple[Imputation, ...]
    anomalies: Mapping[str, int]
    duplicates: int
    merged: int
    aliases_file: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "as_of_ms": self.as_of_ms,
            "users": self.users,
            "imputation": {i.column: i.as_dict() for i in self.imputations},
            "anomalies": dict(self.anomalies),
            "duplicates": {
                "found": self.duplicates,
                "merged": self.merged,
                "aliases_file": self.aliases_file,
                "applies": "from the next build (the lake's aliases table)",
            },
        }


def run_checks(
    con,
    profiles: pa.Table,
    as_of_ms: int,
    lake_root: str | Path,
    spec: QualitySpec | None = None,
) -> tuple[pa.Table, pa.Table, QualityReport]:
    """``(imputed profiles, anomalies, report)`` over tables loaded and profiles built by recstack.profiles.build."""
    spec = spec or QualitySpec()
    imputed, imputations = impute(con, profiles, spec.impute, DEMOGRAPHICS, spec.model)
    anomalies = find_anomalies(con, as_of_ms, spec.anomalies)
    pairs = find_duplicates(con, lake_root, as_of_ms, profiles.select(["user_id", "first_seen_ms"]))
    path = write_merges(lake_root, pairs, as_of_ms) if spec.merge_duplicates else None
    kinds = Counter(anomalies["kind"].to_pylist())
    report = QualityReport(
        as_of_ms=int(as_of_ms),
        users=profiles.num_rows,
        imputations=tuple(imputations),
        anomalies={kind: kinds.get(kind, 0) for kind in ("bot_rate", "user_activity", "site_rate")},
        duplicates=pairs.num_rows,
        merged=pairs.num_rows if path is not None else 0,
        aliases_file=str(path) if path is not None else None,
    )
    return imputed, anomalies, report
