"""Train/valid/test splits: pure, vectorised functions over integer-coded interactions.

Unit of splitting: the unique (user, item) pair. Every interaction of a pair goes to the same stage, so no pair of
valid or test is ever in train, even in logs where a user clicks the same item many times (MovieLens has one row
per pair, so there rows and pairs coincide). The pair's time is its FIRST interaction: the moment the item entered
the user's history. All rows are kept (RecBole keeps rows too); the split counts pairs.

Strategies (``split.name``):

* ``random``: per user, pairs in a random order, cut by ``ratios`` with RecBole's counting (``ratio_counts``);
  the same as RecBole's ``RS`` split with ``RO`` ordering: shuffle everything, group by user keeping that order.
* ``chrono``: per user, pairs by time (ties: source row order), the same counts; the earliest go to train.
* ``loo``: leave one out per user: the latest pair is test, the second latest valid, the rest train. Users with
  fewer than 3 pairs keep everything in train (nothing left to learn from otherwise).
* ``time``: one global cut. Pairs that start before ``valid_start`` are train, before ``test_start`` valid, the
  rest test. A cut is an ISO date (``"1998-03-01"``, UTC), Unix seconds, or a quantile in [0, 1] of pair times.
  Users whose first pair is after ``valid_start`` have no training data; their pairs are dropped (stage -1) and
  counted, since a model can neither learn nor be fairly evaluated on them.
* ``new_items``: cold-start items. A seeded ``cold_fraction`` of the items (uniformly, ``round(fraction * n_items)``,
  at least one) is held out of train entirely: every pair of a held-out ("cold") item goes to valid or test, never
  to train. The other ("warm") items' pairs are split per user exactly as ``random`` splits them (``ratios``, RecBole's
  counting over each user's warm pairs). The cold pairs are shuffled together and divided between valid and test in
  the proportion ``ratios[1] : ratios[2]`` (rounded to the nearest pair; valid first). Users whose pairs are all with
  cold items would have no training data: their pairs are dropped (stage -1) and counted, as with ``time``. Warm
  items with very few pairs can also end up without a training pair; evaluation that asks "items no model has seen
  in train" should therefore use the items with no training interaction, a superset of the held-out ones.

Rows come out grouped by user; within a user in time order for ``chrono``/``loo``/``time`` and in item order for
``random``/``new_items`` (their random order only decides the stages).

With ``random``/``chrono`` every user keeps at least one training pair (the train count is always >= 1), with
``loo`` a user only gets valid/test pairs when it has training pairs, and ``time``/``new_items`` drop the users left
without training pairs, so "a user only in valid/test" cannot happen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recstack.data.sorting import group_starts, is_sorted, stable_argsort, stable_lexsort

TRAIN, VALID, TEST, DROPPED = 0, 1, 2, -1
STRATEGIES: tuple[str, ...] = ("random", "chrono", "loo", "time", "new_items")


@dataclass(frozen=True)
class SplitConfig:
    """The ``split`` config node (see ``configs/split/*.yaml``)."""

    name: str = "random"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2020
    valid_start: str | float | None = None
    test_start: str | float | None = None
    cold_fraction: float = 0.1  # new_items: the share of items held out of train

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ValueError(f"split.name={self.name!r} is not one of {list(STRATEGIES)}")
        if len(self.ratios) != 3 or any(r < 0 for r in self.ratios) or self.ratios[0] <= 0:
            raise ValueError(
                f"split.ratios={list(self.ratios)}: give three non-negative numbers [train, valid, test] "
                "with train > 0, e.g. [0.8, 0.1, 0.1]"
            )
        if self.name == "time" and (self.valid_start is None or self.test_start is None):
            raise ValueError("split=time needs split.valid_start and split.test_start (ISO dates or quantiles)")
        if not 0.0 < self.cold_fraction < 1.0:
            raise ValueError(
                f"split.cold_fraction={self.cold_fraction}: the share of items held out of train must be in (0, 1), "
                "e.g. 0.1"
            )
        if self.name == "new_items" and self.ratios[1] + self.ratios[2] <= 0:
            raise ValueError(
                f"split=new_items with split.ratios={list(self.ratios)}: the held-out items' pairs go to valid and "
                "test, so give valid or test a positive ratio, e.g. [0.8, 0.1, 0.1]"
            )

    @classmethod
    def from_mapping(cls, node: Any) -> SplitConfig:
        node = dict(node or {})
        unknown = set(node) - {"name", "ratios", "seed", "valid_start", "test_start", "cold_fraction"}
        if unknown:
            raise ValueError(f"split: unknown key(s) {sorted(unknown)}")
        return cls(
            name=str(node.get("name", "random")),
            ratios=tuple(float(r) for r in node.get("ratios", (0.8, 0.1, 0.1))),
            seed=int(node.get("seed", 2020)),
            valid_start=node.get("valid_start"),
            test_start=node.get("test_start"),
            cold_fraction=float(node.get("cold_fraction", 0.1)),
        )


@dataclass(frozen=True)
class Pairs:
    """Unique (user, item) pairs of a set of rows, sorted by (user, item), with the rows that make them up."""

    user: np.ndarray  # int32, sorted ascending
    n_rows: np.ndarray  # int64: rows per pair
    start: np.ndarray  # int64: pair p owns rows row_order[start[p] : start[p] + n_rows[p]]
    row_order: np.ndarray | None  # int64 input positions sorted by pair; None when the input already was
    first_ts: np.ndarray | None = None  # int64: time of the pair's first row (only computed when asked for)
    first_row: np.ndarray | None = None  # int64: source row of the pair's first row (tie-break for equal times)
    item: np.ndarray | None = None  # the pair's item (only computed when asked for: the new_items split)

    def __len__(self) -> int:
        return len(self.user)

    @property
    def one_row_each(self) -> bool:
        return len(self.n_rows) == 0 or int(self.n_rows.max()) == 1


def group_pairs(
    user: np.ndarray,
    item: np.ndarray,
    timestamp: np.ndarray,
    n_items: int,
    row: np.ndarray | None = None,
    *,
    with_time: bool = True,
    with_item: bool = False,
) -> Pairs:
    """Group rows into unique (user, item) pairs; rows already in pair order are not sorted again.

    ``row``: the source row number of each input row (default: its position), used to break ties in time.
    ``with_time``: also compute each pair's first time and row (the random split needs neither: 17M pairs of
    a 20M-row log save two 8-byte arrays). ``with_item``: also keep each pair's item (the new_items split).
    """
    key = user.astype(np.int64) * n_items + item
    order = None if is_sorted(key) else stable_argsort(key)
    start = group_starts(key if order is None else key[order])
    del key
    first = start if order is None else order[start]
    first_ts = first_row = None
    if with_time:
        ts_sorted = timestamp if order is None else timestamp[order]
        first_ts = np.minimum.reduceat(ts_sorted, start) if len(start) else np.empty(0, np.int64)
        first_row = first if row is None else row[first]
    return Pairs(
        user=user[first],
        n_rows=np.diff(np.append(start, len(user))),
        start=start,
        row_order=order,
        first_ts=first_ts,
        first_row=first_row,
        item=item[first] if with_item else None,
    )


def ratio_counts(n: np.ndarray, ratios: Sequence[float]) -> np.ndarray:
    """Per-group sizes of each part, ``(len(n), len(ratios))`` int64, counted exactly as RecBole 1.2 does.

    Reproduces ``Dataset._calcu_split_ids`` in recbole/data/dataset/dataset.py (RecBole v1.2.x)::

        cnt = [int(ratios[i] * tot) for i in range(len(ratios))]
        cnt[0] = tot - sum(cnt[1:])
        for i in range(1, len(ratios)):          # make sure every part is not empty
            if cnt[0] <= 1: break
            if 0 < ratios[-i] * tot < 1:
                cnt[-i] += 1; cnt[0] -= 1

    with ``ratios`` first normalised by their sum as ``split_by_ratio`` does. The loop runs over parts (three), not
    users: since ``cnt[0]`` only decreases, "not broken yet" equals "cnt[0] > 1 now".
    """
    total = sum(ratios)  # Python float arithmetic in RecBole's order, so the products below round identically
    ratios = [r / total for r in ratios]
    n = np.asarray(n, dtype=np.int64)
    tot = n.astype(np.float64)
    cnt = np.stack([np.trunc(r * tot).astype(np.int64) for r in ratios], axis=1)
    cnt[:, 0] = n - cnt[:, 1:].sum(axis=1)
    for i in range(1, len(ratios)):
        scaled = ratios[-i] * tot
        bump = (cnt[:, 0] > 1) & (scaled > 0) & (scaled < 1)
        cnt[bump, -i] += 1
        cnt[bump, 0] -= 1
    return cnt


def _rank_in_user(ordered_user: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rank of each position within its user's run, pairs per user)`` for positions grouped by user ascending."""
    counts = np.bincount(ordered_user, minlength=n_users).astype(np.int64)
    # runs are in user order, so repeat (sequential) replaces a gather of the per-user starts (random access)
    rank = np.arange(len(ordered_user), dtype=np.int64)
    rank -= np.repeat(np.cumsum(counts) - counts, counts)
    return rank, counts


def _stage_by_ratio(ordered_user: np.ndarray, n_users: int, ratios: Sequence[float]) -> np.ndarray:
    rank, counts = _rank_in_user(ordered_user, n_users)
    cnt = ratio_counts(counts, ratios)
    stage = (rank >= np.repeat(cnt[:, 0], counts)).astype(np.int8)
    stage += rank >= np.repeat(cnt[:, 0] + cnt[:, 1], counts)
    return stage


def _chronological_order(pairs: Pairs) -> np.ndarray:
    """Pairs by (user, time, source row)."""
    if pairs.first_ts is None or pairs.first_row is None:
        raise ValueError("time-based splits need pair times: group_pairs(..., with_time=True)")
    ts = pairs.first_ts - (pairs.first_ts.min() if len(pairs) else 0)
    user_bits = max(int(pairs.user.max()).bit_length(), 1) if len(pairs) else 1
    ts_bits = max(int(ts.max()).bit_length(), 1) if len(pairs) else 1
    if user_bits + ts_bits <= 62:  # (user, time) packed into one key: one sort pass fewer
        ts |= pairs.user.astype(np.int64) << ts_bits
        return stable_lexsort([pairs.first_row, ts])
    return stable_lexsort([pairs.first_row, ts, pairs.user])


def shuffle_within_groups(group: np.ndarray, rng: np.random.Generator, *, rand_bits: int | None = None) -> np.ndarray:
    """A uniformly random order of positions inside each run of a sorted ``group`` array; runs stay in place.

    Each position gets a random key and one packed integer sort orders ``(group, key, offset in group)``; keys that
    tie inside a group are redrawn among the tied positions only, so every within-group order is equally likely.
    The result never leaves a group's run, so it is built without any random-access gather (those dominate at 17M
    pairs). ``rand_bits`` (default: all bits left over) exists to let tests force ties.
    """
    n = len(group)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    counts = np.bincount(group).astype(np.int64)
    offset = np.arange(n, dtype=np.int64)
    offset -= np.repeat(np.cumsum(counts) - counts, counts)
    off_bits = max(int(counts.max() - 1).bit_length(), 1)
    group_bits = max(int(group[-1]).bit_length(), 1)
    bits = 63 - group_bits - off_bits if rand_bits is None else rand_bits
    if rand_bits is None and bits < 16:  # huge ids or groups: a global permutation and a stable regroup instead
        perm = rng.permutation(n)
        return perm[stable_argsort(group[perm])]
    packed = rng.integers(0, 1 << bits, n, dtype=np.int64)
    packed <<= off_bits
    packed |= offset
    packed |= group.astype(np.int64) << (bits + off_bits)
    packed.sort()
    off_mask = (1 << off_bits) - 1
    hi = packed >> off_bits
    tied = np.flatnonzero(hi[1:] == hi[:-1])
    if len(tied):  # (group, key) ties: order each tied run by fresh keys, so every order stays equally likely
        members = np.union1d(tied, tied + 1)
        run = np.cumsum(np.concatenate(([True], hi[members[1:]] != hi[members[:-1]])))
        while True:
            fresh = rng.integers(0, 1 << 62, len(members), dtype=np.int64)
            within = stable_lexsort([fresh, run])
            f, r = fresh[within], run[within]
            if not ((r[1:] == r[:-1]) & (f[1:] == f[:-1])).any():
                break
        offsets = packed[members] & off_mask
        packed[members] = (packed[members] & ~off_mask) | offsets[within]
    del hi
    # within a group, sorted slot i takes the pair at offset (packed & off_mask): same run, so start + offset
    order = np.arange(n, dtype=np.int64)
    order -= offset
    order += packed & off_mask
    return order


def _random_order(pairs: Pairs, seed: int) -> np.ndarray:
    """Each user's pairs in a uniformly random order (RecBole: shuffle everything, then group by user)."""
    return shuffle_within_groups(pairs.user, np.random.default_rng(seed))


def cut_to_seconds(cut: str | float, what: str, quantile: Callable[[float], float]) -> float:
    """A time-split cut in Unix seconds: an ISO date (UTC), a quantile in [0, 1] of pair times (``quantile(q)``
    computes it), or seconds as they are."""
    if isinstance(cut, str):
        try:
            return pd.Timestamp(cut, tz="UTC").timestamp()
        except ValueError as exc:
            raise ValueError(f"split.{what}={cut!r} is not an ISO date such as '1998-03-01'") from exc
    cut = float(cut)
    if 0.0 <= cut <= 1.0:
        return quantile(cut)
    return cut


def time_cuts(cfg: SplitConfig, quantile: Callable[[float], float]) -> tuple[float, float]:
    """``(valid_at, test_at)`` of the time split in Unix seconds; ``quantile(q)`` gives the q-quantile of pair times."""
    valid_at = cut_to_seconds(cfg.valid_start, "valid_start", quantile)
    test_at = cut_to_seconds(cfg.test_start, "test_start", quantile)
    if valid_at > test_at:
        raise ValueError(f"split.valid_start ({cfg.valid_start}) is after split.test_start ({cfg.test_start})")
    return valid_at, test_at


def linear_quantile(n: int, q: float, kth: Callable[[int], int]) -> float:
    """``float(np.quantile(x, q))`` of ``n`` integers known only through ``kth(k)``, the k-th smallest (0-based).

    The same float operations as numpy's default ``linear`` method, so an engine that can only fetch order
    statistics (one query each) gets the same cut, bit for bit.
    """
    if n == 0:
        return 0.0
    virtual = (n - 1) * float(q)
    if virtual >= n - 1:
        return float(kth(n - 1))
    before = math.floor(virtual)
    a, b = kth(before), kth(before + 1)
    t = virtual - before
    diff = b - a
    return float(b - diff * (1 - t)) if t >= 0.5 else float(a + diff * t)


@dataclass(frozen=True)
class SplitResult:
    """Stage per pair (``TRAIN``/``VALID``/``TEST``/``DROPPED``) and the pair order to write them in."""

    pair_stage: np.ndarray  # int8, indexed like Pairs
    pair_order: np.ndarray | None  # int64: pairs grouped by user, within a user by time; None: (user, item) order
    dropped_users: int = 0


def held_out_items(items: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """The sorted cold items of the new_items split: ``round(fraction * n)`` of the distinct ``items`` (at least one,
    at most all but one), drawn uniformly without replacement."""
    present = np.unique(items)
    if len(present) < 2:
        raise ValueError(f"split=new_items needs at least 2 items to hold some out; the data has {len(present)}")
    n_cold = min(max(1, round(fraction * len(present))), len(present) - 1)
    return np.sort(rng.choice(present, size=n_cold, replace=False))


def _new_items_stages(pairs: Pairs, n_users: int, cfg: SplitConfig) -> tuple[np.ndarray, int]:
    """Stages of the new_items split (see the module docstring) and the number of users dropped."""
    if pairs.item is None:
        raise ValueError("split=new_items needs each pair's item: group_pairs(..., with_item=True)")
    rng = np.random.default_rng(cfg.seed)
    cold_items = held_out_items(pairs.item, cfg.cold_fraction, rng)
    is_cold = np.zeros(int(pairs.item.max()) + 1, dtype=bool)
    is_cold[cold_items] = True
    cold_pair = is_cold[pairs.item]
    stage = np.empty(len(pairs), dtype=np.int8)
    # Warm pairs: the random split over each user's warm pairs (still grouped by user, so the same machinery applies).
    warm = np.flatnonzero(~cold_pair)
    warm_user = pairs.user[warm]
    order = shuffle_within_groups(warm_user, rng)
    stage[warm[order]] = _stage_by_ratio(warm_user, n_users, cfg.ratios)
    # Cold pairs: one shuffle over all of them, the first share to valid, the rest to test.
    cold = np.flatnonzero(cold_pair)
    valid_share = cfg.ratios[1] / (cfg.ratios[1] + cfg.ratios[2])
    n_valid = round(valid_share * len(cold))
    shuffled = cold[rng.permutation(len(cold))]
    stage[shuffled[:n_valid]] = VALID
    stage[shuffled[n_valid:]] = TEST
    # A user whose pairs are all cold has nothing to learn from: dropped and counted, as by the time split.
    has_train = np.bincount(pairs.user[warm], minlength=n_users) > 0
    stage[~has_train[pairs.user]] = DROPPED
    dropped_users = int((~has_train & (np.bincount(pairs.user, minlength=n_users) > 0)).sum())
    return stage, dropped_users


def split_pairs(pairs: Pairs, n_users: int, cfg: SplitConfig) -> SplitResult:
    """Assign every pair a stage with the strategy ``cfg.name`` (see the module docstring)."""
    if cfg.name == "random":
        # ranks come from a random order; rows are written in (user, item) order: sequential, cheap to gather
        order = _random_order(pairs, cfg.seed)
        stage = np.empty(len(pairs), dtype=np.int8)
        stage[order] = _stage_by_ratio(pairs.user, n_users, cfg.ratios)  # order stays inside each user's run
        return SplitResult(pair_stage=stage, pair_order=None)
    if cfg.name == "new_items":
        stage, dropped_users = _new_items_stages(pairs, n_users, cfg)
        return SplitResult(pair_stage=stage, pair_order=None, dropped_users=dropped_users)
    order = _chronological_order(pairs)
    ordered_user = pairs.user[order]
    stage = np.empty(len(pairs), dtype=np.int8)
    dropped_users = 0
    if cfg.name == "chrono":
        stage[order] = _stage_by_ratio(ordered_user, n_users, cfg.ratios)
    elif cfg.name == "loo":
        rank, counts = _rank_in_user(ordered_user, n_users)
        size = np.repeat(counts, counts)
        from_end = size - rank  # 1 for the latest pair
        eligible = size >= 3
        ordered_stage = np.full(len(order), TRAIN, dtype=np.int8)
        ordered_stage[eligible & (from_end == 2)] = VALID
        ordered_stage[eligible & (from_end == 1)] = TEST
        stage[order] = ordered_stage
    else:  # time
        times = pairs.first_ts
        valid_at, test_at = time_cuts(cfg, lambda q: float(np.quantile(times, q)) if len(times) else 0.0)
        stage[:] = TRAIN
        stage[pairs.first_ts >= valid_at] = VALID
        stage[pairs.first_ts >= test_at] = TEST
        has_train = np.bincount(pairs.user[stage == TRAIN], minlength=n_users) > 0
        cold = ~has_train[pairs.user]
        stage[cold] = DROPPED
        dropped_users = int((~has_train & (np.bincount(pairs.user, minlength=n_users) > 0)).sum())
    return SplitResult(pair_stage=stage, pair_order=order, dropped_users=dropped_users)


def rows_in_order(pairs: Pairs, pair_order: np.ndarray | None) -> np.ndarray | None:
    """Input row positions, pair by pair in ``pair_order`` (rows of one pair contiguous, in source order).

    ``None`` for ``pair_order`` means the pairs' own (user, item) order; the result is then ``None`` too when the
    input rows already were in that order (no gather needed).
    """
    if pair_order is None:
        return pairs.row_order
    if pairs.one_row_each:
        return pairs.start[pair_order] if pairs.row_order is None else pairs.row_order[pairs.start[pair_order]]
    lengths = pairs.n_rows[pair_order]
    offsets = np.cumsum(lengths) - lengths
    positions = np.repeat(pairs.start[pair_order] - offsets, lengths)
    positions += np.arange(len(positions), dtype=np.int64)
    return positions if pairs.row_order is None else pairs.row_order[positions]


def row_stages(pairs: Pairs, result: SplitResult) -> np.ndarray:
    """Stage of each row, aligned with :func:`rows_in_order` (or with the input rows when that is ``None``)."""
    if result.pair_order is None:
        return result.pair_stage if pairs.one_row_each else np.repeat(result.pair_stage, pairs.n_rows)
    ordered = result.pair_stage[result.pair_order]
    return ordered if pairs.one_row_each else np.repeat(ordered, pairs.n_rows[result.pair_order])
