"""``recstack-export run=<run-dir> [ranker_run=<dir>] index=hnsw [out=data/bundles/<name>] [store=true]``.

The Hydra entry point around :func:`recstack.export.exporter.export_run` (``configs/export.yaml``).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from recstack.config import config_dir


def export_from_config(cfg: DictConfig) -> Path:
    """Run the export ``cfg`` (composed ``configs/export.yaml``) describes; returns the bundle folder."""
    from recstack.export.exporter import export_run
    from recstack.retrieval.index import IndexConfig

    run = Path(cfg.run)
    out = Path(cfg.out) if cfg.get("out") else Path("data/bundles") / run.name
    index = IndexConfig.from_mapping(OmegaConf.to_container(cfg.index, resolve=True))  # type: ignore[arg-type]
    return export_run(
        run,
        out,
        index_config=index,
        ranker_run=cfg.get("ranker_run"),
        store=bool(cfg.store),
        store_name=str(cfg.store_name),
        text=bool(cfg.text),
        parity_samples=int(cfg.parity_samples),
        seed=int(cfg.seed),
    )


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
def main(cfg: DictConfig) -> None:
    out = export_from_config(cfg)
    print(f"bundle: {out}")


if __name__ == "__main__":
    main()
