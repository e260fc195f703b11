"""Stacking hybrid: a LightGBM ``lambdarank`` meta-model re-ranks the union of the parts' top-N candidates.

Candidates of a user: the union of each part's top ``n_candidates`` unseen items. Features of a (user, item)
candidate (:class:`StackingFeatures`), all from the training split and the parts:

* ``score``: each part's per-user z-scored score; ``rank``: the item's rank in each part's list of unseen items;
  ``votes``: in how many parts' top-N it is;
* ``activity``: the item's training popularity (log) and the user's training history length (log);
* ``time``: how many of the item's training interactions fall inside the user's active period (first to last
  training timestamp), and the gap in days between the item's and the user's median training timestamps. Both use
  training interactions only; context of this kind matters on any timestamped log.

The meta-model is fitted on the validation split only: candidates of the validation users, label 1 where the pair
is a validation interaction. Its hyper-parameters (``param_grid`` x ``iterations``) are chosen without the test
split, by ``folds``-fold cross-validation over the validation users (fit on the other folds, NDCG@10 by the
evaluator's definitions on the held-out users), then it is refitted on all of them. Items outside the candidates rank
below them, in the order of the parts' mean z-score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recstack.data.prepared import PreparedSplit
from recstack.hybrids.base import Hybrid, below_candidates, valid_metric
from recstack.hybrids.parts import DEFAULT_RUNS_ROOT, Normalisation, part_scores, seen_mask

FEATURE_GROUPS = ("score", "rank", "votes", "activity", "time")
# Small trees, many examples per leaf: a validation split holds few queries (users) for a ranker; on ML-100K's 943,
# 15- and 31-leaf trees overfit within 100 rounds (cross-validated NDCG@10 below EASE's).
DEFAULT_PARAM_GRID: tuple[Mapping[str, Any], ...] = (
    {"num_leaves": 3, "min_data_in_leaf": 500},
    {"num_leaves": 7, "min_data_in_leaf": 200},
    {"num_leaves": 7, "min_data_in_leaf": 500, "learning_rate": 0.02},
)
DEFAULT_ITERATIONS = (50, 100, 200, 400)
_DAY = 86_400.0


@dataclass(frozen=True)
class TrainingContext:
    """Per-user and per-item statistics of the training split the features read."""

    item_log_pop: np.ndarray  # (n_items,) log1p of training interactions
    user_log_len: np.ndarray  # (n_users,) log1p of training history length
    item_time_keys: np.ndarray  # sorted item_idx * key_base + timestamp offset, one per training interaction
    key_base: int  # above every timestamp offset
    time_origin: int  # the first training timestamp (offsets are from it)
    user_first: np.ndarray  # (n_users,) first / last / median training timestamp
    user_last: np.ndarray
    user_median: np.ndarray
    item_median: np.ndarray  # (n_items,) median training timestamp (the overall median for unseen items)

    @classmethod
    def from_split(cls, split: PreparedSplit) -> TrainingContext:
        train = split.train
        users = train["user_idx"].to_numpy(np.int64)
        items = train["item_idx"].to_numpy(np.int64)
        ts = train["timestamp"].to_numpy(np.int64)
        origin = int(ts.min()) if ts.size else 0
        ts = ts - origin  # offsets keep the keys small
        key_base = 1 << (int(ts.max()) + 1 if ts.size else 1).bit_length()
        history = np.diff(split.matrix("train").indptr)
        overall = float(np.median(ts)) if ts.size else 0.0
        return cls(
            item_log_pop=np.log1p(np.bincount(items, minlength=split.n_items)).astype(np.float32),
            user_log_len=np.log1p(history).astype(np.float32),
            item_time_keys=np.sort(items * key_base + ts),
            key_base=key_base,
            time_origin=origin,
            user_first=_group_stat(users, ts, split.n_users, np.min, overall),
            user_last=_group_stat(users, ts, split.n_users, np.max, overall),
            user_median=_group_stat(users, ts, split.n_users, np.median, overall),
            item_median=_group_stat(items, ts, split.n_items, np.median, overall),
        )

    def in_window(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Training interactions of each ``items[j]`` between ``users[j]``'s first and last training timestamps."""
        base = items.astype(np.int64) * self.key_base
        lo = np.searchsorted(self.item_time_keys, base + self.user_first[users].astype(np.int64), "left")
        hi = np.searchsorted(self.item_time_keys, base + self.user_last[users].astype(np.int64), "right")
        return (hi - lo).astype(np.float32)


