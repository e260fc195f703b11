"""Helpers of the tuning tests: the tune config composed with every output under the test's folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig

from recstack.config import compose
from recstack.data.prepared import PreparedSplit


@pytest.fixture
def tune_config(tmp_path: Path, ml100k_split: PreparedSplit):
    """``compose("tune", ...)`` writing studies under ``tmp_path/studies`` and experiment files under
    ``tmp_path/configs/experiment`` (a Hydra search path for ``experiment=`` in the reruns)."""

    def make(*overrides: str) -> DictConfig:
        return compose(
            "tune",
            [
                f"study_root={tmp_path / 'studies'}",
                f"experiment_dir={tmp_path / 'configs' / 'experiment'}",
                f"processed_root={ml100k_split.root.parents[1]}",
                "torch_threads=1",
                *overrides,
            ],
        )

    return make
