"""Imputation of missing demographics, one declared strategy per column, every imputed value flagged.

Strategies (:data:`STRATEGIES`):

* ``mode``: the most common known value (ties: the alphabetically first);
* ``median``: for ordered bands such as ``age_band`` (``18-24`` < ``25-34`` < ``65+``, ordered by their leading
  number): the lower median of the known values;
* ``model``: a scikit-learn classifier (multinomial logistic regression) predicting the column from behaviour: the
  user's implicit category preference scores (table ``profile_categories`` of recstack.profiles.build) and the shares
  of their hour-of-day profile. It is validated on a held-out part of the users whose value is known, reported beside
  the majority-class baseline on the same users; a model no better than that baseline is not used (mode instead, and
  the report says so), nor is one with too few known users;
* ``none``: leave missing values missing.

The result replaces nulls of the column and adds ``<column>_imputed`` (bool).

The classifier is fitted on one thread: the problem is small (tens of features, at most ``max_train`` rows), and on a
busy machine the OpenMP threads of scikit-learn's loss wait on each other: at 5M events on 2 loaded cores the fits
took 26 s with two threads and 3 s with one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

STRATEGIES: tuple[str, ...] = ("mode", "median", "model", "none")
_LEADING_NUMBER = re.compile(r"^\s*(\d+)")

__all__ = ["STRATEGIES", "Imputation", "ModelSettings", "check_strategies", "impute"]


@dataclass(frozen=True)
class ModelSettings:
    """The ``model`` strategy's validation: held-out share, the fewest known users to train on, a cap on the training
    rows (a random sample beyond it), the seed of both splits."""

    holdout: float = 0.2
    min_known: int = 30
    max_train: int = 50_000
    seed: int = 0


@dataclass(frozen=True)
class Imputation:
    """What imputing one column did: ``used`` is the strategy applied (``mode`` when a model fell back)."""

    column: str
    strategy: str
    used: str
    missing: int
    imputed: int
    accuracy: float | None = None  # the model's accuracy on held-out known users
    baseline: float | None = None  # the majority class's accuracy on the same users
    validated_on: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != ""}


def check_strategies(strategies: Mapping[str, str], columns: tuple[str, ...]) -> dict[str, str]:
    """``column -> strategy`` checked: a known column and one of :data:`STRATEGIES` each."""
    out = {}
    for column, strategy in strategies.items():
        if column not in columns:
            raise ValueError(f"impute.{column}: not a demographic column; impute one of {list(columns)}")
        if strategy not in STRATEGIES:
            raise ValueError(f"impute.{column}: unknown strategy {strategy!r}; the strategies are {list(STRATEGIES)}")
        out[column] = str(strategy)
    return out


def _mode(values: pa.Array) -> str:
    """The most common value of an array without nulls (ties: the first in sort order)."""
    counts = pc.value_counts(values)
    table = pa.table({"value": counts.field("values"), "n": counts.field("counts")})
    return str(table.sort_by([("n", "descending"), ("value", "ascending")])["value"][0].as_py())


def _median(column: str, values: list[str]) -> str:
    keys = []
    for value in set(values):
        match = _LEADING_NUMBER.match(value)
        if match is None:
            raise ValueError(
                f"impute.{column}: median needs ordered bands that start with a number (like 25-34); "
                f"{column} holds {value!r}. Use mode or model for it"
            )
        keys.append((int(match[1]), value))
    order = {value: rank for rank, (_, value) in enumerate(sorted(keys))}
    ranks = np.sort(np.array([order[v] for v in values]))
    target = int(ranks[(len(ranks) - 1) // 2])
    return next(value for value, rank in order.items() if rank == target)


def behaviour_features(con, profiles: pa.Table) -> np.ndarray:
    """One row per profile: normalised implicit category scores (one column per category) and hour-of-day shares."""
    n = profiles.num_rows
    index = pa.table({"user_id": profiles["user_id"], "_row": pa.array(np.arange(n, dtype=np.int64))})
    con.register("_impute_users", index)
    try:
        long = con.sql(  # profile_categories is by key (recstack.profiles.build): the pseudonyms via user_keys
            """WITH cats AS (SELECT category, (row_number() OVER (ORDER BY category) - 1) AS col
                             FROM (SELECT DISTINCT category FROM profile_categories))
               SELECT u._row, c.col, p.score FROM profile_categories p JOIN user_keys k USING (uid)
               JOIN _impute_users u USING (user_id) JOIN cats c USING (category)"""
        ).fetchnumpy()
    finally:
        con.unregister("_impute_users")
    n_cats = int(long["col"].max()) + 1 if len(long["col"]) else 0
    prefs = np.zeros((n, n_cats), dtype=np.float32)
    prefs[long["_row"], long["col"]] = long["score"]
    hours = np.asarray(profiles["hour_of_day"].combine_chunks().flatten(), dtype=np.float32).reshape(n, 24)
    totals = hours.sum(axis=1, keepdims=True)
    shares = np.divide(hours, totals, out=np.zeros_like(hours), where=totals > 0)
    return np.hstack([prefs, shares])


def _model_fill(
    column: str, features: np.ndarray, known: np.ndarray, labels: np.ndarray, settings: ModelSettings
) -> tuple[np.ndarray | None, dict]:
    """Predictions for the unknown rows, or None with the reason (too few known users, no better than the mode)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits  # one thread: see the module docstring

    classes, counts = np.unique(labels, return_counts=True)
    if len(labels) < settings.min_known or len(classes) < 2:
        return None, {"note": f"{len(labels)} known users in {len(classes)} class(es): too few to train a model"}
    rng = np.random.default_rng(settings.seed)
    x_known = features[known]
    stratify = labels if counts.min() >= 2 else None
    x_train, x_val, y_train, y_val = train_test_split(
        x_known, labels, test_size=settings.holdout, random_state=settings.seed, stratify=stratify
    )
    if len(y_train) > settings.max_train:
        keep = rng.choice(len(y_train), settings.max_train, replace=False)
        x_train, y_train = x_train[keep], y_train[keep]
    model = LogisticRegression(max_iter=500)
    with threadpool_limits(1):  # see the module docstring
        model.fit(x_train, y_train)
    accuracy = float((model.predict(x_val) == y_val).mean())
    train_classes, train_counts = np.unique(y_train, return_counts=True)
    majority = train_classes[np.argmax(train_counts)]
    baseline = float((y_val == majority).mean())
    report = {"accuracy": accuracy, "baseline": baseline, "validated_on": len(y_val)}
    if accuracy <= baseline:
        return None, {**report, "note": "the model is no better than the majority class on held-out users"}
    keep = rng.choice(len(labels), settings.max_train, replace=False) if len(labels) > settings.max_train else None
    with threadpool_limits(1):
        model.fit(x_known if keep is None else x_known[keep], labels if keep is None else labels[keep])
    return model.predict(features[~known]), report


