"""``recstack-tune model=mf budget=20m``: the Hydra entry point around :func:`recstack.tuning.tune.tune`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from recstack.config import config_dir


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="tune")
def main(cfg: DictConfig) -> None:
    from recstack.tuning.tune import summary, tune

    try:
        result = tune(cfg)
    except ValueError as error:  # bad input: one line, no traceback
        raise SystemExit(f"recstack-tune: error: {error}") from None
    print(summary(result))


if __name__ == "__main__":
    main()
