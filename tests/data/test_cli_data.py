"""The recstack-data CLI, run as a subprocess like a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from handmade import write_events_csv

from recstack.data.prepared import PreparedSplit


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recstack.cli.data", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": ""},
    )


def test_prepare_then_stats_on_an_event_log(tmp_path: Path) -> None:
    csv = write_events_csv(tmp_path / "events.csv")
    common = ["data=events", f"data.source.path={csv}", f"processed_root={tmp_path / 'processed'}"]
    done = cli("prepare", *common, "split=chrono", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    root = Path(done.stdout.strip().splitlines()[-1])
    split = PreparedSplit.load(root)
    assert split.manifest["config"]["split"]["name"] == "chrono" and split.n_users == 40
    shown = cli("stats", *common, "split=chrono", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "users                    40" in shown.stdout and f"{len(split.train):,}" in shown.stdout
    assert "reusing" in shown.stderr  # stats did not prepare again
    # Hydra's own files stay under outputs/hydra/, not in the working directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.csv", "outputs", "processed"]
    assert (tmp_path / "outputs" / "hydra" / "recstack-data").is_dir()


@pytest.mark.slow
def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    missing = cli("prepare", "data=events", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == (
        "recstack-data prepare: error: data.source.path is required (it is ??? in the config): "
        "add data.source.path=<value>"
    )
    nofile = cli("prepare", "data=events", f"data.source.path={tmp_path / 'nope.csv'}", cwd=tmp_path)
    assert nofile.returncode == 2 and "no such event log file" in nofile.stderr
    assert "Traceback" not in nofile.stderr
    bad = cli("prepare", "data=events", f"data.source.path={tmp_path}", "split.ratios=[0,1,1]", cwd=tmp_path)
    assert bad.returncode == 2 and "split.ratios" in bad.stderr and "Traceback" not in bad.stderr
    unknown = cli("frobnicate", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown command 'frobnicate'" in unknown.stderr
    group = cli("prepare", "data=nonexistent", cwd=tmp_path)
    assert group.returncode != 0 and "Could not find 'data/nonexistent'" in group.stderr
    assert "Traceback" not in group.stderr
    huge = cli("prepare", "data=synthetic", "data.source.n_interactions=100000000", "data.source.memory_budget_gib=2",
               f"processed_root={tmp_path / 'processed'}", cwd=tmp_path)  # fmt: skip
    assert huge.returncode == 2 and "Traceback" not in huge.stderr
    assert "needs about 13.0 GiB to generate and prepare" in huge.stderr and "memory_budget_gib=2" in huge.stderr
    assert not (tmp_path / "processed").exists()  # refused before anything was generated or written


@pytest.mark.slow
def test_stats_on_ml100k(tmp_path: Path) -> None:
    done = cli("stats", "data=ml100k", f"processed_root={tmp_path}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "users                   943" in done.stdout
    assert "items                 1,682" in done.stdout
    assert "100,000" in done.stdout
