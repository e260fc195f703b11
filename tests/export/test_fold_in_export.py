"""export's ``fold_in``: the retrieval model (LightGCN) propagates over the ``seen`` interactions, erased users' rows
left out of that graph, before its vectors are taken; MF is refused; the manifest records it; with a ranker, the CLI
tunes the blend weight on a seen=train export of the same runs. Real tiny training runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from bundle_support import train_tiny

from recstack.bundle.reader import Bundle
from recstack.config import compose
from recstack.data.prepared import PreparedSplit
from recstack.export.erasure import Erasures
from recstack.export.exporter import ExportError, export_run, seen_matrix
from recstack.retrieval.index import IndexConfig

FLAT = IndexConfig(kind="flat")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_split_writer: Callable[..., Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    split = PreparedSplit.load(tiny_split_writer(root / "tiny"))
    return {m: train_tiny(m, split, root) for m in ("mf", "lightgcn", "ease")}


def folded_vectors(run: Path, interactions: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """The run's model, folded in over ``interactions`` by hand: its propagated (user, item) vectors."""
    from recstack.training.runs import load_run

    model = load_run(run).model
    model.fold_in(interactions)  # type: ignore[attr-defined]
    with torch.no_grad():
        users, items = model.propagate()  # type: ignore[attr-defined]
    return users.numpy(), items.numpy()


@pytest.mark.slow
def test_lightgcn_vectors_are_propagated_over_train_and_valid(runs: dict[str, Path], tmp_path: Path) -> None:
    from recstack.training.runs import load_run

    split = load_run(runs["lightgcn"]).split
    folded = Bundle.load(
        export_run(
            runs["lightgcn"], tmp_path / "folded", index_config=FLAT, text=False, seen="train_valid", fold_in=True
        )
    )
    plain = Bundle.load(
        export_run(runs["lightgcn"], tmp_path / "plain", index_config=FLAT, text=False, seen="train_valid")
    )
    assert folded.manifest.metrics["export"] == {"seen": "train_valid", "fold_in": True}
    assert plain.manifest.metrics["export"] == {"seen": "train_valid", "fold_in": False}

    users, items = folded_vectors(runs["lightgcn"], seen_matrix(split, "train_valid"))
    np.testing.assert_allclose(folded.user_embeddings, users, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(folded.item_embeddings, items, rtol=1e-5, atol=1e-6)
    trained_users, _ = folded_vectors(runs["lightgcn"], split.matrix("train"))  # the training graph
    np.testing.assert_allclose(plain.user_embeddings, trained_users, rtol=1e-5, atol=1e-6)
    assert np.abs(folded.user_embeddings - plain.user_embeddings).max(axis=1).min() > 1e-6  # every user moved
    # The seen lists are what seen=train_valid writes either way
    assert (folded.seen != plain.seen).nnz == 0 and folded.seen.nnz == seen_matrix(split, "train_valid").nnz


@pytest.mark.slow
def test_mf_is_refused_before_anything_is_written(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"fold_in=true: MatrixFactorization.*export it with fold_in=false"):
        export_run(runs["mf"], tmp_path / "b", index_config=FLAT, text=False, seen="train_valid", fold_in=True)
    assert not (tmp_path / "b").exists()
    # Without fold_in MF exports as before, and the manifest says so
    bundle = Bundle.load(export_run(runs["mf"], tmp_path / "b", index_config=FLAT, text=False))
    assert bundle.manifest.metrics["export"] == {"seen": "all", "fold_in": False}


@pytest.mark.slow
def test_erased_users_interactions_stay_out_of_the_graph(
    runs: dict[str, Path], tmp_path: Path, pseudonymisation_key: str
) -> None:
    from recstack.training.runs import load_run

    split = load_run(runs["lightgcn"]).split
    erasures = Erasures(frozenset({"u3"}), pseudonymisation_key.encode())
    bundle = Bundle.load(
        export_run(
            runs["lightgcn"],
            tmp_path / "b",
            index_config=FLAT,
            text=False,
            seen="train_valid",
            fold_in=True,
            erasures=erasures,
        )
    )
    seen = seen_matrix(split, "train_valid")
    keep = np.ones(split.n_users, dtype=np.float32)
    keep[3] = 0.0
    redacted = sp.csr_matrix(sp.diags(keep) @ seen)
    redacted.eliminate_zeros()
    users, items = folded_vectors(runs["lightgcn"], redacted)
    users[3] = 0.0  # the erased user's row is blanked in the bundle
    np.testing.assert_allclose(bundle.user_embeddings, users, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bundle.item_embeddings, items, rtol=1e-5, atol=1e-6)
    assert "u3" not in bundle.user_index and not bundle.user_embeddings[3].any()
    # Folded over the unredacted matrix, u3's items would have other vectors: the exclusion is what the bundle holds
    _, with_u3 = folded_vectors(runs["lightgcn"], seen)
    u3_items = seen.indices[seen.indptr[3] : seen.indptr[4]]
    assert np.abs(with_u3[u3_items] - bundle.item_embeddings[u3_items]).max() > 1e-6


@pytest.mark.slow
def test_cli_tunes_the_blend_on_a_seen_train_export_and_records_it(runs: dict[str, Path], tmp_path: Path) -> None:
    from recstack.cli.export import export_from_config, folds_in_validation
    from recstack.offline.blend import tune_blend_weight
    from recstack.offline.report import evaluate_bundle
    from recstack.training.runs import load_run

    split = load_run(runs["lightgcn"]).split
    common = [f"run={runs['lightgcn']}", f"ranker_run={runs['ease']}", "index=flat", "text=false"]
    common += ["content.enabled=false"]
    cfg = compose("export", [*common, f"out={tmp_path / 'folded'}", "fold_in=true", "seen=train_valid"])
    assert folds_in_validation(cfg)
    assert not folds_in_validation(compose("export", [*common, "fold_in=true", "seen=train"]))
    assert not folds_in_validation(compose("export", [*common, "seen=all"]))
    folded = Bundle.load(export_from_config(cfg))
    assert folded.manifest.metrics["export"] == {"seen": "train_valid", "fold_in": True}
    blend = folded.manifest.ranker.blend if folded.manifest.ranker is not None else None
    assert blend is not None and len(blend.grid) == 11

    # The weight is the one tuned on the training graph: an export of the same runs with seen=train, no fold-in
    reference = export_run(
        runs["lightgcn"], tmp_path / "train", index_config=FLAT, text=False, seen="train", ranker_run=runs["ease"]
    )
    assert tune_blend_weight(Bundle.load(reference), split) == blend
    # The folded bundle is judged on test, where it has not read the split it is judged on
    evaluations = evaluate_bundle(folded.root, split, "test", (10,))
    assert len(evaluations) == 2 and evaluations[0].result.n_users_evaluated == split.n_users
