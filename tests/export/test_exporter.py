"""Run -> bundle on tiny real training runs (MF, LightGCN; Wide & Deep or EASE as the ranker), the CLI, and the BentoML
store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_support import train_tiny

from recstack.bundle.contract import score_ranker
from recstack.bundle.reader import Bundle
from recstack.bundle.session import make_session
from recstack.config import compose
from recstack.data.prepared import PreparedSplit
from recstack.export.exporter import ExportError, export_run
from recstack.retrieval.index import IndexConfig


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_split_writer: Callable[..., Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    split = PreparedSplit.load(tiny_split_writer(root / "tiny"))
    return {m: train_tiny(m, split, root) for m in ("mf", "lightgcn", "wide_deep", "ease")}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mf", "lightgcn"])
def test_export_each_retrieval_model(kind: str, runs: dict[str, Path], tmp_path: Path) -> None:
    from recstack.training.runs import load_run

    out = export_run(
        runs[kind], tmp_path / "bundle", index_config=IndexConfig(kind="hnsw"), ranker_run=runs["wide_deep"]
    )
    bundle = Bundle.load(out)
    m = bundle.manifest
    assert (m.model_kind, m.n_users, m.n_items, m.embedding_dim, m.text_dim) == (kind, 30, 40, 64, 384)
    assert m.split_hash == "tiny0000" and "valid" in m.metrics["retrieval"] and "test" in m.metrics["ranker"]
    assert (
        m.ranker is not None
        and m.ranker.contract.oov_user_index == 30
        and m.metrics["ranker_parity_max_abs_diff"] <= 1e-5
    )
    # The bundle scores what the model scores (LightGCN: after propagation).
    model = load_run(runs[kind]).model
    expected = model.score_all(torch.arange(30)).detach().numpy()
    np.testing.assert_allclose(bundle.user_embeddings @ bundle.item_embeddings.T, expected, atol=1e-4)
    assert bundle.items["popularity"].sum() == 30 * 8
    # The ONNX ranker in the bundle reproduces the Wide & Deep run, OOV user included.
    ranker = load_run(runs["wide_deep"]).model
    users, items = np.array([0, 5, 30]), np.array([1, 2, 3])
    hours, dows = np.array([0, 12, 23]), np.array([0, 3, 6])
    with torch.no_grad():
        want = ranker(*(torch.from_numpy(a.astype(np.int64)) for a in (users, items, hours, dows))).numpy()
    got = score_ranker(make_session(bundle.ranker_path), users, items, hours, dows)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.slow
def test_same_run_exported_twice_gives_identical_search(runs: dict[str, Path], tmp_path: Path) -> None:
    results = []
    for name in ("a", "b"):
        bundle = Bundle.load(export_run(runs["mf"], tmp_path / name, index_config=IndexConfig(kind="hnsw"), text=False))
        exclude = [bundle.seen_items(u) for u in range(bundle.manifest.n_users)]
        results.append(bundle.index.search(bundle.user_embeddings, 10, exclude))
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][0], results[1][0])


@pytest.mark.slow
def test_ranker_run_is_not_a_retrieval_model(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="only dot-product models"):
        export_run(runs["wide_deep"], tmp_path / "b", index_config=IndexConfig())
    with pytest.raises(ExportError, match="not a Wide & Deep run"):
        export_run(runs["mf"], tmp_path / "b", index_config=IndexConfig(), ranker_run=runs["lightgcn"], text=False)


@pytest.mark.slow
def test_cli_and_bentoml_store(runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    from recstack.cli.export import export_from_config

    overrides = [f"run={runs['lightgcn']}", f"ranker_run={runs['wide_deep']}", "index=ivf_flat", "store=true"]
    overrides.append("index.exact_below=0")  # 40 items: the config's exact_below would build it flat
    out = export_from_config(compose("export", [*overrides, f"out={tmp_path / 'bundle'}", "text=false"]))
    manifest = Bundle.load(out).manifest
    assert manifest.index.factory == "IVF1,Flat"  # nlist capped for 40 items
    # The CLI tuned the ranker's blend weight on validation after writing the bundle, before storing it.
    assert manifest.ranker is not None and manifest.ranker.blend is not None
    assert manifest.ranker.blend.metric == "valid/ndcg@10" and len(manifest.ranker.blend.grid) == 11

    import bentoml

    from recstack.export.model_store import bundle_path, save_to_store

    stored = bentoml.models.list("recstack")
    assert len(stored) == 1
    model = stored[0]
    assert model.info.labels["model_kind"] == "lightgcn" and model.info.metadata["n_items"] == 40
    assert Bundle.load(Path(model.path)).manifest == manifest  # the stored copy has the blend weight
    tag = save_to_store(out)
    assert tag.startswith("recstack:") and tag != str(model.tag)
    loaded = Bundle.load(bundle_path(tag))
    original = Bundle.load(out)
    np.testing.assert_array_equal(loaded.item_embeddings, original.item_embeddings)
    np.testing.assert_array_equal(
        loaded.index.search(loaded.user_embeddings, 5)[1], original.index.search(original.user_embeddings, 5)[1]
    )


@pytest.mark.slow
def test_ease_run_is_exported_as_the_item_item_ranker(runs: dict[str, Path], tmp_path: Path) -> None:
    from recstack.bundle.layout import ITEM_ITEM
    from recstack.cli.export import export_from_config
    from recstack.training.runs import load_run

    overrides = [f"run={runs['lightgcn']}", f"ranker_run={runs['ease']}", "index=flat", "text=false"]
    out = export_from_config(compose("export", [*overrides, f"out={tmp_path / 'bundle'}", "content.enabled=false"]))
    bundle = Bundle.load(out)
    ranker = bundle.manifest.ranker
    assert ranker is not None and ranker.kind == "item_item" and ranker.file == ITEM_ITEM
    assert ranker.item_item is not None and ranker.item_item.model == "ease" and ranker.item_item.params["l2"] == 300.0
    assert "valid" in bundle.manifest.metrics["ranker"]
    np.testing.assert_array_equal(bundle.item_item, load_run(runs["ease"]).model.item_item_weights())
    # The CLI tuned its blend weight on validation, as for the ONNX ranker.
    assert ranker.blend is not None and len(ranker.blend.grid) == 11


@pytest.mark.slow
def test_item_item_memory_bound_refused_before_the_fit(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"40 x 40 float32 .* above item_item\.max_memory_gb=1e-09"):
        export_run(
            runs["mf"],
            tmp_path / "b",
            index_config=IndexConfig(),
            ranker_run=runs["ease"],
            text=False,
            item_item_max_memory_gb=1e-9,
        )
    assert not (tmp_path / "b").exists()
