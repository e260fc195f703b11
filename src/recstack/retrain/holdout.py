"""Judging any bundle on the window's hold-out, by id, through the served pipeline.

The hold-out is the test stage of the window's split (for the lake, the newest whole days: :mod:`.window`). Each
bundle, the candidate and the one now serving alike, answers every hold-out user as the service would
(:class:`recstack.serving.pipeline.Pipeline`, re-ranking included when the bundle has a ranker), and the answers are
scored by the evaluator's own :func:`recstack.evaluation.evaluator.evaluate_topk`, so the figures are those of
:func:`recstack.offline.report.evaluate_bundle`. What differs is that two bundles trained on different data index
users and items differently, so everything goes through ids:

* **a user's history** (their interactions of the window before the hold-out: train and valid) is never recommended
  (``exclude_items``), on top of the bundle's own seen-items lists, as the service would exclude them;
* **a user the bundle does not know** (new since it was trained) is answered as the service answers them: by fold-in
  from their recent activity, which here is their newest ``recent_max`` interactions before the hold-out (what the
  online store would hold), else by popularity. Every bundle is judged on the same users, so a bundle that does not
  know recent users pays what the service pays for it; ``cold_users`` counts them;
* **a hold-out item the bundle does not hold** (new since it was trained) stays relevant: the bundle can never
  recommend it and pays for that too; ``unknown_items`` counts such interactions. An item the bundle recommends that
  the window's split does not hold is an empty slot (never relevant).

A bundle that has seen part of the hold-out (it was trained on a window overlapping it) would be judged on what it
memorised, or, since its seen-items lists hold it, never allowed to recommend it: either way the comparison is void.
:func:`build_holdout` therefore keeps only the hold-out interactions the serving bundle has not seen (its seen lists
hold everything it trained on: a deployed bundle is exported with ``seen=all``) and counts the rest in ``dropped``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recstack.bundle.reader import Bundle
from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate_topk
from recstack.serving.online_store import Event
from recstack.serving.pipeline import Pipeline, Query
from recstack.serving.settings import serve_yaml_default


@dataclass(frozen=True)
class Holdout:
    """The interactions both bundles are judged on: ``split``'s test stage, and the users to ask."""

    split: PreparedSplit
    """The window's split, its test stage restricted to what the serving bundle has not seen."""
    users: np.ndarray
    """``user_idx`` of the split to evaluate (every user with a hold-out interaction, or a seeded sample of them)."""
    recent: Mapping[int, tuple[Event, ...]]
    """Per evaluated user, their newest interactions before the hold-out, newest first (the online store's view)."""
    dropped: int
    """Hold-out interactions left out because the serving bundle had already seen them."""

    @property
    def n_interactions(self) -> int:
        return len(self.split.test)


@dataclass(frozen=True)
class HoldoutScore:
    """One bundle's figures on a :class:`Holdout`."""

    metrics: dict[str, float]
    n_users: int
    cold_users: int
    """Evaluated users the bundle has no trained vector for (fold-in from recent activity, else popularity)."""
    unknown_items: int
    """Hold-out interactions whose item the bundle does not hold (it can never recommend them)."""
    stages: dict[str, int]
    """How the answers were produced (``rerank``, ``retrieval``, ``popularity``): answer counts."""


def _seen_by(bundle: Bundle, frame: pd.DataFrame) -> np.ndarray:
    """Per row of ``frame`` (``user_id``, ``item_id``), whether the bundle's seen-items lists hold that pair."""
    rows = frame["user_id"].astype(str).map(bundle.user_index)
    cols = frame["item_id"].astype(str).map(bundle.item_index)
    known = (rows.notna() & cols.notna()).to_numpy()
    out = np.zeros(len(frame), dtype=bool)
    if known.any():
        r = rows[known].to_numpy(np.int64)
        c = cols[known].to_numpy(np.int64)
        out[known] = np.asarray(bundle.seen[r, c]).ravel() > 0
    return out


