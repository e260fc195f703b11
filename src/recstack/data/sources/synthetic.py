"""A seeded synthetic data set with the structure of real interaction logs, from 100 rows to tens of millions.

The story it tells: categories are directions in a latent space; each item sits near its category's direction and has
a popularity rank; each user has a main and a side taste (two categories) and demographics that lean with the main
taste. An interaction picks a user in proportion to a log-normal activity, then an item from the main taste, the side
taste or the whole catalogue, by a power law (Zipf, exponent ``zipf``) over popularity rank within that pool. Its
rating (1-5, about MovieLens' mix) follows the user's affinity to the item's category direction plus the item's own
appeal, and each user's timestamps increase over a stretch of the time span. Repeats of a (user, item) pair occur,
as re-watches do in real logs; cleaning deduplicates them when a task wants it.

Everything is vectorised numpy, processed in fixed-size chunks so that 20M interactions stay within a few GiB, and
string ids are built by Arrow (no Python string per row).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recstack.data.schema import Dataset
from recstack.data.sources.columns import interactions_frame, items_frame, users_frame

CATEGORY_NAMES: tuple[str, ...] = (
    "Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Documentary", "Thriller", "Animation", "Fantasy",
    "Mystery", "Western", "Musical", "Crime", "Adventure", "War", "Family", "Sport", "History", "Biography",
)  # fmt: skip
ADJECTIVES: tuple[str, ...] = (
    "Silent", "Golden", "Broken", "Hidden", "Last", "Crimson", "Endless", "Wild", "Frozen", "Lost", "Bright", "Dark",
    "Secret", "Electric", "Quiet", "Savage", "Gentle", "Burning", "Hollow", "Distant",
)  # fmt: skip
NOUNS: tuple[str, ...] = (
    "Harbor", "Empire", "Garden", "River", "Machine", "Kingdom", "Promise", "Shadow", "Voyage", "Mirror", "Storm",
    "Letter", "Circus", "Frontier", "Orchard", "Signal", "Lantern", "Island", "Echo", "Station",
)  # fmt: skip
AGE_BUCKETS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55+")
GENDERS: tuple[str, ...] = ("F", "M")
REGIONS: tuple[str, ...] = ("north", "south", "east", "west", "central")
DEFAULT_START_TS = 1_577_836_800  # 2020-01-01T00:00:00Z
_CHUNK = 2_000_000  # interactions per vectorised step: bounds the temporaries (a few 100 MB), fixes the output
_MAIN_TASTE, _SIDE_TASTE = 0.55, 0.2  # the rest of the picks come from the whole catalogue
# Peak RSS of generating and preparing (recstack-data prepare, DuckDB) per interaction: 2.62 GiB at 20M
# (benchmarks/RESULTS.md, "Data preparation"), i.e. 140 bytes; per user and item, their rows and id strings.
PREPARE_BYTES_PER_INTERACTION = 140
PREPARE_BYTES_PER_ENTITY = 256
_GIB = 1 << 30


def estimated_prepare_bytes(n_users: int, n_items: int, n_interactions: int) -> int:
    """About the peak memory of generating and preparing this synthetic set (an estimate from measured runs)."""
    return PREPARE_BYTES_PER_INTERACTION * n_interactions + PREPARE_BYTES_PER_ENTITY * (n_users + n_items)


def available_memory_bytes() -> int | None:
    """Memory the OS can give this process now (``MemAvailable``); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_memory(n_users: int, n_items: int, n_interactions: int, memory_budget_gib: float | None) -> None:
    """Refuse up front, with the estimate, a size that would not fit: the budget, or else the available memory."""
    budget = int(memory_budget_gib * _GIB) if memory_budget_gib is not None else available_memory_bytes()
    if budget is None:
        return
    need = estimated_prepare_bytes(n_users, n_items, n_interactions)
    if need > budget:
        where = f"memory_budget_gib={memory_budget_gib}" if memory_budget_gib is not None else "available now"
        raise MemoryError(
            f"synthetic data of {n_interactions:,} interactions ({n_users:,} users, {n_items:,} items) needs about "
            f"{need / _GIB:.1f} GiB to generate and prepare ({PREPARE_BYTES_PER_INTERACTION} bytes per interaction, "
            f"measured), more than the {budget / _GIB:.1f} GiB {where}: lower data.source.n_interactions, or set "
            "data.source.memory_budget_gib if you know the machine has more"
        )


def _labels(codes: np.ndarray, names: tuple[str, ...] | list[str]) -> pa.Array:
    """Strings for integer codes, built by Arrow from a dictionary (no Python string per row)."""
    dictionary = pa.array(list(names), type=pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), dictionary).cast(pa.string())


def _prefixed_ids(prefix: str, n: int) -> pa.Array:
    """``prefix0 .. prefix<n-1>`` as large strings (what pandas holds, so taking rows copies nothing twice)."""
    numbers = pa.array(np.arange(n, dtype=np.int64)).cast(pa.large_string())
    return pc.binary_join_element_wise(pa.scalar(prefix, pa.large_string()), numbers, pa.scalar("", pa.large_string()))


