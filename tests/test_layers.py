"""Package layering: the import-linter contracts in pyproject.toml (layers, torch-free serving path, no Hydra below
the config layer) hold for the whole of src/recstack, function-level imports included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_import_contracts_are_kept() -> None:
    assert LINT_IMPORTS.is_file(), f"{LINT_IMPORTS} is missing: install the dev extra (pip install -e '.[dev]')"
    out = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
