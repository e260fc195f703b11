"""``recstack-train model=lightgcn data=ml100k``: the Hydra entry point around :func:`recstack.training.train.train`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from recstack.config import config_dir


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from omegaconf import OmegaConf

    from recstack.hybrids.parts import check_config_parts
    from recstack.training.faults import explain_lost_ranks
    from recstack.training.train import train

    # A hybrid naming an unknown base model fails here, before minutes of data preparation.
    check_config_parts(OmegaConf.to_container(cfg.model, resolve=True))  # type: ignore[arg-type]
    with explain_lost_ranks():  # a data-parallel run whose other rank died: one clear line, not a traceback
        result = train(cfg)
    # Returned for Hydra sweepers (e.g. Optuna) that optimise a value (a refit has none: refit.epochs).
    return (result.metrics["valid"] or {}).get("ndcg@10")


if __name__ == "__main__":
    main()