def _category_names(n_categories: int) -> list[str]:
    return [CATEGORY_NAMES[c] if c < len(CATEGORY_NAMES) else f"Genre {c + 1}" for c in range(n_categories)]


def _power_law_rank(size: np.ndarray | int, uniform: np.ndarray, exponent: float) -> np.ndarray:
    """0-based ranks below ``size`` with P(rank r) ~ (r + 1) ** -exponent: the continuous inverse CDF, O(1) a draw.

    Exact inverse-CDF sampling of the discrete law needs a binary search per draw, the slowest step at 20M draws.
    """
    size = np.asarray(size, dtype=np.float64)
    if abs(exponent - 1.0) < 1e-9:
        x = np.exp(uniform * np.log(size + 1.0))
    else:
        a = 1.0 - exponent
        x = (1.0 + uniform * ((size + 1.0) ** a - 1.0)) ** (1.0 / a)
    return np.minimum(x.astype(np.int64) - 1, size.astype(np.int64) - 1)


def generate_synthetic(
    n_users: int = 1_000,
    n_items: int = 500,
    n_interactions: int = 20_000,
    *,
    n_categories: int = 20,
    dim: int = 16,
    zipf: float = 1.1,
    seed: int = 0,
    start_ts: int = DEFAULT_START_TS,
    span_days: int = 730,
    name: str = "synthetic",
    memory_budget_gib: float | None = None,
) -> Dataset:
    """Generate a ``Dataset`` of ``n_interactions`` ratings by ``n_users`` users on ``n_items`` items (see module doc).

    The same arguments give the same data on any machine (one ``numpy`` generator seeded with ``seed``). A size whose
    estimated generate-and-prepare memory (:func:`estimated_prepare_bytes`) exceeds ``memory_budget_gib`` (None: the
    memory available now) is refused up front with a ``MemoryError`` that states the estimate.
    """
    if min(n_users, n_items, n_interactions, n_categories, dim) < 1:
        raise ValueError(
            f"generate_synthetic needs positive sizes; got n_users={n_users}, n_items={n_items}, "
            f"n_interactions={n_interactions}, n_categories={n_categories}, dim={dim}"
        )
    if zipf < 0 or span_days < 1:
        raise ValueError(f"zipf must be >= 0 and span_days >= 1; got zipf={zipf}, span_days={span_days}")
    check_fits_memory(n_users, n_items, n_interactions, memory_budget_gib)
    rng = np.random.default_rng(seed)

    # Categories are unit directions; items and users sit near them.
    centroids = rng.standard_normal((n_categories, dim))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    item_category = rng.integers(0, n_categories, n_items)
    item_factors = (centroids[item_category] + 0.35 * rng.standard_normal((n_items, dim))).astype(np.float32)
    item_appeal = (0.3 * rng.standard_normal(n_items)).astype(np.float32)
    item_by_rank = rng.permutation(n_items)  # popularity rank 0 is the most popular item

    main_taste = rng.integers(0, n_categories, n_users)
    side_taste = rng.integers(0, n_categories, n_users)
    user_factors = (
        0.75 * centroids[main_taste] + 0.35 * centroids[side_taste] + 0.3 * rng.standard_normal((n_users, dim))
    ).astype(np.float32)
    # A user's affinity to an item is their affinity to its category's direction plus the item's own appeal: a
    # (users x categories) table, so each interaction costs one lookup instead of a dim-long dot product.
    user_category_affinity = user_factors @ centroids.T.astype(np.float32)

    # Users' activity is log-normal; the multinomial fixes the total exactly and keeps rows grouped by user. Every
    # user gets at least one interaction when there are enough to go round (a users table of ghosts helps no one).
    activity = rng.lognormal(0.0, 1.0, n_users)
    floor = 1 if n_interactions >= n_users else 0
    counts = floor + rng.multinomial(n_interactions - floor * n_users, activity / activity.sum())
    user_of = np.repeat(np.arange(n_users, dtype=np.int32), counts)

    # Items sorted by category, then by popularity rank: a category's k-th most popular item is one lookup away.
    rank_of = np.empty(n_items, dtype=np.int64)
    rank_of[item_by_rank] = np.arange(n_items)
    by_category = np.lexsort((rank_of, item_category))
    category_size = np.bincount(item_category, minlength=n_categories)
    category_start = np.concatenate(([0], np.cumsum(category_size)[:-1]))

    # Affinity scale from a sample of pairs, so ratings do not depend on the chunking.
    sample_u, sample_i = rng.integers(0, n_users, 4096), rng.integers(0, n_items, 4096)
    sample = user_category_affinity[sample_u, item_category[sample_i]] + item_appeal[sample_i]
    mean, std = float(sample.mean()), float(sample.std()) or 1.0

    item_of = np.empty(n_interactions, dtype=np.int32)
    rating = np.empty(n_interactions, dtype=np.float32)
    for lo in range(0, n_interactions, _CHUNK):
        users = user_of[lo : lo + _CHUNK]
        mode = rng.random(len(users))
        uniform = rng.random(len(users))
        category = np.where(mode < _MAIN_TASTE, main_taste[users], side_taste[users])
        # An empty category (more categories than items) falls back to the catalogue.
        taste = (mode < _MAIN_TASTE + _SIDE_TASTE) & (category_size[category] > 0)
        items = np.empty(len(users), dtype=np.int64)
        c = category[taste]
        items[taste] = by_category[category_start[c] + _power_law_rank(category_size[c], uniform[taste], zipf)]
        items[~taste] = item_by_rank[_power_law_rank(n_items, uniform[~taste], zipf)]
        item_of[lo : lo + _CHUNK] = items
        affinity = user_category_affinity[users, item_category[items]] + item_appeal[items]
        stars = 2.7 + 1.0 * (affinity - mean) / std + 0.6 * rng.standard_normal(len(users), dtype=np.float32)
        rating[lo : lo + _CHUNK] = np.clip(np.rint(stars), 1, 5)

    timestamp = _increasing_times(rng, user_of, counts, start_ts, span_days * 86_400)
    interactions = interactions_frame(
        _prefixed_ids("u", n_users).take(user_of),
        _prefixed_ids("i", n_items).take(item_of),
        timestamp,
        rating,
        "rating",
    )
    return Dataset(
        name,
        interactions,
        _items(rng, item_category, item_factors, centroids),
        _users(rng, main_taste, side_taste),
        source=f"synthetic:users={n_users},items={n_items},interactions={n_interactions},seed={seed}",
    )


