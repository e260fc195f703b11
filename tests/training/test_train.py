"""train(cfg) end to end: fast_dev_run of each deep model, the run folder, checkpoint round trip, seeds, resume,
and one short real run on ML-100K."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recstack.config import compose, config_dir
from recstack.data.prepared import PreparedSplit
from recstack.training.runs import load_run
from recstack.training.train import train

DEEP_MODELS = ["mf", "lightgcn", "wide_deep"]


def config(tmp_path: Path, text_cache: Path, *overrides: str):
    return compose(
        "train",
        [f"runs_root={tmp_path / 'runs'}", f"text_cache_dir={text_cache}", "progress=false", *overrides],
    )


@pytest.mark.parametrize("model", DEEP_MODELS)
def test_fast_dev_run(model: str, tiny_split: PreparedSplit, tmp_path: Path, text_cache: Path) -> None:
    result = train(config(tmp_path, text_cache, f"model={model}", "experiment=smoke"), split=tiny_split)
    assert set(result.metrics["test"]) >= {"ndcg@10", "recall@10", "map@10"}
    assert result.run_dir.name.startswith(f"{model}-tiny-")


def test_run_folder_and_checkpoint_round_trip(tiny_split: PreparedSplit, tmp_path: Path, text_cache: Path) -> None:
    result = train(config(tmp_path, text_cache, "model=mf", "fit.max_epochs=3"), split=tiny_split)
    run = result.run_dir
    for path in ["config.yaml", "metrics.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "csv/metrics.csv"]:
        assert (run / path).is_file(), path
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {
        "valid",
        "test",
        "train_seconds",
        "epochs",
        "seconds_per_epoch",
        "best_epoch",
        "best_epoch_is_last",
    }
    assert metrics["epochs"] == 3 and 0 <= metrics["best_epoch"] < 3

    loaded = load_run(run)
    users = torch.arange(tiny_split.n_users)
    torch.testing.assert_close(loaded.model.score_all(users), result.model.score_all(users), rtol=0, atol=0)
    assert loaded.split.n_items == tiny_split.n_items and loaded.name == run.name


def test_wide_deep_round_trip(tiny_split: PreparedSplit, tmp_path: Path, text_cache: Path) -> None:
    result = train(config(tmp_path, text_cache, "model=wide_deep", "fit.max_epochs=2"), split=tiny_split)
    loaded = load_run(result.run_dir)
    users = torch.arange(tiny_split.n_users)
    torch.testing.assert_close(loaded.model.score_all(users), result.model.score_all(users), rtol=0, atol=0)


def test_same_seed_same_metrics(tiny_split: PreparedSplit, tmp_path: Path, text_cache: Path) -> None:
    runs = [
        train(config(tmp_path / str(i), text_cache, "model=lightgcn", "fit.max_epochs=2"), split=tiny_split)
        for i in range(2)
    ]
    assert runs[0].metrics["valid"] == runs[1].metrics["valid"]
    assert runs[0].metrics["test"] == runs[1].metrics["test"]


def test_a_run_folder_with_checkpoints_is_not_reused_silently(
    tiny_split: PreparedSplit, tmp_path: Path, text_cache: Path
) -> None:
    first = train(config(tmp_path, text_cache, "model=mf", "fit.max_epochs=1"), split=tiny_split)
    with pytest.raises(ValueError, match=r"already holds checkpoints.*ckpt_path="):
        train(config(tmp_path, text_cache, "model=mf", f"run_dir={first.run_dir}"), split=tiny_split)


@pytest.mark.parametrize("model", ["mf", "pop"])
def test_tuning_never_reads_the_test_split(
    model: str, tiny_split: PreparedSplit, tmp_path: Path, text_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recstack.evaluation.evaluator as evaluator

    stages: list[str] = []
    real = evaluator.evaluate

    def spy(model_, split, stage, *args, **kwargs):
        stages.append(stage)
        return real(model_, split, stage, *args, **kwargs)

    monkeypatch.setattr(evaluator, "evaluate", spy)
    result = train(
        config(tmp_path, text_cache, f"model={model}", "experiment=smoke", "evaluate_test=false"), split=tiny_split
    )
    assert stages and set(stages) == {"valid"}
    assert result.metrics["test"] is None
    assert json.loads((result.run_dir / "metrics.json").read_text())["test"] is None


def test_resume_from_last_checkpoint(tiny_split: PreparedSplit, tmp_path: Path, text_cache: Path) -> None:
    first = train(config(tmp_path, text_cache, "model=mf", "fit.max_epochs=1"), split=tiny_split)
    last = first.run_dir / "checkpoints" / "last.ckpt"
    resumed = train(
        config(tmp_path, text_cache, "model=mf", "fit.max_epochs=3", f"ckpt_path={last}", f"run_dir={first.run_dir}"),
        split=tiny_split,
    )
    assert resumed.metrics["epochs"] == 3


def test_last_checkpoint_is_the_last_finished_epoch_not_the_best(
    tiny_split: PreparedSplit, tmp_path: Path, text_cache: Path
) -> None:
    """With lr 0 validation never improves after epoch 0: best.ckpt stays there while last.ckpt follows every epoch
    (Lightning 2.6's own save_last would have left last.ckpt at the best epoch)."""
    result = train(
        config(tmp_path, text_cache, "model=mf", "fit.lr=0", "fit.max_epochs=3", "fit.patience=5"), split=tiny_split
    )
    epochs = {
        name: torch.load(result.run_dir / "checkpoints" / f"{name}.ckpt", map_location="cpu", weights_only=False)[
            "epoch"
        ]
        for name in ("best", "last")
    }
    assert epochs == {"best": 0, "last": 2}


def test_baseline_through_the_same_entry_point(tiny_split: PreparedSplit, tmp_path: Path, text_cache: Path) -> None:
    if not (config_dir() / "model" / "pop.yaml").is_file():
        pytest.skip("configs/model/pop.yaml (the popularity baseline) is not in the tree yet")
    result = train(config(tmp_path, text_cache, "model=pop"), split=tiny_split)
    assert (result.run_dir / "metrics.json").is_file()
    loaded = load_run(result.run_dir)  # baselines are refit, deterministically
    users = torch.arange(tiny_split.n_users)
    torch.testing.assert_close(loaded.model.score_all(users), result.model.score_all(users))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; CPU training is covered above")
def test_fast_dev_run_on_gpu(tiny_split: PreparedSplit, tmp_path: Path, text_cache: Path) -> None:
    result = train(config(tmp_path, text_cache, "model=lightgcn", "experiment=smoke", "trainer=gpu"), split=tiny_split)
    assert result.metrics["test"]["ndcg@10"] >= 0


@pytest.mark.slow
def test_two_epochs_of_mf_on_ml100k_beat_random(ml100k_split: PreparedSplit, tmp_path: Path, text_cache: Path) -> None:
    """Random scores give a validation NDCG@10 near 0.006 on ML-100K; two seeded epochs of MF clear 0.08 (about 0.12
    is typical; 8 negatives rather than the default 16 keep the test short)."""
    overrides = ["model=mf", "fit.max_epochs=2", "fit.negatives=8", "seed=0", "torch_threads=1", "logger={}"]
    result = train(config(tmp_path, text_cache, *overrides), split=ml100k_split)
    assert result.metrics["valid"]["ndcg@10"] > 0.08