def _with_test(split: PreparedSplit, test: pd.DataFrame) -> PreparedSplit:
    """``split`` with another test stage (a fresh object: its cached matrices are not the old ones)."""
    return PreparedSplit(
        root=split.root,
        manifest=split.manifest,
        train=split.train,
        valid=split.valid,
        test=test.reset_index(drop=True),
        items=split.items,
        users=split.users,
    )


def _recent_events(split: PreparedSplit, users: np.ndarray, recent_max: int) -> dict[int, tuple[Event, ...]]:
    history = pd.concat([split.train, split.valid], ignore_index=True)
    history = history[history["user_idx"].isin(users)]
    history = history.sort_values(["user_idx", "timestamp"], ascending=[True, False], kind="stable")
    newest = history.groupby("user_idx", sort=False).head(recent_max)
    out: dict[int, tuple[Event, ...]] = {}
    for user, group in newest.groupby("user_idx", sort=False):
        out[int(user)] = tuple(
            Event(str(i), str(t), float(v), int(ts))
            for i, t, v, ts in zip(group["item_id"], group["event_type"], group["value"], group["timestamp"])
        )
    return out


def build_holdout(
    split: PreparedSplit,
    *,
    serving: Bundle | None = None,
    recent_max: int | None = None,
    max_users: int | None = None,
    seed: int = 0,
) -> Holdout:
    """The hold-out of ``split`` (its test stage) without the interactions ``serving`` has already seen (see the
    module docstring), its users (all, or a seeded sample of ``max_users``) and their recent activity
    (``recent_max``: serve.yaml's ``recent_max`` when None)."""
    recent_max = int(serve_yaml_default("recent_max")) if recent_max is None else int(recent_max)
    test = split.test
    dropped = 0
    if serving is not None and len(test):
        seen = _seen_by(serving, test)
        dropped = int(seen.sum())
        test = test.loc[~seen]
    fresh = _with_test(split, test)
    users = np.flatnonzero(np.diff(fresh.matrix("test").indptr) > 0)
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=int(max_users), replace=False))
    return Holdout(fresh, users, _recent_events(fresh, users, recent_max), dropped)


def score_bundle(bundle: Bundle | str | Path, holdout: Holdout, ks: Sequence[int] = (10, 20)) -> HoldoutScore:
    """The bundle's served answers to the hold-out users, scored by id (see the module docstring)."""
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    split = holdout.split
    if not len(holdout.users):
        raise ValueError(f"the hold-out of {split!r} has no user to evaluate")
    pipeline = Pipeline.from_bundle(bundle)
    items = split.items.sort_values("item_idx")
    split_item = {str(i): int(x) for i, x in zip(items["item_id"], items["item_idx"])}
    to_bundle = np.fromiter(
        (pipeline.item_index.get(str(i), -1) for i in items["item_id"]), dtype=np.int64, count=len(items)
    )
    to_split = np.full(pipeline.n_items, -1, dtype=np.int64)
    for item_id, row in pipeline.item_index.items():
        to_split[row] = split_item.get(item_id, -1)
    user_ids = split.users.sort_values("user_idx")["user_id"].astype(str).to_numpy(object)
    history = (split.matrix("train") + split.matrix("valid")).tocsr()
    k = max(int(x) for x in ks)
    answer_k = min(k, pipeline.n_items)
    topk = np.full((len(holdout.users), k), -1, dtype=np.int64)
    stages: dict[str, int] = {}
    cold = 0
    for row, user in enumerate(holdout.users.tolist()):
        done = to_bundle[history.indices[history.indptr[user] : history.indptr[user + 1]]]
        user_id = user_ids[user]
        cold += user_id not in pipeline.user_index
        ranked = pipeline.recommend(
            Query(user_id=user_id, k=answer_k), recent=holdout.recent.get(user, ()), exclude_items=done[done >= 0]
        )
        stages[ranked.stage] = stages.get(ranked.stage, 0) + 1
        topk[row, : len(ranked.items)] = to_split[ranked.items]
    result = evaluate_topk(topk, holdout.users, split, "test", ks)
    unknown = int((to_bundle[split.test["item_idx"].to_numpy(np.int64)] < 0).sum())
    return HoldoutScore(dict(result.metrics), result.n_users_evaluated, int(cold), unknown, stages)
