"""``recstack-export run=<run-dir> [ranker_run=<dir>] index=hnsw [seen=all] [out=data/bundles/<name>] [store=true]``.

``ranker_run``: a Wide & Deep run (the ONNX ranker) or an EASE run (the item-item ranker, within
``item_item.max_memory_gb``).

The Hydra entry point (``configs/export.yaml``) of three steps, in this order so that each one's package only points
down: :func:`recstack.export.from_config.export_bundle_from_config` writes the bundle (seen-items lists as ``seen``
says), without the users erased since training (``erasure``: the lake's audit and the collector's Redis tombstones);
with a ranker, :func:`tune_blend` tunes its blend weight on the validation split through the served pipeline and
records it in the manifest; ``store=true`` then saves the finished bundle to the BentoML model store.

An export that cannot leave the erased users out, or would write a bundle still holding one, is refused: one line on
stderr, exit status 2, no bundle written (:class:`~recstack.export.erasure.ErasureError`); likewise an item-item
ranker beyond ``item_item.max_memory_gb`` (:class:`~recstack.export.exporter.ExportError`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from recstack.config import config_dir
from recstack.export.from_config import content_from_config, erasures_from_config

if TYPE_CHECKING:
    from recstack.bundle.manifest import Blend

__all__ = [
    "content_from_config",
    "erasures_from_config",
    "export_from_config",
    "folds_in_validation",
    "main",
    "tune_blend",
]

log = logging.getLogger(__name__)
EXIT_REFUSED = 2


def tune_blend(bundle_dir: Path, run: Path) -> Blend | None:
    """Tune the ranker's blend weight on the run's validation split and record it in the bundle; None (a warning)
    for a refit run, whose validation interactions are training data (a refit takes the weight tuned on the
    validation run: ``recstack-retrain`` does).

    Whatever ``seen`` put in the bundle's seen lists, the weight is judged against the split's training items
    (:func:`~recstack.offline.blend.tune_blend_weight` masks by the split, not by the bundle's lists)."""
    from recstack.offline.blend import tune_and_record
    from recstack.training.refit import is_refit
    from recstack.training.runs import CONFIG_FILE, load_split

    run_cfg = OmegaConf.load(run / CONFIG_FILE)
    assert isinstance(run_cfg, DictConfig)
    if is_refit(run_cfg):
        log.warning(
            "%s is a refit (its validation interactions are training data): the blend weight is not tuned; the "
            "pipeline uses the ranker alone unless a weight tuned on the validation run is recorded",
            run,
        )
        return None
    return tune_and_record(bundle_dir, load_split(run_cfg))


def folds_in_validation(cfg: DictConfig) -> bool:
    """Whether the bundle ``cfg`` exports has its retrieval model read the validation interactions (``fold_in`` with
    ``seen`` other than ``train``), so that no blend weight can be judged on it."""
    return bool(cfg.get("fold_in", False)) and str(cfg.seen) != "train"


def _tune_without_fold_in(cfg: DictConfig, out: Path) -> Blend | None:
    """The blend weight tuned on the same export with ``seen=train`` (the training graph: what the validation run
    knew), then recorded in the bundle at ``out``."""
    import copy
    import tempfile

    from omegaconf import open_dict

    from recstack.bundle.writer import record_blend
    from recstack.export.from_config import export_bundle_from_config

    tuning = copy.deepcopy(cfg)
    with tempfile.TemporaryDirectory(prefix="recstack-blend-") as tmp:
        with open_dict(tuning):
            tuning.seen, tuning.out, tuning.text, tuning.store = "train", str(Path(tmp) / "bundle"), False, False
            if tuning.get("content") is not None:
                tuning.content.enabled = False
        log.info("fold-in over seen=%s: the blend weight is tuned on a seen=train export of the same runs", cfg.seen)
        blend = tune_blend(export_bundle_from_config(tuning), Path(cfg.run))
    if blend is not None:
        record_blend(out, blend)
    return blend


def export_from_config(cfg: DictConfig) -> Path:
    """Run the export ``cfg`` (composed ``configs/export.yaml``) describes; returns the bundle folder."""
    from recstack.export.from_config import export_bundle_from_config

    out = export_bundle_from_config(cfg)
    if cfg.get("ranker_run"):
        blend = _tune_without_fold_in(cfg, out) if folds_in_validation(cfg) else tune_blend(out, Path(cfg.run))
        if blend is not None:
            log.info("re-ranker blend weight %.1f (%s %s)", blend.weight, blend.metric, blend.scores)
            if blend.content_trust is not None:
                log.info("content trust %.2f for cold items (%s)", blend.content_trust, dict(blend.content_grid))
    if cfg.store:
        from recstack.export.model_store import save_to_store

        tag = save_to_store(out, name=str(cfg.store_name))
        log.info("bundle saved to the BentoML model store as %s", tag)
    return out


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
def main(cfg: DictConfig) -> None:
    from recstack.bundle.layout import BundleError
    from recstack.export.erasure import ErasureError
    from recstack.export.exporter import ExportError

    try:
        out = export_from_config(cfg)
    except (BundleError, ErasureError, ExportError) as exc:
        print(f"recstack-export: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    print(f"bundle: {out}")


if __name__ == "__main__":
    main()
