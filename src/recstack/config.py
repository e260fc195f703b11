"""Where the Hydra config tree lives, composing it from Python (tests, notebooks, the demo), and turning a composed
config into the plain typed arguments of the layers below (:func:`split_spec`): Hydra objects stop here and in cli/.

The tree is the repository's top-level ``configs/`` folder. An installed copy elsewhere can be pointed at with
``RECSTACK_CONFIG_DIR``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

if TYPE_CHECKING:
    from recstack.collect.settings import CollectSettings
    from recstack.data.build_split import SplitSpec
    from recstack.data.prepared import PreparedSplit


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


def split_spec(cfg: DictConfig) -> SplitSpec:
    """The typed :class:`~recstack.data.build_split.SplitSpec` of a composed config's ``data`` and ``split`` groups
    (``configs/prepare.yaml``, ``configs/train.yaml``, ...); ``data.source`` is instantiated only when the split has
    to be built."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from recstack.data.build_split import SplitSpec

    if "data" not in cfg or "split" not in cfg:
        raise ValueError("prepare needs a config with `data` and `split` groups (compose configs/prepare.yaml)")
    if "source" not in cfg.data:
        raise ValueError(
            "data.source is missing: it must name a loader, e.g. _target_: recstack.data.sources.load_dataset"
        )
    data = OmegaConf.to_container(cfg.data, resolve=True)
    split = OmegaConf.to_container(cfg.split, resolve=True)
    assert isinstance(data, dict) and isinstance(split, dict)
    source = cfg.data.source
    return SplitSpec.from_config(data, split, load=lambda: instantiate(source, _convert_="all"))  # type: ignore[arg-type]


def engine_node(cfg: DictConfig) -> dict | None:
    """A composed config's ``engine`` group (``configs/engine/``) as plain data for
    :func:`recstack.data.engines.engine_from_config`; None when the config has none (the embedded default)."""
    from omegaconf import OmegaConf

    node = cfg.get("engine")
    return None if node is None else OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def prepare_from_config(
    cfg: DictConfig, *, out_root: str | Path | None = None, force: bool = False, progress: bool = True
) -> PreparedSplit:
    """:func:`~recstack.data.build_split.prepare` the split a composed config describes, under ``out_root`` (else the
    config's ``processed_root``, else ``data/processed``)."""
    from recstack.data.build_split import DEFAULT_ROOT, prepare

    root = out_root if out_root is not None else cfg.get("processed_root") or DEFAULT_ROOT
    return prepare(split_spec(cfg), out_root=root, force=force, progress=progress)


def prepare_named(
    data: str = "ml100k",
    split: str = "random",
    overrides: Sequence[str] = (),
    out_root: str | Path | None = None,
    force: bool = False,
) -> PreparedSplit:
    """Compose ``configs/prepare.yaml`` with ``data=<data> split=<split> *overrides`` and prepare it."""
    cfg = compose("prepare", [f"data={data}", f"split={split}", *overrides])
    return prepare_from_config(cfg, out_root=out_root, force=force or bool(cfg.get("force", False)))


def collect_settings(cfg: DictConfig | Sequence[str] = ()) -> CollectSettings:
    """The collector's typed settings from a composed ``collector`` node, or from ``configs/collector/default.yaml``
    with ``key=value`` overrides (tests, scripts, recstack-collect)."""
    from omegaconf import OmegaConf

    from recstack.collect.settings import CollectSettings

    if not isinstance(cfg, DictConfig):
        node = OmegaConf.load(config_dir() / "collector" / "default.yaml")
        node.merge_with_dotlist(list(cfg))
        cfg = node  # type: ignore[assignment]
    return CollectSettings.model_validate(OmegaConf.to_container(cfg, resolve=True))
