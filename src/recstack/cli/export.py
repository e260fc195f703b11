"""``recstack-export run=<run-dir> [ranker_run=<dir>] index=hnsw [out=data/bundles/<name>] [store=true]``.

The Hydra entry point (``configs/export.yaml``) of three steps, in this order so that each one's package only points
down: :func:`recstack.export.exporter.export_run` writes the bundle, without the users erased since training
(``erasure``: the lake's audit and the collector's Redis tombstones, :func:`erasures_from_config`); with a ranker,
:func:`recstack.offline.blend.tune_and_record` tunes its blend weight on the validation split through the served
pipeline and records it in the manifest; ``store=true`` then saves the finished bundle to the BentoML model store.

An export that cannot leave the erased users out, or would write a bundle still holding one, is refused: one line on
stderr, exit status 2, no bundle written (:class:`~recstack.export.erasure.ErasureError`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from recstack.config import collect_settings, config_dir

if TYPE_CHECKING:
    from recstack.export.content_section import ContentOptions
    from recstack.export.erasure import Erasures

log = logging.getLogger(__name__)
EXIT_REFUSED = 2


def erasures_from_config(node: DictConfig) -> Erasures:
    """Who has been erased (``cfg.erasure``; null keys: the collector's settings) and the pseudonymisation key.

    Raises :class:`~recstack.export.erasure.ErasureError` when someone has been erased but no key is configured."""
    from recstack.collect.records import StreamNames
    from recstack.export.erasure import ErasureError, Erasures, erased_subjects

    settings = collect_settings()
    lake = settings.lake_path if node.get("lake") is None else Path(str(node.lake))
    redis_url = settings.redis_url if node.get("redis_url") is None else str(node.redis_url)
    names = settings.names if node.get("stream") is None else StreamNames(str(node.stream), settings.group)
    subjects = erased_subjects(lake, redis_url or None, names)
    try:
        key: bytes | None = settings.hmac_key()
    except ValueError as exc:
        if subjects:
            raise ErasureError(
                f"{len(subjects)} subject(s) have been erased, but {exc}: without the collector's key the bundle's "
                "raw user ids cannot be checked against their pseudonyms"
            ) from None
        key = None
    log.info("erasure: %d erased subject(s) on record (lake %s)", len(subjects), lake)
    return Erasures(subjects, key)


def content_from_config(node: DictConfig | None, parity_samples: int, seed: int) -> ContentOptions | None:
    """``cfg.content`` as :class:`~recstack.export.content_section.ContentOptions`, with the items upserted live read
    from the collector's Redis (``content.redis_url: ""`` reads none; Redis unreachable: a warning and none, since a
    server applies them on top of the bundle anyway)."""
    if node is None or not node.get("enabled", False):
        return None
    import redis

    from recstack.collect.catalogue import items_key, read_upserts
    from recstack.collect.records import StreamNames
    from recstack.export.content_section import ContentOptions
    from recstack.retrieval.index import IndexConfig

    settings = collect_settings()
    redis_url = settings.redis_url if node.get("redis_url") is None else str(node.redis_url)
    names = settings.names if node.get("stream") is None else StreamNames(str(node.stream), settings.group)
    upserts = []
    if redis_url:
        try:
            upserts = read_upserts(redis_url, names)
        except (redis.RedisError, OSError) as exc:
            log.warning("items upserted live not read (%s: %s); servers apply them at start", items_key(names), exc)
        else:
            log.info("content: %d item(s) upserted live (%s)", len(upserts), items_key(names))
    index = IndexConfig.from_mapping(OmegaConf.to_container(node.index, resolve=True))  # type: ignore[arg-type]
    return ContentOptions(index_config=index, upserts=tuple(upserts), parity_samples=parity_samples, seed=seed)


def export_from_config(cfg: DictConfig) -> Path:
    """Run the export ``cfg`` (composed ``configs/export.yaml``) describes; returns the bundle folder."""
    from recstack.export.exporter import export_run
    from recstack.retrieval.index import IndexConfig

    erasures = erasures_from_config(cfg.erasure)  # first: a missing key fails before the run is loaded
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
        erasures=erasures,
        content=content_from_config(cfg.get("content"), int(cfg.parity_samples), int(cfg.seed)),
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
    from recstack.export.erasure import ErasureError

    try:
        out = export_from_config(cfg)
    except ErasureError as exc:
        print(f"recstack-export: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    print(f"bundle: {out}")


if __name__ == "__main__":
    main()
