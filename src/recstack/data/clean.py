"""Cleaning steps, each a pure function on integer-coded interactions: exact duplicates, implicit threshold, k-core.

Every filter that empties the data raises :class:`~recstack.data.schema.DataError` naming itself, so a config that
filters too hard says which knob to turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from recstack.data.idmap import Encoded
from recstack.data.schema import DataError
from recstack.data.sorting import group_starts, is_sorted, stable_argsort, stable_lexsort


@dataclass(frozen=True)
class CleanConfig:
    """The ``data.clean`` config node (see ``configs/data/ml100k.yaml``)."""

    dedup: bool = True
    implicit_threshold: float | None = None
    min_user_interactions: int = 0
    min_item_interactions: int = 0

    @classmethod
    def from_mapping(cls, node: Any) -> CleanConfig:
        node = dict(node or {})
        unknown = set(node) - {"dedup", "implicit_threshold", "min_user_interactions", "min_item_interactions"}
        if unknown:
            raise ValueError(f"data.clean: unknown key(s) {sorted(unknown)}")
        threshold = node.get("implicit_threshold")
        return cls(
            dedup=bool(node.get("dedup", True)),
            implicit_threshold=None if threshold is None else float(threshold),
            min_user_interactions=int(node.get("min_user_interactions") or 0),
            min_item_interactions=int(node.get("min_item_interactions") or 0),
        )


@dataclass(frozen=True)
class CleanReport:
    """Rows in, and rows each step removed (recorded in the manifest)."""

    rows_in: int
    duplicates_removed: int
    below_threshold_removed: int
    k_core_removed: int
    k_core_rounds: int
    rows_out: int


def duplicate_mask(enc: Encoded) -> np.ndarray:
    """True for rows that exactly repeat an earlier row (same user, item, timestamp, value, event type).

    Only rows whose (user, item) pair occurs more than once can be duplicates; those are sorted by (pair,
    timestamp, value, event type), stably, so equal rows sit together with the earliest source row first. Rows
    already in pair order (see :func:`~recstack.data.idmap.index_in_pair_order`) skip the pair sort.
    """
    n = len(enc)
    dup = np.zeros(n, dtype=bool)
    if n < 2:
        return dup
    key = enc.user.astype(np.int64) * len(enc.item_ids) + enc.item
    order = None if is_sorted(key) else stable_argsort(key)
    sorted_key = key if order is None else key[order]
    starts = group_starts(sorted_key)
    lengths = np.diff(np.append(starts, n))
    repeated = lengths > 1
    if not repeated.any():
        return dup
    in_repeated = np.repeat(repeated, lengths)
    candidates = np.flatnonzero(in_repeated) if order is None else order[in_repeated]
    group = np.repeat(np.arange(int(repeated.sum()), dtype=np.int64), lengths[repeated])
    # Most repeats are the same pair at another time: keep only rows sharing (pair, timestamp) with another row.
    ts = enc.timestamp[candidates]
    ts -= ts.min()
    o = stable_lexsort([ts, group])
    same = (group[o][1:] == group[o][:-1]) & (ts[o][1:] == ts[o][:-1])
    if not same.any():
        return dup
    keep = np.zeros(len(o), dtype=bool)
    keep[1:] |= same
    keep[:-1] |= same
    chosen = np.sort(o[keep])  # back to (pair, source) order
    candidates, group, ts = candidates[chosen], group[chosen], ts[chosen]
    keys = [
        enc.event[candidates].astype(np.int64),
        enc.value[candidates].view(np.uint32).astype(np.int64),  # exact: compares the bits, NaN included
        ts,
        group,
    ]
    o = stable_lexsort(keys)
    same = np.ones(len(o) - 1, dtype=bool)
    for k in keys:
        ks = k[o]
        same &= ks[1:] == ks[:-1]
    dup[candidates[o[1:][same]]] = True
    return dup


def threshold_mask(value: np.ndarray, threshold: float | None) -> np.ndarray:
    """True for rows kept as positives: ``value >= threshold``, or every row when the threshold is ``None``."""
    if threshold is None:
        return np.ones(len(value), dtype=bool)
    return np.asarray(value) >= threshold


def k_core_mask(
    user: np.ndarray, item: np.ndarray, min_user: int, min_item: int, *, max_rounds: int = 1000
) -> tuple[np.ndarray, int]:
    """Rows of the largest subset where every user has >= ``min_user`` and every item >= ``min_item`` rows.

    Removing a user can push an item below its minimum and vice versa, so the filters alternate until nothing
    changes (a fixed point). Counts are rows (interactions), as in RecBole's ``user_inter_num_interval``.
    Returns ``(keep mask, rounds)``.
    """
    keep = np.ones(len(user), dtype=bool)
    if min_user <= 1 and min_item <= 1:
        return keep, 0
    n_users = int(user.max()) + 1 if len(user) else 0
    n_items = int(item.max()) + 1 if len(item) else 0
    for rounds in range(1, max_rounds + 1):
        changed = False
        if min_user > 1:
            counts = np.bincount(user[keep], minlength=n_users)
            drop = keep & (counts[user] < min_user)
            if drop.any():
                keep &= ~drop
                changed = True
        if min_item > 1:
            counts = np.bincount(item[keep], minlength=n_items)
            drop = keep & (counts[item] < min_item)
            if drop.any():
                keep &= ~drop
                changed = True
        if not changed:
            return keep, rounds
    raise RuntimeError(f"k-core did not converge in {max_rounds} rounds")


def threshold_error(dataset: str, threshold: float, largest: float) -> DataError:
    """The implicit threshold removed every interaction (``largest``: the largest value there was)."""
    return DataError(
        f"{dataset}: data.clean.implicit_threshold={threshold} removed every interaction "
        f"(largest value {largest}); lower it or set it to null"
    )


def k_core_error(dataset: str, cfg: CleanConfig, rows_before: int) -> DataError:
    """The k-core removed every user and item (``rows_before``: interactions before it)."""
    knobs = [
        f"{k}={v}"
        for k, v in (
            ("min_user_interactions", cfg.min_user_interactions),
            ("min_item_interactions", cfg.min_item_interactions),
        )
        if v > 1
    ]
    return DataError(
        f"{dataset}: k-core {' and '.join(knobs)} removed every user and item "
        f"({rows_before:,} interactions before it); lower data.clean.{knobs[0].split('=')[0]}"
    )


def clean(enc: Encoded, cfg: CleanConfig, *, dataset: str = "data") -> tuple[Encoded, CleanReport]:
    """Apply dedup, the implicit threshold and the k-core, in that order; raise ``DataError`` if one empties it."""
    rows_in = len(enc)
    if rows_in == 0:
        raise DataError(f"{dataset}: the source has no interactions")
    duplicates = 0
    if cfg.dedup:
        dup = duplicate_mask(enc)
        duplicates = int(dup.sum())
        if duplicates:
            enc = enc.take(~dup)
    below = 0
    if cfg.implicit_threshold is not None:
        keep = threshold_mask(enc.value, cfg.implicit_threshold)
        below = int((~keep).sum())
        if not keep.any():
            raise threshold_error(dataset, cfg.implicit_threshold, np.nanmax(enc.value))
        if below:
            enc = enc.take(keep)
    keep, rounds = k_core_mask(enc.user, enc.item, cfg.min_user_interactions, cfg.min_item_interactions)
    k_removed = int((~keep).sum())
    if not keep.any():
        raise k_core_error(dataset, cfg, len(enc))
    if k_removed:
        enc = enc.take(keep)
    report = CleanReport(
        rows_in=rows_in,
        duplicates_removed=duplicates,
        below_threshold_removed=below,
        k_core_removed=k_removed,
        k_core_rounds=rounds,
        rows_out=len(enc),
    )
    return enc, report
