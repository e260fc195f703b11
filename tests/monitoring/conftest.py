"""Monitoring fixtures: ``builder``, a fixture lake of impressions and events (monitor_support.LakeBuilder) under the
test's temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from monitor_support import LakeBuilder


@pytest.fixture
def builder(tmp_path: Path) -> LakeBuilder:
    root = tmp_path / "lake"
    root.mkdir()
    return LakeBuilder(root=root)
