"""``recstack-evaluate``: the plain function on composed configs, and the console script on ML-100K."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recstack.cli.evaluate import evaluate_models
from recstack.config import compose


def _cfg(tmp_path: Path, *overrides: str):
    processed = tmp_path / "processed"
    return compose(
        "evaluate",
        [f"processed_root={processed}", f"out_dir={tmp_path / 'report'}", "progress=false", *overrides],
    )


@pytest.mark.slow
def test_models_on_ml100k_write_the_report(tmp_path: Path) -> None:
    paths = evaluate_models(_cfg(tmp_path, "models=[pop,itemknn]"))
    data = json.loads(paths.metrics_json.read_text())
    assert [r["name"] for r in data["runs"]] == ["pop", "itemknn"]
    assert data["dataset"] == "ml-100k" and data["stage"] == "test" and data["n_users_evaluated"] == 943
    assert data["runs"][1]["metrics"]["ndcg@10"] > data["runs"][0]["metrics"]["ndcg@10"]
    assert len(data["runs"][0]["curves"]["recall"]) == 50
    assert {"training interactions", "age", "gender", "occupation"} <= set(data["segments"])
    assert data["verdict"].startswith("itemknn wins overall")


def test_bad_requests_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate_models(_cfg(tmp_path))
    with pytest.raises(ValueError, match="available"):
        evaluate_models(_cfg(tmp_path, "models=[no_such_model]"))
    with pytest.raises(ValueError, match="recstack-train model=mf"):
        evaluate_models(_cfg(tmp_path, "models=[mf]"))


def _train_pop_run(tmp_path: Path, name: str, *overrides: str) -> Path:
    from recstack.training.train import train

    run_dir = tmp_path / "runs" / name
    cfg = compose(
        "train",
        [
            "model=pop",
            f"run_dir={run_dir}",
            f"processed_root={tmp_path / 'processed'}",
            "progress=false",
            "logger=none",
            *overrides,
        ],
    )
    train(cfg)
    return run_dir


@pytest.mark.slow
def test_trained_runs_are_loaded_and_runs_of_other_splits_refused(tmp_path: Path) -> None:
    pytest.importorskip("recstack.training.runs")
    a = _train_pop_run(tmp_path, "pop-a")
    paths = evaluate_models(_cfg(tmp_path, f"runs=[{a}]", "models=[itemknn]"))
    data = json.loads(paths.metrics_json.read_text())
    assert [r["name"] for r in data["runs"]] == ["pop-a", "itemknn"]
    b = _train_pop_run(tmp_path, "pop-b", "split.seed=7")
    with pytest.raises(ValueError, match="different splits"):
        evaluate_models(_cfg(tmp_path, f"runs=[{a},{b}]"))


@pytest.mark.slow
def test_console_script_on_ml100k(tmp_path: Path) -> None:
    out = tmp_path / "report"
    env = {**os.environ, "RECSTACK_DATA_HOME": os.environ.get("RECSTACK_DATA_HOME", "data/raw")}
    script = Path(sys.executable).with_name("recstack-evaluate")
    done = subprocess.run(
        [str(script), "models=[pop]", f"processed_root={tmp_path / 'processed'}", f"out_dir={out}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"out_dir: {out}" in done.stdout
    for name in ("report.html", "report.md", "metrics.json"):
        assert (out / name).is_file()
    assert "Popularity bias" in (out / "report.html").read_text()
