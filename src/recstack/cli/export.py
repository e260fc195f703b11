"""``recstack-export run=<run-dir> [ranker_run=<dir>] index=hnsw [out=data/bundles/<name>] [store=true]``.

The Hydra entry point (``configs/export.yaml``) of three steps, in this order so that each one's package only points
down: :func:`recstack.export.exporter.export_run` writes the bundle; with a ranker,
:func:`recstack.offline.blend.tune_and_record` tunes its blend weight on the validation split through the served
pipeline and records it in the manifest; ``store=true`` then saves the finished bundle to the BentoML model store.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from recstack.config import config_dir

log = logging.getLogger(__name__)


def export_from_config(cfg: DictConfig) -> Path:
    """Run the export ``cfg`` (composed ``configs/export.yaml``) describes; returns the bundle folder."""
    from recstack.export.exporter import export_run
    from recstack.retrieval.index import IndexConfig

    run = Path(cfg.run)
    out = Path(cfg.out) if cfg.get("out") else Path("data/bundles") / run.name
    index = IndexConfig.from_mapping(OmegaConf.to_container(cfg.index, resolve=True))  # type: ignore[arg-type]
    out = export_run(
        run,
        out,
        index_config=index,
        ranker_run=cfg.get("ranker_run"),
        text=bool(cfg.text),
        parity_samples=int(cfg.parity_samples),
        seed=int(cfg.seed),
    )
    if cfg.get("ranker_run"):
        from recstack.offline.blend import tune_and_record
        from recstack.training.runs import CONFIG_FILE, load_split

        run_cfg = OmegaConf.load(run / CONFIG_FILE)
        assert isinstance(run_cfg, DictConfig)
        blend = tune_and_record(out, load_split(run_cfg))
        log.info("re-ranker blend weight %.1f (%s %s)", blend.weight, blend.metric, blend.scores)
    if cfg.store:
        from recstack.export.model_store import save_to_store

        tag = save_to_store(out, name=str(cfg.store_name))
        log.info("bundle saved to the BentoML model store as %s", tag)
    return out


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
def main(cfg: DictConfig) -> None:
    out = export_from_config(cfg)
    print(f"bundle: {out}")


if __name__ == "__main__":
    main()
