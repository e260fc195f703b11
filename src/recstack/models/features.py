"""Feature tables of the Wide & Deep model, built once from a prepared split (and the item text vectors).

Everything is index-addressable (row ``u`` for user ``u``, row ``n_users`` for an unknown user, row ``i`` for item
``i``) so the model holds them as buffers and looks features up inside ``forward``; an exported graph then needs only
ids and context.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recstack.bundle.contract import N_DAYS, N_HOURS  # the ranker's context ranges live there
from recstack.data.prepared import PreparedSplit

UNKNOWN = 0  # code of a missing, rare or unseen categorical value in every field
# A string column with more distinct values than this (zip codes) is cut to its first character (the region).
MAX_FIELD_VOCAB = 64


def context_from_timestamps(timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hour of day 0-23, day of week 0 = Monday)`` of Unix-second timestamps, in UTC, as int64 arrays."""
    ts = np.asarray(timestamps, dtype=np.int64)
    hours = (ts // 3600) % N_HOURS
    dows = (ts // 86400 + 3) % N_DAYS  # 1970-01-01 was a Thursday
    return hours, dows


def _field_codes(values: pd.Series, min_count: int) -> tuple[np.ndarray, list[str]]:
    """Integer codes (0 = unknown/rare) and the vocabulary (index = code - 1) of one demographic column."""
    raw = values.astype("string")
    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().all() and raw.nunique() > 10:  # e.g. age: decades are what carries signal
        raw = (numeric // 10 * 10).astype("Int64").astype("string")
    elif raw.nunique() > MAX_FIELD_VOCAB:
        raw = raw.str[:1]
    counts = Counter(v for v in raw.dropna().tolist())
    vocab = sorted(v for v, c in counts.items() if c >= min_count)
    index = {v: k + 1 for k, v in enumerate(vocab)}
    codes = np.array([index.get(v, UNKNOWN) if v is not pd.NA else UNKNOWN for v in raw.tolist()], dtype=np.int64)
    return codes, vocab


def _mode_per_user(users: np.ndarray, values: np.ndarray, n_users: int, n_values: int) -> np.ndarray:
    counts = np.zeros((n_users, n_values), dtype=np.int64)
    np.add.at(counts, (users, values), 1)
    overall = int(np.bincount(values, minlength=n_values).argmax()) if len(values) else 0
    modes = counts.argmax(axis=1)
    modes[counts.sum(axis=1) == 0] = overall
    return np.append(modes, overall).astype(np.int64)  # last row: the unknown user


@dataclass(frozen=True)
class WideDeepFeatures:
    """Per-user and per-item feature tables (numpy; the model turns them into buffers).

    ``user_codes``: ``(n_users + 1, F)`` int64 codes of the demographic fields (last row: unknown user, all 0).
    ``item_categories``: ``(n_items, C)`` float32 multi-hot. ``item_years``: ``(n_items,)`` decade codes (0 = unknown).
    ``item_text``: ``(n_items, D)`` float32 text vectors. ``default_hours`` / ``default_dows``: ``(n_users + 1,)`` each
    user's most frequent training hour / weekday (the context ``score_all`` uses); unknown user: the overall mode.
    """

    user_fields: tuple[str, ...]
    user_vocab_sizes: tuple[int, ...]
    user_codes: np.ndarray
    category_names: tuple[str, ...]
    item_categories: np.ndarray
    n_year_codes: int
    item_years: np.ndarray
    item_text: np.ndarray
    default_hours: np.ndarray
    default_dows: np.ndarray

    @property
    def n_users(self) -> int:
        return int(self.user_codes.shape[0] - 1)

    @property
    def n_items(self) -> int:
        return int(self.item_categories.shape[0])

    @classmethod
    def from_split(cls, split: PreparedSplit, item_text: np.ndarray, min_count: int = 5) -> WideDeepFeatures:
        n_users, n_items = split.n_users, split.n_items
        if item_text.shape[0] != n_items:
            raise ValueError(
                f"item_text has {item_text.shape[0]} rows, the split has {n_items} items; "
                "encode split.items with recstack.models.text_encoder.encode_items"
            )
        users = split.users.sort_values("user_idx")
        fields = [c for c in users.columns if c not in ("user_idx", "user_id")]
        codes, sizes = [], []
        for f in fields:
            c, vocab = _field_codes(users[f], min_count)
            codes.append(c)
            sizes.append(len(vocab) + 1)
        user_codes = np.zeros((n_users + 1, max(len(fields), 1)), dtype=np.int64)
        if fields:
            user_codes[users["user_idx"].to_numpy(np.int64)] = np.stack(codes, axis=1)
        else:  # no demographics: one field whose only value is "unknown", so the model's shapes stay the same
            fields, sizes = ["none"], [1]

        items = split.items.sort_values("item_idx")
        item_rows = items["item_idx"].to_numpy(np.int64)
        cats = items["categories"].tolist() if "categories" in items else [[] for _ in item_rows]
        names = sorted({str(c) for cs in cats if cs is not None for c in cs})
        cat_index = {c: k for k, c in enumerate(names)}
        multi_hot = np.zeros((n_items, max(len(names), 1)), dtype=np.float32)
        for row, cs in zip(item_rows, cats):
            for c in cs if cs is not None else []:
                multi_hot[row, cat_index[str(c)]] = 1.0

        years = np.zeros(n_items, dtype=np.int64)
        year_col = (
            pd.to_numeric(items["year"], errors="coerce") if "year" in items else pd.Series(np.nan, index=items.index)
        )
        decades = (year_col // 10).to_numpy(dtype=float)
        known = ~np.isnan(decades)
        first = int(decades[known].min()) if known.any() else 0
        years[item_rows[known]] = decades[known].astype(np.int64) - first + 1
        n_year_codes = int(years.max()) + 1

        hours, dows = context_from_timestamps(split.train["timestamp"].to_numpy())
        train_users = split.train["user_idx"].to_numpy(np.int64)
        return cls(
            user_fields=tuple(fields),
            user_vocab_sizes=tuple(sizes),
            user_codes=user_codes,
            category_names=tuple(names),
            item_categories=multi_hot,
            n_year_codes=n_year_codes,
            item_years=years,
            item_text=np.asarray(item_text, dtype=np.float32),
            default_hours=_mode_per_user(train_users, hours, n_users, N_HOURS),
            default_dows=_mode_per_user(train_users, dows, n_users, N_DAYS),
        )