def impute(
    con,
    profiles: pa.Table,
    strategies: Mapping[str, str],
    columns: tuple[str, ...],
    settings: ModelSettings | None = None,
) -> tuple[pa.Table, list[Imputation]]:
    """``profiles`` with each declared column's nulls filled and a ``<column>_imputed`` flag column per demographic
    column (False where nothing was imputed); plus what was done per column."""
    settings = settings or ModelSettings()
    strategies = check_strategies(strategies, columns)
    features = None
    done = []
    for column in columns:
        # Arrow compute, not Python lists: four columns of a few hundred thousand users each
        values = profiles[column].combine_chunks()
        missing_mask = pc.is_null(values).to_numpy(zero_copy_only=False)
        strategy = strategies.get(column, "none")
        n_missing = int(missing_mask.sum())
        known = pc.drop_null(values)
        filled = values
        used, report = strategy, {}
        if strategy == "none" or n_missing == 0:
            fill_mask = np.zeros(len(values), dtype=bool)
        elif len(known) == 0:
            used, report = "none", {"note": f"no user has a known {column}: nothing to impute from"}
            fill_mask = np.zeros(len(values), dtype=bool)
        else:
            fill_mask = missing_mask
            if strategy == "model":
                if features is None:
                    features = behaviour_features(con, profiles)
                labels = known.to_numpy(zero_copy_only=False).astype(object)
                predicted, report = _model_fill(column, features, ~missing_mask, labels, settings)
                if predicted is None:
                    used = "mode"
                    filled = pc.fill_null(values, _mode(known))
                else:
                    filled = pc.replace_with_mask(
                        values, pa.array(missing_mask), pa.array([str(v) for v in predicted], pa.string())
                    )
            elif strategy == "median":
                filled = pc.fill_null(values, _median(column, known.to_pylist()))
            else:
                filled = pc.fill_null(values, _mode(known))
        index = profiles.schema.get_field_index(column)
        profiles = profiles.set_column(index, column, filled.cast(pa.string()))
        flag = f"{column}_imputed"
        flags = pa.array(fill_mask, pa.bool_())
        if flag in profiles.column_names:
            profiles = profiles.set_column(profiles.schema.get_field_index(flag), flag, flags)
        else:
            profiles = profiles.append_column(flag, flags)
        done.append(Imputation(column, strategy, used, n_missing, int(fill_mask.sum()), **report))
    return profiles, done
