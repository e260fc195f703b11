"""The winner's record (winner/provenance.json, and auto.json's winner_provenance): the real recstack-auto app on the
tiny synthetic data, then each recorded part trained again with its recorded command, to the same validation NDCG@10.

The app runs in a subprocess because the data / split choices the commands name are known inside it only."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from test_auto import FAST  # tests/auto is on sys.path (pytest prepend import mode)

from recstack.auto.provenance import PROVENANCE_FILE, read_provenance
from recstack.config import compose
from recstack.training.train import train

pytestmark = pytest.mark.slow

# A trained winner: its command must also hold the epochs its trial ran (here EASE usually wins test_auto's set).
MF_ONLY = [
    "data=synthetic",
    "models=[mf]",
    "two_stage=false",
    "export.enabled=false",
    "torch_threads=1",
    "deep_trials=2",
    "+per_model.mf.tune.min_trial=2s",
    "+per_model.mf.fit.max_epochs=3",
]


# No per_model settings at all (the default: an empty node), and an untuned winner.
POP_ONLY = ["data=synthetic", "models=[pop]", "two_stage=false", "export.enabled=false"]


@pytest.mark.parametrize("settings", [FAST, MF_ONLY, POP_ONLY], ids=["test_auto-set", "mf-only", "pop-only"])
def test_the_winners_record_trains_it_again_to_the_same_validation_score(tmp_path: Path, settings: list[str]) -> None:
    out = tmp_path / "auto"
    command = [
        sys.executable,
        "-m",
        "recstack.cli.auto",
        *settings,
        "budget=2m",
        f"processed_root={tmp_path / 'processed'}",
        f"out={out}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    record = read_provenance(out / "winner" / PROVENANCE_FILE)
    summary = json.loads((out / "auto.json").read_text())
    assert summary["winner_provenance"] == json.loads((out / "winner" / PROVENANCE_FILE).read_text())
    winner = summary["candidates"][0]
    assert (record.dataset, record.seed, record.winner) == ("synthetic", 42, summary["winner"])
    assert record.split_hash == summary["split_hash"] and record.note == ""
    assert record.valid_ndcg_at_10 == winner["valid_score"]
    assert len(record.parts) == (2 if winner["parts"] else 1)
    assert record.blend_weight == winner["blend_weight"]
    by_name = {c["name"]: c for c in summary["candidates"]}

    for part in record.parts:
        found = by_name[part.candidate]
        assert part.valid_ndcg_at_10 == found["valid_score"] and part.run_dir == found["run_dir"]
        assert shlex.split(part.command) == ["recstack-train", *part.overrides]
        assert "data=synthetic" in part.overrides and "split=random" in part.overrides
        if part.trial is not None:  # a tuned candidate: its best trial, as its study holds it
            trial = part.trial
            assert (trial.dataset, trial.split_hash, trial.seed) == ("synthetic", record.split_hash, 42)
            study = optuna.load_study(study_name=trial.study_name, storage=part.storage)
            assert study.best_trial.number == trial.trial_number == found["best_trial"]
            assert study.best_trial.params == trial.params == found["params"]
            assert part.experiment is not None and f"experiment={Path(part.experiment).stem}" in part.overrides
        if found["epochs"] is not None:  # trained: as many epochs as its trial
            assert part.overrides[-1] == f"fit.max_epochs={found['epochs']}"
        # The recorded command, composed from Python; validation only, nothing written beside the auto run.
        cfg = compose(
            "train",
            [
                *part.overrides,
                f"runs_root={tmp_path / 'reruns'}",
                "evaluate_test=false",
                "progress=false",
                "logger=none",
            ],
        )
        rerun = float(train(cfg).metrics["valid"]["ndcg@10"])
        assert abs(rerun - part.valid_ndcg_at_10) < 0.002, (part.command, rerun)
