"""Wide & Deep: the loss falls, cold users score, score_all agrees with forward, and the ONNX export matches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_mf import train_steps  # tests/models is on sys.path (pytest prepend import mode)

from recstack.data.prepared import PreparedSplit
from recstack.models.features import WideDeepFeatures, context_from_timestamps
from recstack.models.wide_deep import WideAndDeep


def random_text(split: PreparedSplit, seed: int = 0) -> np.ndarray:
    """Stand-in text vectors (the MiniLM encoder has its own test)."""
    v = np.random.default_rng(seed).normal(size=(split.n_items, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def model(tiny_split: PreparedSplit) -> WideAndDeep:
    torch.manual_seed(0)
    return WideAndDeep.from_split(tiny_split, random_text(tiny_split), embedding_dim=8, hidden_dims=[16, 8])


def test_context_from_timestamps() -> None:
    hours, dows = context_from_timestamps(np.array([0, 3600 * 25, 86400 * 4]))
    assert hours.tolist() == [0, 1, 0]
    assert dows.tolist() == [3, 4, 0]  # 1970-01-01 was a Thursday; 1970-01-05 a Monday


def test_features_from_split(tiny_split: PreparedSplit) -> None:
    f = WideDeepFeatures.from_split(tiny_split, random_text(tiny_split))
    assert f.user_fields == ("gender", "age")
    assert f.user_codes.shape == (tiny_split.n_users + 1, 2)
    assert (f.user_codes[-1] == 0).all()  # the unknown user
    assert f.item_categories.sum(1).tolist() == [1.0] * tiny_split.n_items
    assert f.default_hours.shape == (tiny_split.n_users + 1,)


def test_loss_falls(tiny_split: PreparedSplit, model: WideAndDeep) -> None:
    losses = train_steps(model, tiny_split, epochs=8)
    assert losses[-1] < 0.8 * losses[0], losses


def test_forward_scores_known_and_cold_users(tiny_split: PreparedSplit, model: WideAndDeep) -> None:
    model.eval()
    users = torch.tensor([0, tiny_split.n_users])  # a known user and the unknown one
    logits = model(users, torch.tensor([1, 1]), torch.tensor([9, 9]), torch.tensor([2, 2]))
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    all_users = torch.arange(tiny_split.n_users)
    scores = model.score_all(all_users)
    assert scores.shape == (tiny_split.n_users, tiny_split.n_items)
    items = all_users % tiny_split.n_items
    torch.testing.assert_close(scores[all_users, items], model.score(all_users, items), rtol=1e-5, atol=1e-5)


def test_onnx_export_matches_torch(tmp_path, tiny_split: PreparedSplit, model: WideAndDeep) -> None:
    ort = pytest.importorskip("onnxruntime")
    model.eval()
    example = (torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]), torch.tensor([6, 0]))
    names = ["user_idx", "item_idx", "hour", "dow"]
    path = tmp_path / "wd.onnx"
    torch.onnx.export(
        model,
        example,
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=names,
        output_names=["logit"],
        dynamic_axes={n: {0: "batch"} for n in [*names, "logit"]},
    )
    session = ort.InferenceSession(str(path))
    batch = {
        "user_idx": np.array([0, 3, 7, tiny_split.n_users, 29]),
        "item_idx": np.array([0, 1, 2, 3, 39]),
        "hour": np.array([0, 5, 12, 18, 23]),
        "dow": np.array([0, 1, 2, 3, 6]),
    }
    got = session.run(None, batch)[0]
    with torch.no_grad():
        expected = model(*(torch.from_numpy(batch[n]) for n in names)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
