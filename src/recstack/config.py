"""Where the Hydra config tree lives, and composing it from Python (tests, notebooks, the demo).

The tree is the repository's top-level ``configs/`` folder. An installed copy elsewhere can be pointed at with
``RECSTACK_CONFIG_DIR``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig


def config_dir() -> Path:
    """Absolute path of the config tree (``$RECSTACK_CONFIG_DIR``, else the repository's ``configs/``)."""
    env = os.environ.get("RECSTACK_CONFIG_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "configs")
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    raise FileNotFoundError(
        f"recstack config tree not found (looked in {[str(p) for p in candidates]}); "
        "set RECSTACK_CONFIG_DIR to the repository's configs/ folder"
    )


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides, outside any Hydra app (no cwd change, no logs)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))
