"""A content (TF-IDF) run exported as a bundle: its item vectors in the bundle with their own FAISS index, served by
the same pipeline, which answers what the model ranks; and the run behind EASE as a two-stage pipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from test_exporter import train_tiny  # tests/export is on sys.path (pytest prepend import mode)

from recstack.bundle.reader import Bundle
from recstack.data.prepared import PreparedSplit
from recstack.export.exporter import export_run
from recstack.retrieval.index import IndexConfig
from recstack.serving.pipeline import Pipeline, Query
from recstack.training.runs import load_run


@pytest.fixture(scope="module")
def content_runs(tmp_path_factory: pytest.TempPathFactory, tiny_split_writer: Callable[..., Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("content-runs")
    split = PreparedSplit.load(tiny_split_writer(root / "tiny"))
    return {m: train_tiny(m, split, root) for m in ("content", "ease")}


def test_a_content_run_is_served_from_its_tfidf_vectors(content_runs: dict[str, Path], tmp_path: Path) -> None:
    out = export_run(content_runs["content"], tmp_path / "bundle", index_config=IndexConfig(kind="flat", metric="ip"))
    bundle = Bundle.load(out)
    loaded = load_run(content_runs["content"])
    vectors = loaded.model.item_vectors
    assert bundle.manifest.model_kind == "content" and bundle.manifest.embedding_dim == vectors.shape[1]
    np.testing.assert_allclose(bundle.item_embeddings, vectors, atol=1e-6)  # the TF-IDF vectors themselves
    pipeline = Pipeline.from_bundle(bundle)
    split = loaded.split
    seen = bundle.seen.tocsr()  # what the pipeline never recommends back (export's seen= setting)
    for user in range(0, split.n_users, 7):
        exclude = torch.from_numpy(seen[user].toarray().astype(bool))
        expected, _ = loaded.model.recommend(torch.tensor([user]), 5, exclude=exclude)
        user_id = next(u for u, row in bundle.user_index.items() if row == user)
        answer = pipeline.recommend(Query(user_id=user_id, k=5, rerank=False))
        assert answer.user_source == "trained"
        # the same top-5 cosines (items of equal text tie, in either order), each the model's score of its item
        np.testing.assert_allclose(answer.scores, expected[0].numpy(), atol=1e-5)
        model_scores = loaded.model.score_all(torch.tensor([user]))[0].numpy()
        np.testing.assert_allclose(model_scores[answer.items], answer.scores, atol=1e-5)


def test_content_retrieval_behind_ease(content_runs: dict[str, Path], tmp_path: Path) -> None:
    out = export_run(
        content_runs["content"],
        tmp_path / "two-stage",
        index_config=IndexConfig(kind="flat", metric="ip"),
        ranker_run=content_runs["ease"],
    )
    bundle = Bundle.load(out)
    assert bundle.manifest.ranker is not None and bundle.manifest.ranker.kind == "item_item"
    answer = Pipeline.from_bundle(bundle).recommend(Query(user_id=next(iter(bundle.user_index)), k=5))
    assert answer.stage == "rerank" and len(set(answer.items.tolist())) == 5
