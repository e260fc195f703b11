"""The bundle in BentoML's model store, so ``bentoml build`` packs it and the service references it by tag.

The store entry is a copy of the bundle folder (no pickle: ``bentoml.models.create`` with files copied in); labels and
metadata come from the manifest. ``BENTOML_HOME`` decides where the store is (tests point it at a temporary folder).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from recstack.bundle.layout import MANIFEST, sha256_file
from recstack.bundle.reader import Bundle

DEFAULT_NAME = "recstack"


def _flat_metrics(metrics: dict[str, Any], prefix: str = "metric/") -> dict[str, float | int | str]:
    """Nested run metrics as flat primitive values (BentoML metadata values must be simple types)."""
    out: dict[str, float | int | str] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_flat_metrics(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


def save_to_store(bundle_dir: str | Path, name: str = DEFAULT_NAME) -> str:
    """Verify the bundle, copy it into the BentoML model store as ``name`` and return the new tag (``name:version``)."""
    import bentoml  # the serve extra; imported here so that reading bundles does not pull it in

    bundle_dir = Path(bundle_dir)
    bundle = Bundle.load(bundle_dir)  # never store a bundle that fails verification
    m = bundle.manifest
    labels = {
        "model_kind": m.model_kind,
        "dataset": m.dataset or "unknown",
        "split_hash": m.split_hash or "unknown",
        "format_version": str(m.format_version),
        "ranker": m.ranker.kind if m.ranker else "none",
    }
    metadata: dict[str, Any] = {
        "embedding_dim": m.embedding_dim,
        "n_users": m.n_users,
        "n_items": m.n_items,
        "index_factory": m.index.factory,
        "index_kind": m.index.kind,
        "created_at": m.created_at,
        "manifest_sha256": sha256_file(bundle_dir / MANIFEST),
        **_flat_metrics(m.metrics),
    }
    with bentoml.models.create(name, labels=labels, metadata=metadata) as model:
        for path in bundle_dir.iterdir():
            if path.is_file():
                shutil.copy2(path, Path(model.path) / path.name)
    return str(model.tag)


def bundle_path(tag: str) -> Path:
    """Folder of the bundle stored under ``tag`` (e.g. ``recstack:latest``); load it with :meth:`Bundle.load`."""
    import bentoml

    return Path(bentoml.models.get(tag).path)
