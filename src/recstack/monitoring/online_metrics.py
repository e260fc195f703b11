"""Online metrics per UTC day, bundle, experiment arm (and segment).

From the per-impression arrays (recstack.monitoring.per_impression), per group, with ``k`` each of
:attr:`MetricSpec.ks`:

* ``impressions``; ``users`` (distinct users with an id);
* ``ctr@k``: share of impressions with at least one attributed click at a position <= k; ``item_ctr@k``: attributed
  clicks at positions <= k (each position once) / items shown at positions <= k (``clicked@k``, ``clicks@k`` and
  ``shown@k`` are the counts); ``conversion_rate``: share of impressions with at least one attributed conversion
  event (``conversions``);
* ``judged``: impressions whose user interacted with anything within the outcome window after them; only these have
  a relevant set, so ``map@k`` and ``ndcg@k`` are means over them (the others count in CTR, not here);
* per day, bundle and arm only (:func:`catalogue_metrics`, not per segment): ``distinct_items`` served, ``coverage``
  (that / catalogue size, when known) and ``mean_popularity`` of the served items (slot-weighted; an item's
  popularity is its number of outcome events in the loaded window).

Sums are bincounts over a dense group code; the served slots (100M at 10M impressions) are aggregated in DuckDB.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from recstack.monitoring.attribution import sql_strings
from recstack.monitoring.per_impression import Impressions
from recstack.monitoring.spec import MetricSpec

ALL_USERS = "(all users)"
GROUP_KEYS: tuple[str, ...] = ("day", "bundle", "experiment", "arm")
_BITMAP_LIMIT = 200_000_000  # distinct (group, user) pairs counted with a bitmap up to this size, else by sorting


def _distinct_per_group(codes: np.ndarray, users: np.ndarray, n_groups: int) -> np.ndarray:
    """Distinct users (codes >= 0) per group."""
    keep = users >= 0
    codes, users = codes[keep], users[keep]
    if codes.size == 0:
        return np.zeros(n_groups, dtype=np.int64)
    n_users = int(users.max()) + 1
    key = codes.astype(np.int64) * n_users + users
    if n_groups * n_users <= _BITMAP_LIMIT:
        seen = np.zeros(n_groups * n_users, dtype=bool)
        seen[key] = True
        return seen.reshape(n_groups, n_users).sum(axis=1)
    return np.bincount(np.unique(key) // n_users, minlength=n_groups)


def _aggregate(
    codes: np.ndarray,
    idx: np.ndarray,
    n_groups: int,
    imps: Impressions,
    values: dict[str, np.ndarray],
    spec: MetricSpec,
) -> dict[str, np.ndarray]:
    """Per group sums and rates over the impressions ``idx`` (repeats allowed: a user in several segments)."""
    count = np.bincount(codes, minlength=n_groups).astype(np.float64)

    def total(weights: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=weights, minlength=n_groups)

    def rate(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)

    out: dict[str, np.ndarray] = {
        "impressions": count.astype(np.int64),
        "users": _distinct_per_group(codes, imps.user[idx], n_groups),
    }
    masks = imps.click_mask[idx]
    n_items = imps.n_items[idx]
    for k in spec.ks:
        top = masks & np.int64((1 << k) - 1)
        clicked = total((top != 0).astype(np.float64))
        clicks = total(np.bitwise_count(top).astype(np.float64))
        shown = total(np.minimum(k, n_items).astype(np.float64))
        out[f"ctr@{k}"] = rate(clicked, count)
        out[f"item_ctr@{k}"] = rate(clicks, shown)
        out[f"clicked@{k}"] = clicked.astype(np.int64)
        out[f"clicks@{k}"] = clicks.astype(np.int64)
        out[f"shown@{k}"] = shown.astype(np.int64)
    conversions = total(imps.converted[idx].astype(np.float64))
    out["conversion_rate"] = rate(conversions, count)
    out["conversions"] = conversions.astype(np.int64)
    judged = total((imps.n_relevant[idx] > 0).astype(np.float64))
    out["judged"] = judged.astype(np.int64)
    for name, per_impression in values.items():
        out[name] = rate(total(per_impression[idx]), judged)
    return out


def group_metrics(
    imps: Impressions,
    values: dict[str, np.ndarray],
    spec: MetricSpec,
    membership: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (day, bundle, experiment, arm, segment) with impressions; ``segment`` is :data:`ALL_USERS` for the
    whole group, else a segment of ``membership`` (``uid`` hashed as the impressions' are, ``segment``; a user in
    several segments counts in each). ``values``: per-impression ranking values (0 where not judged)."""
    metric_names = list(values)
    if len(imps) == 0:
        return pd.DataFrame(columns=[*GROUP_KEYS, "segment", "impressions"])
    first = int(imps.day.min())
    n_series = len(imps.series_names)
    n_days = int(imps.day.max()) - first + 1
    group = (imps.day - first).astype(np.int64) * n_series + imps.series
    n_groups = n_days * n_series
    frames = [_frame(_aggregate(group, np.arange(len(imps)), n_groups, imps, values, spec), ALL_USERS)]
    if membership is not None and not membership.empty:
        names = sorted(membership["segment"].unique())
        seg_code = pd.Series(np.arange(len(names)), index=names)
        members = pd.DataFrame(
            {"uid": membership["uid"].to_numpy(np.uint64), "seg": seg_code[membership["segment"]].to_numpy()}
        )
        has_id = imps.user >= 0
        served = pd.DataFrame({"uid": imps.uid[has_id], "idx": np.flatnonzero(has_id)})
        pairs = served.merge(members, on="uid", how="inner")
        idx = pairs["idx"].to_numpy()
        codes = group[idx] * len(names) + pairs["seg"].to_numpy()
        sums = _aggregate(codes, idx, n_groups * len(names), imps, values, spec)
        for s, name in enumerate(names):
            frames.append(_frame({key: column[s :: len(names)] for key, column in sums.items()}, name))
    out = []
    for segment, frame in frames:
        frame = frame.assign(group=np.arange(n_groups))
        frame = frame[frame["impressions"] > 0]
        day, series = np.divmod(frame["group"].to_numpy(), n_series)
        frame = frame.drop(columns="group")
        frame.insert(0, "segment", segment)
        names_of = imps.series_names.iloc[series].reset_index(drop=True)
        frame = pd.concat([names_of, frame.reset_index(drop=True)], axis=1)
        frame.insert(0, "day", day + first)
        out.append(frame)
    result = pd.concat(out, ignore_index=True)
    order = [*GROUP_KEYS, "segment"]
    result["_all"] = result["segment"] != ALL_USERS
    result = result.sort_values([*GROUP_KEYS, "_all", "segment"]).drop(columns="_all").reset_index(drop=True)
    leading = [*order, "impressions", "users"]
    return result[leading + [c for c in result.columns if c not in leading and c not in metric_names] + metric_names]


