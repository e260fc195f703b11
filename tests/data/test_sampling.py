"""Negative sampler: never a positive, the right distribution, deterministic per seed, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from recstack.data.sampling import NegativeSampler


def positives(n_users: int = 50, n_items: int = 60, density: float = 0.3, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < density
    dense[0] = True
    dense[0, [3, 40]] = False  # user 0 may only get items 3 and 40
    dense[1] = False  # user 1 has no positives
    dense[2, : n_items - 1] = True  # user 2 only item n_items - 1
    return sp.csr_matrix(dense.astype(np.float32))


def popularity(n_items: int = 60) -> np.ndarray:
    pop = np.arange(n_items, dtype=np.float64) % 7 + 1
    pop[5] = 0  # never drawn
    return pop


@pytest.mark.parametrize("strategy", ["uniform", "popularity"])
def test_never_returns_a_positive(strategy: str) -> None:
    m = positives()
    sampler = NegativeSampler(m, strategy, popularity=popularity(), alpha=0.75)
    rng = np.random.default_rng(1)
    users = rng.integers(0, m.shape[0], 20_000)
    neg = sampler.sample(users, 5, rng)
    assert neg.shape == (20_000, 5) and neg.dtype == np.int64
    assert ((neg >= 0) & (neg < m.shape[1])).all()
    dense = m.toarray().astype(bool)
    assert not dense[users[:, None], neg].any()
    assert set(np.unique(neg[users == 0])) <= {3, 40}
    assert set(np.unique(neg[users == 2])) == {m.shape[1] - 1}
    if strategy == "popularity":
        assert not (neg == 5).any()


def test_uniform_over_non_positives() -> None:
    m = positives()
    sampler = NegativeSampler(m)
    rng = np.random.default_rng(2)
    for user in (1, 7):
        allowed = np.flatnonzero(m.toarray()[user] == 0)
        draws = sampler.sample(np.full(30_000, user), 1, rng).ravel()
        counts = np.bincount(draws, minlength=m.shape[1])
        assert counts[np.setdiff1d(np.arange(m.shape[1]), allowed)].sum() == 0
        assert stats.chisquare(counts[allowed]).pvalue > 1e-3


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_popularity_follows_count_to_the_alpha(alpha: float) -> None:
    m = positives()
    pop = popularity()
    sampler = NegativeSampler(m, "popularity", popularity=pop, alpha=alpha)
    rng = np.random.default_rng(3)
    user = 7
    allowed = np.flatnonzero((m.toarray()[user] == 0) & (pop > 0))
    draws = sampler.sample(np.full(40_000, user), 1, rng).ravel()
    counts = np.bincount(draws, minlength=m.shape[1])[allowed]
    expected = pop[allowed] ** alpha
    expected = expected / expected.sum() * counts.sum()
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    assert np.corrcoef(counts, pop[allowed])[0, 1] > 0.9


def test_exact_fallback_for_users_holding_the_popular_mass() -> None:
    # user 0 owns all popular items: rejection almost always fails, the exact path must still get the law right
    n_items = 100
    pop = np.ones(n_items)
    pop[:90] = 1000.0
    m = sp.csr_matrix((np.ones(90), (np.zeros(90, dtype=int), np.arange(90))), shape=(2, n_items))
    sampler = NegativeSampler(m, "popularity", popularity=pop)
    draws = sampler.sample(np.zeros(20_000, dtype=np.int64), 1, np.random.default_rng(4)).ravel()
    assert draws.min() >= 90
    assert stats.chisquare(np.bincount(draws - 90, minlength=10)).pvalue > 1e-3


@pytest.mark.parametrize("strategy", ["uniform", "popularity"])
def test_deterministic_per_seed(strategy: str) -> None:
    sampler = NegativeSampler(positives(), strategy, popularity=popularity())
    users = np.arange(50).repeat(10)
    a = sampler.sample(users, 3, np.random.default_rng(9))
    b = sampler.sample(users, 3, np.random.default_rng(9))
    c = sampler.sample(users, 3, np.random.default_rng(10))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_user_with_every_item_positive_is_a_clear_error() -> None:
    m = sp.csr_matrix(np.ones((2, 4)))
    sampler = NegativeSampler(m)
    with pytest.raises(ValueError, match="user 1 has every item as a positive"):
        sampler.sample(np.array([1]), 2, np.random.default_rng(0))
    pop = np.array([1.0, 1.0, 0.0, 0.0])
    m = sp.csr_matrix(np.array([[1.0, 1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="non-zero popularity"):
        NegativeSampler(m, "popularity", popularity=pop).sample(np.array([0]), 1, np.random.default_rng(0))


def test_bad_arguments() -> None:
    m = positives()
    with pytest.raises(ValueError, match="needs popularity"):
        NegativeSampler(m, "popularity")
    with pytest.raises(ValueError, match="strategy"):
        NegativeSampler(m, "hard")  # type: ignore[arg-type]
    with pytest.raises(IndexError, match="user indices"):
        NegativeSampler(m).sample(np.array([50]), 1, np.random.default_rng(0))
    assert NegativeSampler(m).sample(np.array([], dtype=np.int64), 4, np.random.default_rng(0)).shape == (0, 4)


def test_epoch_triples(tiny_split) -> None:
    train = tiny_split.train
    sampler = NegativeSampler(tiny_split.matrix("train"))
    users, pos, neg = sampler.epoch_triples(
        train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), 4, np.random.default_rng(0)
    )
    assert len(users) == len(pos) == len(train) and neg.shape == (len(train), 4)
    assert sorted(zip(users, pos)) == sorted(zip(train["user_idx"], train["item_idx"]))
    assert not tiny_split.matrix("train").toarray().astype(bool)[users[:, None], neg].any()


def test_cache_friendly_searchsorted_equals_numpy() -> None:
    from recstack.data.sampling import _searchsorted

    keys = np.arange(0, 2 * ((1 << 20) + 100), 2, dtype=np.int64)  # long enough for the sorted-query path
    queries = np.random.default_rng(0).integers(-5, int(keys[-1]) + 5, size=(5000, 3))
    for side in ("left", "right"):
        np.testing.assert_array_equal(_searchsorted(keys, queries, side), np.searchsorted(keys, queries, side=side))


def test_caller_matrix_is_not_modified() -> None:
    m = sp.csr_matrix((np.ones(3), ([0, 0, 1], [2, 2, 0])), shape=(2, 4))  # a duplicate entry
    before = (m.indptr.copy(), m.indices.copy(), m.data.copy())
    neg = NegativeSampler(m).sample(np.array([0, 1]), 50, np.random.default_rng(0))
    assert not (neg[0] == 2).any() and not (neg[1] == 0).any()
    for a, b in zip(before, (m.indptr, m.indices, m.data)):
        np.testing.assert_array_equal(a, b)
