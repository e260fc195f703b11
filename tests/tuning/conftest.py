"""Helpers of the tuning tests: a small synthetic split, and the tune config composed on it with every output under
the test's folder.

The studies here test mechanics (outputs, resume, budget, pruning, parallel trials, the test split read once), not
how good a tuned model is, so they run on ``data=synthetic`` (200 users x 100 items, about 4,000 training rows): a
trial takes a fraction of a second, so process start-up is most of a test's time. ``recstack-tune`` on ML-100K is
benchmarks/tune.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig

from recstack.config import compose, prepare_named
from recstack.data.prepared import PreparedSplit

DATA = "synthetic"


@pytest.fixture(scope="session")
def synthetic_split(tmp_path_factory: pytest.TempPathFactory) -> PreparedSplit:
    """``data=synthetic split=random``, prepared once per session; ``data=synthetic processed_root=<its
    root.parents[1]>`` finds it again (a rerun, or ``recstack-tune`` in a subprocess)."""
    return prepare_named(DATA, "random", out_root=tmp_path_factory.mktemp("processed"))


@pytest.fixture
def tune_config(tmp_path: Path, synthetic_split: PreparedSplit):
    """``compose("tune", ...)`` on :func:`synthetic_split`, writing studies under ``tmp_path/studies`` and experiment
    files under ``tmp_path/configs/experiment`` (a Hydra search path for ``experiment=`` in the reruns)."""

    def make(*overrides: str) -> DictConfig:
        return compose(
            "tune",
            [
                f"data={DATA}",
                f"study_root={tmp_path / 'studies'}",
                f"experiment_dir={tmp_path / 'configs' / 'experiment'}",
                f"processed_root={synthetic_split.root.parents[1]}",
                "torch_threads=1",
                *overrides,
            ],
        )

    return make