def _frame(sums: dict[str, np.ndarray], segment: str) -> tuple[str, pd.DataFrame]:
    return segment, pd.DataFrame(sums)


def per_user_sums(
    imps: Impressions, values: dict[str, np.ndarray], metric: str, first_day: int, last_day: int
) -> pd.DataFrame:
    """``(experiment, arm, user, <metric>_sum, judged)`` over the judged impressions served on ``[first_day,
    last_day]`` by users with an id: what the bootstrap resamples (a user is one unit, with all their impressions)."""
    keep = (imps.n_relevant > 0) & (imps.user >= 0) & (imps.day >= first_day) & (imps.day <= last_day)
    names = imps.series_names
    arms = names[["experiment", "arm"]].drop_duplicates().reset_index(drop=True)
    arm_of_series = names.merge(arms.reset_index(), on=["experiment", "arm"], how="left")["index"].to_numpy()
    arm = arm_of_series[imps.series[keep]]
    n_users = int(imps.user.max()) + 1 if len(imps) else 0
    key = arm.astype(np.int64) * n_users + imps.user[keep]  # dense: (arms x users) is small
    size = len(arms) * n_users
    judged = np.bincount(key, minlength=size)
    sums = np.bincount(key, weights=values[metric][keep], minlength=size)
    present = np.flatnonzero(judged)
    arm_code, user_code = np.divmod(present, max(n_users, 1))
    frame = arms.iloc[arm_code].reset_index(drop=True)
    frame["user"] = user_code
    frame[f"{metric}_sum"] = sums[present]
    frame["judged"] = judged[present]
    return frame


