"""A composed ``configs/export.yaml`` as the typed arguments of :func:`recstack.export.exporter.export_run`, and the
export it describes: one home for ``recstack-export`` and for the jobs that export on their own (``recstack-retrain``).

What comes after the bundle is written (tuning the ranker's blend weight through the served pipeline, saving to the
BentoML model store) sits in the layers that may do it: ``recstack.cli.export`` and ``recstack.retrain``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from recstack.config import collect_settings

if TYPE_CHECKING:
    from recstack.export.content_section import ContentOptions
    from recstack.export.erasure import Erasures

log = logging.getLogger(__name__)
DEFAULT_BUNDLES_ROOT = Path("data/bundles")


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


def bundle_dir(cfg: DictConfig) -> Path:
    """Where the bundle goes: ``cfg.out``, else ``data/bundles/<run folder name>``."""
    return Path(cfg.out) if cfg.get("out") else DEFAULT_BUNDLES_ROOT / Path(cfg.run).name


def export_bundle_from_config(cfg: DictConfig) -> Path:
    """Write the bundle ``cfg`` (a composed ``configs/export.yaml``) describes, without the users erased since
    training; returns its folder. Neither the blend weight nor the model store: see the module docstring."""
    from recstack.bundle.item_item import DEFAULT_MAX_MEMORY_GB
    from recstack.export.exporter import export_run
    from recstack.retrieval.index import IndexConfig

    erasures = erasures_from_config(cfg.erasure)  # first: a missing key fails before the run is loaded
    index = IndexConfig.from_mapping(OmegaConf.to_container(cfg.index, resolve=True))  # type: ignore[arg-type]
    return export_run(
        Path(cfg.run),
        bundle_dir(cfg),
        index_config=index,
        ranker_run=cfg.get("ranker_run"),
        text=bool(cfg.text),
        parity_samples=int(cfg.parity_samples),
        seed=int(cfg.seed),
        erasures=erasures,
        content=content_from_config(cfg.get("content"), int(cfg.parity_samples), int(cfg.seed)),
        seen=str(cfg.seen),  # type: ignore[arg-type]  # export_run refuses a value outside SEEN_OPTIONS
        item_item_max_memory_gb=float((cfg.get("item_item") or {}).get("max_memory_gb", DEFAULT_MAX_MEMORY_GB)),
        fold_in=bool(cfg.get("fold_in", False)),
    )