def _group_stat(groups: np.ndarray, values: np.ndarray, n: int, fn: Any, default: float) -> np.ndarray:
    out = np.full(n, default, dtype=np.float64)
    if values.size == 0:
        return out
    order = np.argsort(groups, kind="stable")
    g, v = groups[order], values[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    for start, stop in zip(starts, np.r_[starts[1:], len(g)]):
        out[g[start]] = fn(v[start:stop])
    return out


@dataclass(frozen=True)
class Candidates:
    """Candidate pairs of a batch of users, grouped by user (rows ascending), with their feature matrix."""

    rows: np.ndarray  # row of the batch each pair belongs to
    items: np.ndarray
    features: np.ndarray  # (pairs, features) float32
    group_sizes: np.ndarray  # pairs per row, in row order (rows without candidates: 0)


class StackingHybrid(Hybrid):
    """LightGBM lambdarank over the union of the parts' top ``n_candidates`` (see the module docstring).

    ``feature_groups``: the groups of :data:`FEATURE_GROUPS` to use (not ``features``: recstack.training.build gives
    a constructor argument of that name Wide & Deep's feature tables). ``param_grid``: LightGBM parameter sets to try (on
    top of ``learning_rate``); ``iterations``: the boosting rounds to try for each; ``folds``: cross-validation folds
    over the validation users. Other arguments: see :class:`~recstack.hybrids.base.Hybrid`."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        parts: Sequence[str],
        n_candidates: int = 100,
        feature_groups: Sequence[str] = FEATURE_GROUPS,
        param_grid: Sequence[Mapping[str, Any]] = DEFAULT_PARAM_GRID,
        iterations: Sequence[int] = DEFAULT_ITERATIONS,
        learning_rate: float = 0.05,
        folds: int = 3,
        threads: int | None = None,
        runs: Mapping[str, str] | None = None,
        runs_root: str = DEFAULT_RUNS_ROOT,
        train_overrides: Sequence[str] = (),
        normalise: Normalisation = "zscore",
        tune_users: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            n_users,
            n_items,
            parts,
            runs=runs,
            runs_root=runs_root,
            train_overrides=train_overrides,
            normalise=normalise,
            tune_users=tune_users,
            seed=seed,
        )
        unknown = sorted(set(feature_groups) - set(FEATURE_GROUPS))
        if unknown or not feature_groups:
            raise ValueError(f"feature_groups {list(feature_groups)}: choose groups among {list(FEATURE_GROUPS)}")
        if n_candidates < 1:
            raise ValueError(f"n_candidates={n_candidates} must be >= 1 (a catalogue smaller than it is taken whole)")
        if not param_grid or not iterations or min(iterations) < 1:
            raise ValueError("param_grid and iterations must be non-empty (iterations >= 1)")
        if folds < 2:
            raise ValueError(f"folds={folds} must be >= 2 (hyper-parameters are chosen on held-out validation users)")
        self.n_candidates = n_candidates
        self.feature_groups = tuple(g for g in FEATURE_GROUPS if g in feature_groups)
        self.param_grid = tuple(dict(p) for p in param_grid)
        self.iterations = tuple(sorted(int(i) for i in iterations))
        self.learning_rate = learning_rate
        self.folds = folds
        self.threads = threads
        self.context: TrainingContext | None = None
        self.booster: Any = None
        self.feature_names = self._feature_names()

    def _feature_names(self) -> tuple[str, ...]:
        names: list[str] = []
        if "score" in self.feature_groups:
            names += [f"score_{p}" for p in self.part_names]
        if "rank" in self.feature_groups:
            names += [f"rank_{p}" for p in self.part_names]
        if "votes" in self.feature_groups:
            names.append("votes")
        if "activity" in self.feature_groups:
            names += ["item_log_pop", "user_log_len"]
        if "time" in self.feature_groups:
            names += ["item_in_user_window", "median_gap_days"]
        return tuple(names)

    # -- features -------------------------------------------------------------------------------------------------
    def candidates(self, users: np.ndarray) -> Candidates:
        """The candidates of ``users`` and their features (training interactions and parts only)."""
        return self._candidates(users)[0]

    def _candidates(self, users: np.ndarray) -> tuple[Candidates, dict[str, torch.Tensor]]:
        """:meth:`candidates`, and the parts' normalised scores they came from."""
        assert self.context is not None and self.train is not None
        seen = seen_mask(self.train, users)
        scores = part_scores(self.parts, torch.from_numpy(users), seen, self.normalise)
        k = min(self.n_candidates, self.n_items)
        votes = torch.zeros(seen.shape, dtype=torch.int16)
        ranks: dict[str, torch.Tensor] = {}
        for name, s in scores.items():
            order = torch.argsort(s.masked_fill(seen, -torch.inf), dim=1, descending=True, stable=True)
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(self.n_items).expand_as(order).contiguous())
            ranks[name] = rank
            votes += (rank < k).to(torch.int16)
        is_candidate = (votes > 0) & ~seen
        rows_t, items_t = is_candidate.nonzero(as_tuple=True)
        rows, items = rows_t.numpy().astype(np.int64), items_t.numpy().astype(np.int64)
        user_of = users[rows]
        columns: list[np.ndarray] = []
        if "score" in self.feature_groups:
            columns += [scores[p][rows_t, items_t].numpy() for p in self.part_names]
        if "rank" in self.feature_groups:
            columns += [ranks[p][rows_t, items_t].numpy().astype(np.float32) for p in self.part_names]
        if "votes" in self.feature_groups:
            columns.append(votes[rows_t, items_t].numpy().astype(np.float32))
        if "activity" in self.feature_groups:
            columns += [self.context.item_log_pop[items], self.context.user_log_len[user_of]]
        if "time" in self.feature_groups:
            gap = (self.context.item_median[items] - self.context.user_median[user_of]) / _DAY
            columns += [self.context.in_window(user_of, items), gap.astype(np.float32)]
        features = np.column_stack(columns).astype(np.float32) if rows.size else np.zeros((0, len(self.feature_names)))
        return Candidates(rows, items, features, np.bincount(rows, minlength=len(users))), scores

    # -- fitting --------------------------------------------------------------------------------------------------
    def _tune(self, split: PreparedSplit) -> None:
        self.context = TrainingContext.from_split(split)
        users = self.tuning_users(split)
        cands = self.candidates(users)
        labels = _labels(split.matrix("valid"), users[cands.rows], cands.items)
        folds = np.random.default_rng(self.seed).permutation(len(users)) % self.folds  # fold of each user row
        results: list[dict[str, Any]] = []
        for params in self.param_grid:
            per_iteration = np.zeros(len(self.iterations))
            for fold in range(self.folds):
                held = folds == fold
                fit_pairs = ~held[cands.rows]
                booster = self._train(cands, labels, fit_pairs, params, self.iterations[-1])
                for j, n in enumerate(self.iterations):
                    per_iteration[j] += self._held_out_metric(booster, n, cands, fit_pairs, users, held, split)
            for j, n in enumerate(self.iterations):
                results.append({"params": params, "iterations": n, "cv/ndcg@10": per_iteration[j] / self.folds})
        best = max(results, key=lambda r: r["cv/ndcg@10"])  # ties: the first (smaller models come first)
        everything = np.ones(len(cands.rows), dtype=bool)
        self.booster = self._train(cands, labels, everything, best["params"], best["iterations"])
        importance = dict(zip(self.feature_names, self.booster.feature_importance("gain").round(1).tolist()))
        self.tuning = {
            "chosen": best,
            "grid": results,
            "n_tune_users": len(users),
            "n_candidates_per_user": float(len(cands.rows) / max(len(users), 1)),
            "valid_positives_in_candidates": float(labels.sum() / max(split.matrix("valid")[users].nnz, 1)),
            "gain_importance": importance,
        }

    def _lgb_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10],
            "learning_rate": self.learning_rate,
            "feature_pre_filter": False,
            "deterministic": True,
            "force_row_wise": True,
            "seed": self.seed,
            "num_threads": self.threads or max(1, torch.get_num_threads()),
            "verbosity": -1,
            **params,
        }

    def _train(
        self, cands: Candidates, labels: np.ndarray, pairs: np.ndarray, params: Mapping[str, Any], rounds: int
    ) -> Any:
        import lightgbm as lgb

        groups = np.bincount(cands.rows[pairs], minlength=len(cands.group_sizes))
        data = lgb.Dataset(
            cands.features[pairs],
            labels[pairs],
            group=groups[groups > 0],
            feature_name=list(self.feature_names),
            free_raw_data=True,
        )
        return lgb.train(self._lgb_params(params), data, num_boost_round=rounds)

    def _held_out_metric(
        self,
        booster: Any,
        rounds: int,
        cands: Candidates,
        fit_pairs: np.ndarray,
        users: np.ndarray,
        held: np.ndarray,
        split: PreparedSplit,
    ) -> float:
        pairs = ~fit_pairs
        preds = booster.predict(cands.features[pairs], num_iteration=rounds)
        rows = cands.rows[pairs]
        held_rows = np.flatnonzero(held)
        position = np.full(len(users), -1)
        position[held_rows] = np.arange(len(held_rows))
        table = torch.full((len(held_rows), self.n_items), -math.inf)
        table[torch.from_numpy(position[rows]), torch.from_numpy(cands.items[pairs])] = torch.from_numpy(
            preds.astype(np.float32)
        )
        values, items = torch.topk(table, min(10, self.n_items), dim=1)
        items[values == -math.inf] = -1
        return valid_metric(items.numpy(), users[held_rows], split)

    # -- scoring --------------------------------------------------------------------------------------------------
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        if self.booster is None or self.train is None:
            raise RuntimeError("StackingHybrid is not fitted; call fit(split) first")
        idx = users.detach().cpu().numpy()
        cands, scores = self._candidates(idx)
        is_candidate = torch.zeros((len(idx), self.n_items), dtype=torch.bool)
        meta = torch.zeros((len(idx), self.n_items))
        if len(cands.rows):
            r, i = torch.from_numpy(cands.rows), torch.from_numpy(cands.items)
            is_candidate[r, i] = True
            meta[r, i] = torch.from_numpy(self.booster.predict(cands.features).astype(np.float32))
        fallback = torch.stack(list(scores.values())).mean(dim=0)
        return below_candidates(meta, is_candidate, fallback).to(users.device)


def _labels(relevant: sp.csr_matrix, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """1.0 where ``(users[j], items[j])`` is in ``relevant``, else 0.0."""
    return np.asarray(relevant[users, items]).ravel().astype(np.float32)
