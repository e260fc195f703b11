"""``recstack-auto data=<d> budget=<t>``: the Hydra entry point around :func:`recstack.auto.auto.auto`."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from recstack.config import config_dir


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="auto")
def main(cfg: DictConfig) -> None:
    from recstack.auto.auto import auto, summary
    from recstack.cli.export import erasures_from_config

    try:
        result = auto(cfg, erasures=lambda: erasures_from_config(cfg.export.erasure))
    except ValueError as error:  # bad input (and refused erasures): one line, no traceback
        raise SystemExit(f"recstack-auto: error: {error}") from None
    print(summary(result))
    if result.winner is None:  # no candidate completed a trial: nothing to use
        sys.exit(1)


if __name__ == "__main__":
    main()