def served_items(con: duckdb.DuckDBPyConnection, spec: MetricSpec) -> pd.DataFrame:
    """``(day, bundle, experiment, arm, item, served, popularity)``: how often each item (hashed) was shown per series
    and day, with its popularity (outcome events in the loaded window; 0 when none). One pass over the slots."""
    return con.execute(f"""
        WITH served AS (
            SELECT day, gid, item, count(*) AS served
            FROM (SELECT day, gid, unnest(items) AS item FROM imp) GROUP BY ALL
        ),
        pop AS (
            SELECT item, count(*) AS popularity FROM ev
            WHERE event_type IN ({sql_strings(spec.outcome_events)}) GROUP BY item
        )
        SELECT v.day, s.bundle, s.experiment, s.arm, v.item, v.served, coalesce(p.popularity, 0) AS popularity
        FROM served v JOIN series s USING (gid) LEFT JOIN pop p USING (item)
        WHERE v.item IS NOT NULL
    """).df()


def served_scores(con: duckdb.DuckDBPyConnection, max_impressions: int = 1_000_000) -> pd.DataFrame:
    """``(day, bundle, experiment, arm, value, weight)``: the served scores binned on a relative grid (``sign(s) *
    round(1000 * ln(1 + |s|))``: 0.1% steps whatever the scale; monotone, so quantile bins of the keys are quantile
    bins of the scores), non-finite scores left out.

    Beyond ``max_impressions`` impressions a deterministic sample is read (request ids whose hash falls in one of
    ``m`` residues): a distribution's PSI needs thousands of values per day, not every one of 100M."""
    total = con.execute("SELECT count(*) FROM imp").fetchall()[0][0]
    modulus = max(1, -(-int(total) // int(max_impressions)))
    return con.execute(f"""
        SELECT v.day, s.bundle, s.experiment, s.arm, v.value, v.weight
        FROM (
            SELECT day, gid, (sign(x) * round(1000 * ln(1 + abs(x))))::BIGINT AS value, count(*) AS weight
            FROM (SELECT day, gid, unnest(scores) AS x FROM imp WHERE rid % {modulus} = 0)
            WHERE isfinite(x) GROUP BY ALL
        ) v JOIN series s USING (gid)
    """).df()


def catalogue_metrics(served: pd.DataFrame, catalogue_size: int | None) -> pd.DataFrame:
    """Per (day, bundle, experiment, arm): ``distinct_items``, ``coverage`` (NaN without a catalogue size) and
    ``mean_popularity`` of the served slots."""
    keys = list(GROUP_KEYS)
    if served.empty:
        return pd.DataFrame(columns=[*keys, "distinct_items", "coverage", "mean_popularity"])
    weighted = served.assign(weighted=served["served"] * served["popularity"])
    out = weighted.groupby(keys, as_index=False).agg(
        distinct_items=("item", "size"), slots=("served", "sum"), weighted=("weighted", "sum")
    )
    out["coverage"] = out["distinct_items"] / catalogue_size if catalogue_size else np.nan
    out["mean_popularity"] = out["weighted"] / out["slots"]
    return out[[*keys, "distinct_items", "coverage", "mean_popularity"]]
