"""Real studies (real Optuna, real SQLite, real training) on a small synthetic split (conftest.py): outputs, test read
once, resume, reproducibility, pruning."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from recstack.config import compose
from recstack.data.prepared import PreparedSplit
from recstack.training.train import train
from recstack.tuning import space
from recstack.tuning.objective import read_record
from recstack.tuning.study import StudyIdentity, open_study
from recstack.tuning.tune import tune

pytestmark = pytest.mark.slow


def rerun_valid_ndcg(tmp_path: Path, experiment: Path, *overrides: str) -> float:
    """Train the experiment file again (validation only) and return its valid NDCG@10."""
    cfg = compose(
        "train",
        [
            f"hydra.searchpath=[file://{experiment.parents[1]}]",
            f"experiment={experiment.stem}",
            f"runs_root={tmp_path / 'reruns'}",
            "evaluate_test=false",
            "progress=false",
            "logger=none",
            "torch_threads=1",
            *overrides,
        ],
    )
    return float(train(cfg).metrics["valid"]["ndcg@10"])


def test_ease_study_outputs_resume_and_reproduce(tune_config, synthetic_split: PreparedSplit, tmp_path: Path) -> None:
    first = tune(tune_config("model=ease", "trials=2", "budget=2m"), split=synthetic_split)
    assert first.counts == {"complete": 2, "pruned": 0, "fail": 0}
    winner_file = first.study_dir / "winner.json"
    assert first.winner is not None and set(first.winner.test) >= {"ndcg@10", "recall@10", "map@10"}

    # The same command again resumes the study from its SQLite file: one more trial, not three.
    result = tune(tune_config("model=ease", "trials=3", "budget=2m"), split=synthetic_split)
    assert result.study_name == first.study_name == f"synthetic-ease-{synthetic_split.config_hash}"
    assert result.counts == {"complete": 3, "pruned": 0, "fail": 0}
    study = optuna.load_study(study_name=result.study_name, storage=result.storage)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert study.user_attrs["dataset"] == "synthetic" and study.user_attrs["split_hash"] == synthetic_split.config_hash

    # Test is read once, for the winner only: no trial's metrics.json holds test figures.
    for t in study.trials:
        run = Path(t.user_attrs["run_dir"])
        assert json.loads((run / "metrics.json").read_text())["test"] is None
        record = read_record(run)
        assert (record.study_name, record.trial_number, record.seed, record.split_hash) == (
            result.study_name,
            t.number,
            42,
            synthetic_split.config_hash,
        )
        assert record.params == t.params
    winner = json.loads(winner_file.read_text())
    assert winner["trial_number"] == result.best_trial and winner["valid"]["ndcg@10"] == result.best_value

    html = result.report.read_text()
    for part in ("Optimisation history", "Parameter importances", "Top trials", "<svg", "model.l2", "read once"):
        assert part in html, part
    assert result.experiment.name == "synthetic_ease_tuned.yaml"
    text = result.experiment.read_text()
    assert text.startswith("# @package _global_") and "override /model: ease" in text

    # Rerunning the best trial's configuration reproduces its validation metric.
    assert (
        abs(
            rerun_valid_ndcg(
                tmp_path, result.experiment, "data=synthetic", f"processed_root={synthetic_split.root.parents[1]}"
            )
            - result.best_value
        )
        < 0.002
    )


def test_mf_trials_prune_and_reproduce(tune_config, synthetic_split: PreparedSplit, tmp_path: Path) -> None:
    overrides = [
        "model=mf",
        "fit.max_epochs=2",
        "fit.negatives=4",
        "pruner.n_startup_trials=1",
        "pruner.n_warmup_steps=0",
    ]
    cfg = tune_config(*overrides, "trials=2", "budget=3m")
    # Queue a sound trial and then one whose learning rate is far too low: the second is pruned after its first epoch.
    params = space.parse_space(cfg.tune.space, cfg.model, cfg.fit, source="mf")
    identity = StudyIdentity("synthetic", "mf", synthetic_split.config_hash, space.space_hash(params))
    name = identity.default_name()
    storage = f"sqlite:///{tmp_path / 'studies' / name / 'study.db'}"
    (tmp_path / "studies" / name).mkdir(parents=True)
    study = open_study(name, storage, identity, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner())
    sound = {"fit.lr": 1e-2, "model.reg_weight": 3e-2, "model.temperature": 0.7, "fit.negatives": 16}
    study.enqueue_trial(sound)
    study.enqueue_trial({**sound, "fit.lr": 1e-4})

    result = tune(cfg, split=synthetic_split)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert sorted(trials[0].intermediate_values) == [0, 1]  # reported every epoch
    assert result.best_trial == 0 and result.counts == {"complete": 1, "pruned": 1, "fail": 0}
    record = read_record(trials[0].user_attrs["run_dir"])
    assert record.params == sound and record.seed == 42

    # Rerun of the best trial (2 epochs of MF, one thread, same seed): the same validation metric.
    rerun = rerun_valid_ndcg(
        tmp_path, result.experiment, "data=synthetic", f"processed_root={synthetic_split.root.parents[1]}"
    )
    assert abs(rerun - result.best_value) < 0.002


def test_a_study_database_of_another_model_is_refused(
    tune_config, synthetic_split: PreparedSplit, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    tune(tune_config("model=ease", "trials=1", f"storage={storage}"), split=synthetic_split)
    with pytest.raises(
        ValueError, match=r"holds study 'synthetic-ease-.*' of another .*model: 'ease' there, 'itemknn' here"
    ):
        tune(tune_config("model=itemknn", "trials=1", f"storage={storage}"), split=synthetic_split)
    study = optuna.load_study(study_name=f"synthetic-ease-{synthetic_split.config_hash}", storage=storage)
    assert len(study.trials) == 1 and len(optuna.get_all_study_summaries(storage)) == 1
