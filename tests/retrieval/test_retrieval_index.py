"""The FAISS index factory: every kind builds, round-trips through a file, excludes what it is told to, and HNSW
recall stays above a floor on clustered data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recstack.config import config_dir
from recstack.retrieval.index import KINDS, IndexConfig, IndexConfigError, RetrievalIndex, build_index


def clustered(n: int, d: int, n_clusters: int = 32, seed: int = 0) -> np.ndarray:
    """A mixture of Gaussians: the structure real embeddings have (uniform noise makes ANN look worse than it is)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    labels = rng.integers(0, n_clusters, n)
    return (centres[labels] + 0.3 * rng.standard_normal((n, d))).astype(np.float32)


def small_config(kind: str, **kw) -> IndexConfig:
    return IndexConfig(kind=kind, hnsw_m=16, ef_construction=64, ef_search=64, nlist=32, nprobe=8, pq_m=8, **kw)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered(4000, 32)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_gives_identical_neighbours(kind: str, vectors: np.ndarray, tmp_path: Path) -> None:
    index = build_index(vectors, small_config(kind))
    queries = vectors[:100] + 0.01
    scores, ids = index.search(queries, 20)
    loaded = RetrievalIndex.load(index.save(tmp_path / "items.faiss"), index.config)
    scores2, ids2 = loaded.search(queries, 20)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_array_equal(scores, scores2)
    assert ids.shape == (100, 20) and (ids >= 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_same_inputs_build_identical_indexes(kind: str, vectors: np.ndarray) -> None:
    queries = vectors[:50]
    a = build_index(vectors, small_config(kind)).search(queries, 10)[1]
    b = build_index(vectors, small_config(kind)).search(queries, 10)[1]
    np.testing.assert_array_equal(a, b)


def test_flat_matches_numpy_inner_product(vectors: np.ndarray) -> None:
    queries = vectors[:20]
    scores, ids = build_index(vectors, IndexConfig(kind="flat")).search(queries, 5)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :5]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, expected, 1), rtol=1e-5)


def test_hnsw_recall_floor() -> None:
    data = clustered(4200, 32, seed=1)  # held-out queries from the same mixture as the items
    vectors, queries = data[:4000], data[4000:]
    exact = build_index(vectors, IndexConfig(kind="flat")).search(queries, 10)[1]
    approx = build_index(vectors, small_config("hnsw")).search(queries, 10)[1]
    recall = np.mean([len(np.intersect1d(a, e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9, recall


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("exclusion", ["overfetch", "selector"])
def test_exclusion_never_returns_excluded_ids(kind: str, exclusion: str, vectors: np.ndarray) -> None:
    index = build_index(vectors, small_config(kind))
    queries = vectors[:30]
    _, top = index.search(queries, 50)
    exclude = [top[b, ::2] for b in range(len(queries))]  # half of each query's own neighbours
    scores, ids = index.search(queries, 20, exclude, exclusion=exclusion)
    for b in range(len(queries)):
        assert not np.isin(ids[b], exclude[b]).any()
        assert (ids[b] >= 0).sum() == 20
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # still sorted best first


def test_both_exclusion_strategies_agree_on_exact_search(vectors: np.ndarray) -> None:
    index = build_index(vectors, IndexConfig(kind="flat"))
    queries = vectors[:10]
    exclude = [np.arange(b, 4000, 7) for b in range(10)]
    a = index.search(queries, 15, exclude, exclusion="overfetch")[1]
    b = index.search(queries, 15, exclude, exclusion="selector")[1]
    np.testing.assert_array_equal(a, b)


def test_params_adjustable_at_load(vectors: np.ndarray, tmp_path: Path) -> None:
    path = build_index(vectors, small_config("hnsw")).save(tmp_path / "h.faiss")
    loaded = RetrievalIndex.load(path, small_config("hnsw"), ef_search=256)
    assert loaded.config.ef_search == 256
    path = build_index(vectors, small_config("ivf_flat")).save(tmp_path / "i.faiss")
    loaded = RetrievalIndex.load(path, small_config("ivf_flat"), nprobe=32)
    assert loaded.config.nprobe == 32
    # nprobe = nlist scans every list: IVF-Flat becomes exact.
    exact = build_index(vectors, IndexConfig(kind="flat")).search(vectors[:20], 10)[1]
    np.testing.assert_array_equal(loaded.search(vectors[:20], 10)[1], exact)


def test_cosine_metric_normalises(vectors: np.ndarray) -> None:
    index = build_index(vectors, IndexConfig(kind="flat", metric="cosine"))
    scores, _ = index.search(vectors[:5] * 10.0, 1)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_small_catalogue_caps_nlist_and_pads() -> None:
    x = clustered(40, 8)
    index = build_index(x, IndexConfig(kind="ivf_flat", nlist=1024, nprobe=1024))
    assert index.config.nlist == 1
    scores, ids = build_index(x, IndexConfig(kind="flat")).search(x[:2], 50)
    assert (ids[:, 40:] == -1).all() and np.isneginf(scores[:, 40:]).all()


def test_bad_configs_say_what_to_do(vectors: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(IndexConfigError, match="unknown"):
        IndexConfig(kind="lsh")
    with pytest.raises(IndexConfigError, match="must divide"):
        build_index(vectors, IndexConfig(kind="ivf_pq", pq_m=7))
    with pytest.raises(IndexConfigError, match="pq_bits"):
        build_index(vectors[:100], IndexConfig(kind="ivf_pq", pq_m=8))
    path = build_index(vectors, IndexConfig(kind="flat")).save(tmp_path / "f.faiss")
    with pytest.raises(IndexConfigError, match="kind='hnsw'"):
        RetrievalIndex.load(path, IndexConfig(kind="hnsw"))
    with pytest.raises(ValueError, match="dimension"):
        build_index(vectors, IndexConfig()).search(np.zeros((1, 5), np.float32), 3)


@pytest.mark.parametrize("name", ["flat", "hnsw", "ivf_flat", "ivf_pq"])
def test_config_files_compose(name: str) -> None:
    from omegaconf import OmegaConf

    cfg = IndexConfig.from_mapping(OmegaConf.to_container(OmegaConf.load(config_dir() / "index" / f"{name}.yaml")))
    assert cfg.kind == name and cfg.metric == "ip"


def test_exact_below_builds_small_catalogues_flat() -> None:
    vectors = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    for kind in ("hnsw", "ivf_flat"):
        small = build_index(vectors, IndexConfig(kind=kind, exact_below=51))
        assert small.config.kind == "flat" and small.config.factory_string() == "Flat"
        assert build_index(vectors, IndexConfig(kind=kind, exact_below=50)).config.kind == kind
    exact = build_index(vectors, IndexConfig(kind="flat"))
    query = vectors[:3]
    got = build_index(vectors, IndexConfig(kind="hnsw", exact_below=1000)).search(query, 10)
    np.testing.assert_array_equal(got[1], exact.search(query, 10)[1])
    with pytest.raises(IndexConfigError, match="exact_below"):
        IndexConfig(kind="hnsw", exact_below=-1)


def test_the_configs_build_small_catalogues_exactly() -> None:
    from recstack.config import compose

    for kind in ("hnsw", "ivf_flat", "ivf_pq"):
        node = compose("export", [f"index={kind}"]).index
        assert IndexConfig.from_mapping(node).fitted_to(19_999, 64).kind == "flat"
        assert IndexConfig.from_mapping(node).fitted_to(20_000, 64).kind == kind
