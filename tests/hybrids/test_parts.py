"""Building and normalising a hybrid's parts; bad part names fail when the hybrid is built, listing the known ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from recstack.config import compose, config_dir
from recstack.data.prepared import PreparedSplit
from recstack.hybrids.base import Hybrid
from recstack.hybrids.parts import build_parts, check_part_names, known_parts, load_part, normalise
from recstack.models.ease import EASE
from recstack.training.build import build_model

HYBRID_CONFIGS = sorted(p.stem for p in (config_dir() / "model").glob("hybrid_*.yaml"))


def test_known_parts_are_the_base_model_configs() -> None:
    known = known_parts()
    assert {"pop", "itemknn", "ease", "mf", "lightgcn"} <= set(known)
    assert not [n for n in known if n.startswith("hybrid_")]


def test_unknown_part_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown base model\(s\) \['nope'\].*known base models: .*ease.*lightgcn"):
        check_part_names(["ease", "nope"])
    with pytest.raises(ValueError, match="empty"):
        check_part_names([])
    with pytest.raises(ValueError, match="twice"):
        check_part_names(["ease", "ease"])


def test_every_hybrid_config_composes_and_builds(tiny_split: PreparedSplit) -> None:
    assert HYBRID_CONFIGS == ["hybrid_cascade", "hybrid_stacking", "hybrid_switching", "hybrid_weighted"]
    for name in HYBRID_CONFIGS:
        cfg = compose("train", [f"model={name}"])
        model = build_model(cfg.model, tiny_split)  # builds only: parts are trained by fit
        assert isinstance(model, Hybrid)
        assert (model.n_users, model.n_items) == (tiny_split.n_users, tiny_split.n_items)


@pytest.mark.parametrize(
    ("config", "override"),
    [
        ("hybrid_weighted", "model.parts=[ease,nope]"),
        ("hybrid_stacking", "model.parts=[nope,ease]"),
        ("hybrid_switching", "model.cold=nope"),
        ("hybrid_cascade", "model.ranker=nope"),
    ],
)
def test_hybrid_config_with_an_unknown_part_fails_at_build(
    tiny_split: PreparedSplit, config: str, override: str
) -> None:
    cfg = compose("train", [f"model={config}", override])
    with pytest.raises(Exception, match=r"'nope'.*known base models: .*ease, itemknn, lightgcn, mf, pop"):
        build_model(cfg.model, tiny_split)


def test_parts_are_fitted_on_train(tiny_split: PreparedSplit) -> None:
    parts = build_parts(["ease", "pop"], tiny_split)
    assert isinstance(parts["ease"], EASE) and parts["ease"].weights is not None
    with pytest.raises(ValueError, match=r"runs names \['mf'\]"):
        build_parts(["ease"], tiny_split, runs={"mf": "outputs/runs/x"})


def test_zscore_and_minmax_use_unseen_items_only() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0, 100.0], [5.0, 5.0, 6.0, 7.0]])
    seen = torch.tensor([[False, False, False, True], [True, False, False, False]])
    z = normalise(scores, seen, "zscore")
    unseen = z[~seen].view(2, 3)
    assert torch.allclose(unseen.mean(dim=1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(unseen.std(dim=1, unbiased=False), torch.ones(2), atol=1e-5)
    assert (z[seen] == 0).all()
    m = normalise(scores, seen, "minmax")
    assert torch.allclose(m[0, :3], torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(m[1, 1:], torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="zscore"):
        normalise(scores, seen, "rank")  # type: ignore[arg-type]


def _fake_run(root: Path, target: str, prepared_split: str) -> Path:
    root.mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create({"model": {"_target_": target}, "prepared_split": prepared_split}), root / "config.yaml"
    )
    return root


def test_a_run_of_another_model_or_split_is_refused(tmp_path: Path, tiny_split: PreparedSplit) -> None:
    other_split = _fake_run(tmp_path / "a", "recstack.models.lightgcn.LightGCN", "data/processed/ml-100k/0123abcd")
    with pytest.raises(ValueError, match="trained on split 0123abcd, not on this one"):
        load_part("lightgcn", tiny_split, other_split)
    other_model = _fake_run(tmp_path / "b", "recstack.models.mf.MatrixFactorization", str(tiny_split.root))
    with pytest.raises(ValueError, match=r"trained recstack\.models\.mf\.MatrixFactorization, not .*LightGCN"):
        load_part("lightgcn", tiny_split, other_model)
    with pytest.raises(FileNotFoundError, match="not a recstack run folder"):
        load_part("lightgcn", tiny_split, tmp_path / "missing")


def test_recstack_train_refuses_an_unknown_part_before_reading_any_data(tmp_path: Path) -> None:
    """No data at all (an empty data home): the error is still about the hybrid's unknown part, listing the known ones."""
    script = Path(sys.executable).with_name("recstack-train")
    done = subprocess.run(
        [str(script), "model=hybrid_weighted", "model.parts=[ease,nosuch]", f"hydra.run.dir={tmp_path / 'h'}"],
        capture_output=True,
        text=True,
        env={**os.environ, "RECSTACK_DATA_HOME": str(tmp_path / "empty")},
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode != 0
    assert "unknown base model(s) ['nosuch'] in the hybrid's model.parts; known base models: " in done.stderr
    assert "ease" in done.stderr and "lightgcn" in done.stderr