def _increasing_times(
    rng: np.random.Generator, user_of: np.ndarray, counts: np.ndarray, start_ts: int, span: int
) -> np.ndarray:
    """Each user is active over a random stretch of the span; their events are spread over it in increasing order."""
    n_users = len(counts)
    first = start_ts + rng.uniform(0.0, 0.7, n_users) * span
    length = rng.uniform(0.1, 1.0, n_users) * (start_ts + span - first)
    gaps = rng.exponential(1.0, len(user_of))
    running = np.cumsum(gaps)
    totals = np.bincount(user_of, weights=gaps, minlength=n_users)
    before = np.concatenate(([0.0], np.cumsum(totals)[:-1]))  # running total before each user's first event
    del gaps
    # One more gap than events per user keeps the last event strictly inside the user's stretch.
    fraction = (running - before[user_of]) / (totals[user_of] + 1.0)
    del running
    return (first[user_of] + fraction * length[user_of]).astype(np.int64)


def _items(
    rng: np.random.Generator, item_category: np.ndarray, item_factors: np.ndarray, centroids: np.ndarray
) -> pd.DataFrame:
    n_items, n_categories = len(item_category), len(centroids)
    names = _category_names(n_categories)
    # A second category when the item's factors also lean clearly towards another category's direction.
    similarity = item_factors @ centroids.T.astype(np.float32)
    similarity[np.arange(n_items), item_category] = -np.inf
    runner_up = similarity.argmax(axis=1) if n_categories > 1 else np.zeros(n_items, dtype=np.int64)
    has_second = (n_categories > 1) & (similarity[np.arange(n_items), runner_up] > 0.5)
    categories = [
        [names[a], names[b]] if second else [names[a]]
        for a, b, second in zip(item_category.tolist(), runner_up.tolist(), has_second.tolist())
    ]
    adjective = _labels(rng.integers(0, len(ADJECTIVES), n_items), ADJECTIVES)
    noun = _labels(rng.integers(0, len(NOUNS), n_items), NOUNS)
    number = pc.binary_join_element_wise("#", pa.array(np.arange(n_items)).cast(pa.string()), "")
    title = pc.binary_join_element_wise(_labels(item_category, names), adjective, noun, number, " ")
    text = pc.utf8_lower(pc.binary_join_element_wise(adjective, noun, _labels(item_category, names), " "))
    year = rng.integers(1960, 2026, n_items)
    return items_frame(_prefixed_ids("i", n_items), title, year, categories, text)


def _users(rng: np.random.Generator, main_taste: np.ndarray, side_taste: np.ndarray) -> pd.DataFrame:
    n_users = len(main_taste)
    # Demographics lean with taste: each category has a typical age bucket, a gender lean and a home region.
    age = np.clip(main_taste % len(AGE_BUCKETS) + rng.choice([-1, 0, 0, 0, 1], n_users), 0, len(AGE_BUCKETS) - 1)
    female = rng.random(n_users) < np.where(main_taste % 2 == 0, 0.7, 0.3)
    region = np.where(rng.random(n_users) < 0.5, side_taste % len(REGIONS), rng.integers(0, len(REGIONS), n_users))
    return users_frame(
        _prefixed_ids("u", n_users),
        age=_labels(age, AGE_BUCKETS),
        gender=_labels(np.where(female, 0, 1), GENDERS),
        region=_labels(region, REGIONS),
    )
