"""ONNX export of the Wide & Deep re-ranker: ONNX Runtime matches PyTorch, and the parity check can fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from recstack.bundle.contract import score_ranker
from recstack.bundle.session import make_session, session_options
from recstack.data.prepared import PreparedSplit
from recstack.export.onnx_export import OPSET, ExportParityError, check_parity, export_ranker
from recstack.models.wide_deep import WideAndDeep


@pytest.fixture
def ranker(tiny_split: PreparedSplit) -> WideAndDeep:
    """The real Wide & Deep on the tiny split, with random (not zero) weights so every path contributes."""
    torch.manual_seed(0)
    text = np.random.default_rng(0).standard_normal((tiny_split.n_items, 384)).astype(np.float32)
    model = WideAndDeep.from_split(tiny_split, text)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.1)
    return model.eval()


def test_export_passes_parity_with_dynamic_batch(ranker: WideAndDeep, tmp_path: Path) -> None:
    report = export_ranker(ranker, tmp_path / "ranker.onnx", n_users=30, n_items=40)
    assert report.ok and report.n_samples == 1000 and report.max_abs_diff <= 1e-5
    graph = onnx.load(tmp_path / "ranker.onnx")
    assert graph.opset_import[0].version == OPSET
    assert [i.name for i in graph.graph.input] == ["user_idx", "item_idx", "hour", "dow"]
    assert [o.name for o in graph.graph.output] == ["score"]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = make_session(tmp_path / "ranker.onnx")
    for batch in (1, 7, 200):
        users = np.full(batch, 30)  # the OOV user
        out = score_ranker(session, users, np.arange(batch) % 40, np.zeros(batch), np.ones(batch))
        assert out.shape == (batch,) and out.dtype == np.float32 and np.isfinite(out).all()


def test_parity_trips_when_weights_change_after_export(ranker: WideAndDeep, tmp_path: Path) -> None:
    path = tmp_path / "ranker.onnx"
    export_ranker(ranker, path, n_users=30, n_items=40)
    with torch.no_grad():
        ranker.mlp[-1].bias.add_(1e-3)
    with pytest.raises(ExportParityError, match=r"differs from PyTorch by up to 0\.001"):
        check_parity(ranker, path, n_users=30, n_items=40)
    assert not check_parity(ranker, path, n_users=30, n_items=40, raise_on_failure=False).ok


def test_failed_export_removes_the_file(ranker: WideAndDeep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A forward that differs between tracing and eager scoring: the exported graph cannot match.
    calls = {"n": 0}
    original = ranker.forward

    def drifting(*args: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return original(*args) + (0.0 if calls["n"] == 1 else 1.0)

    monkeypatch.setattr(ranker, "forward", drifting)
    with pytest.raises(ExportParityError):
        export_ranker(ranker, tmp_path / "ranker.onnx", n_users=30, n_items=40)
    assert not (tmp_path / "ranker.onnx").exists()


def test_session_options_are_deliberate(tmp_path: Path) -> None:
    import onnxruntime as ort

    options = session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with pytest.raises(ValueError, match="unknown"):
        session_options(optimization="max")
    with pytest.raises(FileNotFoundError, match="recstack-export"):
        make_session(tmp_path / "absent.onnx")


def test_served_graph_with_precomputed_tables_matches_the_model(ranker: WideAndDeep, tmp_path: Path) -> None:
    from recstack.models.wide_deep_frozen import FrozenWideAndDeep

    frozen = FrozenWideAndDeep(ranker)
    users = torch.tensor([0, 5, 30, 29, 30])  # 30 is the OOV user
    items = torch.tensor([0, 39, 7, 12, 3])
    hours, dows = torch.tensor([0, 23, 12, 5, 20]), torch.tensor([6, 0, 3, 1, 5])
    with torch.no_grad():
        torch.testing.assert_close(frozen(users, items, hours, dows), ranker(users, items, hours, dows))
    report = export_ranker(ranker, tmp_path / "ranker.onnx", n_users=30, n_items=40, graph=frozen)
    assert report.ok and report.max_abs_diff <= 1e-5
    # A serving form that is not the model fails the export: parity is checked against the model, not the graph.
    with torch.no_grad():
        frozen.i_bias.add_(1e-2)
    with pytest.raises(ExportParityError):
        export_ranker(ranker, tmp_path / "bad.onnx", n_users=30, n_items=40, graph=frozen)
    assert not (tmp_path / "bad.onnx").exists()
