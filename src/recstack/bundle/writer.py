"""Writing a bundle (layout in :mod:`recstack.bundle.layout`): export calls :func:`write_bundle`, blend tuning calls
:func:`record_blend`. Nothing else writes into a bundle folder."""

from __future__ import annotations

import os
import platform
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recstack.bundle.content import check_content_items
from recstack.bundle.contract import ranker_contract
from recstack.bundle.item_item import DEFAULT_MAX_MEMORY_GB, check_item_item_bound
from recstack.bundle.layout import (
    CONTENT_INDEX,
    CONTENT_ITEMS,
    CONTENT_VECTORS,
    INDEX,
    ITEM_COLUMNS,
    ITEM_EMB,
    ITEM_ITEM,
    ITEMS,
    MANIFEST,
    RANKER,
    SEEN_INDICES,
    SEEN_INDPTR,
    TEXT_EMB,
    USER_EMB,
    USERS,
    BundleError,
    check_table,
    check_users,
    minimise_users,
    sha256_file,
)
from recstack.bundle.manifest import (
    FORMAT_VERSION,
    Blend,
    BundleManifest,
    ContentInfo,
    ContentModelInfo,
    IndexInfo,
    ItemItemInfo,
    RankerInfo,
    TextEncoderInfo,
    check_retrieval_text,
)
from recstack.bundle.tfidf import TfidfState
from recstack.retrieval.index import IndexConfig, build_index

# Packages whose versions the manifest records; read from installed metadata, so torch is never imported here.
VERSION_PACKAGES: tuple[str, ...] = (
    "recstack",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "faiss-cpu",
    "onnxruntime",
    "onnx",
    "tokenizers",
    "torch",
    "lightning",
)


def library_versions() -> dict[str, str]:
    """Installed versions of :data:`VERSION_PACKAGES` (absent ones are skipped) plus Python's."""
    out = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def float32_matrix(array: np.ndarray, rows: int, what: str, dim: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    if x.ndim != 2 or x.shape[0] != rows or (dim is not None and x.shape[1] != dim):
        want = f"({rows}, {dim if dim is not None else 'd'})"
        raise BundleError(f"{what}: shape {x.shape}, expected {want}")
    if not np.isfinite(x).all():
        raise BundleError(f"{what}: contains NaN or infinite values; check the training run")
    return x


def _json_safe(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Metrics as plain JSON (nested mappings kept; numpy scalars turned into Python numbers)."""
    out: dict[str, Any] = {}
    for key, value in dict(values or {}).items():
        if isinstance(value, Mapping):
            out[str(key)] = _json_safe(value)
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[str(key)] = value
        elif hasattr(value, "item"):
            out[str(key)] = value.item()
        else:
            out[str(key)] = str(value)
    return out


def _ranker_info(path: Path, n_users: int, n_items: int) -> RankerInfo:
    """Check the ONNX file against the contract for this catalogue; the manifest records that contract."""
    from recstack.bundle.session import make_session  # ONNX Runtime only for bundles that have a ranker

    try:
        session = make_session(path)
    except Exception as exc:  # ORT raises its own exception types for a corrupt file
        raise BundleError(f"{RANKER}: ONNX Runtime cannot load it ({exc}); export the ranker again") from exc
    contract = ranker_contract(n_users, n_items)
    try:
        contract.check(session, source=RANKER)
    except ValueError as exc:
        raise BundleError(str(exc)) from exc
    return RankerInfo(contract=contract)


def _check_holes_blank(present: np.ndarray, user_emb: np.ndarray, seen: sp.csr_matrix) -> None:
    """The users without a row (erased) must carry nothing: zero embedding rows, no seen items."""
    holes = np.setdiff1d(np.arange(len(user_emb)), present)
    if not len(holes):
        return
    if np.any(user_emb[holes]):
        raise BundleError(f"user_embeddings: rows of users absent from {USERS} (erased) must be zeros")
    if np.any(seen.indptr[holes + 1] - seen.indptr[holes]):
        raise BundleError(f"seen: rows of users absent from {USERS} (erased) must be empty")


@dataclass(frozen=True)
class ContentPayload:
    """What :func:`write_bundle` needs for the optional content section (layout in :mod:`recstack.bundle.layout`):
    the content items table (``content_idx``, ``item_id``, ``title``, ``categories``, ``text``, ``updated_ms``; the
    catalogue first), their unit vectors, the index to build over them, and the exported encoder's two files."""

    items: pd.DataFrame
    vectors: np.ndarray
    index_config: IndexConfig
    encoder_onnx: Path
    tokenizer: Path
    encoder: TextEncoderInfo


@dataclass(frozen=True)
class ItemItemPayload:
    """What :func:`write_bundle` needs for an item-item ranker (:mod:`recstack.bundle.item_item`): the
    ``(n_items, n_items)`` weights (row = history item, column = candidate), the model they come from and its
    hyper-parameters (recorded in the manifest), and the memory bound they must fit (``item_item.max_memory_gb``)."""

    weights: np.ndarray
    model: str
    params: Mapping[str, Any]
    max_memory_gb: float = DEFAULT_MAX_MEMORY_GB


def _write_item_item(folder: Path, payload: ItemItemPayload, n_items: int) -> RankerInfo:
    check_item_item_bound(n_items, payload.max_memory_gb)
    weights = float32_matrix(payload.weights, n_items, "item_item weights", n_items)
    np.save(folder / ITEM_ITEM, weights, allow_pickle=False)
    info = ItemItemInfo(model=payload.model, nbytes=int(weights.nbytes), params=_json_safe(payload.params))
    return RankerInfo(kind="item_item", item_item=info, file=ITEM_ITEM)


def _write_content(folder: Path, content: ContentPayload, catalogue_ids: pd.Series) -> ContentInfo:
    table = content.items.reset_index(drop=True).copy()
    table["updated_ms"] = table["updated_ms"].astype(np.int64)
    vectors = float32_matrix(content.vectors, len(table), "content_vectors", content.encoder.dim)
    norms = np.linalg.norm(vectors, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        raise BundleError(f"content_vectors: rows must be unit length (norms {norms.min():.4f}..{norms.max():.4f})")
    if content.index_config.kind not in ("flat", "hnsw"):
        raise BundleError(
            f"content index kind {content.index_config.kind!r}: use flat or hnsw (items are added live, without a "
            "rebuild, and IVF lists trained on the catalogue would not fit them)"
        )
    config = replace(content.index_config, metric="ip")  # unit rows: inner product is the cosine
    info = ContentInfo(
        n_items=len(table),
        n_catalogue=len(catalogue_ids),
        dim=int(vectors.shape[1]),
        index=IndexInfo(config=config, factory=config.factory_string()),
        encoder=content.encoder,
    )
    check_content_items(table, info, catalogue_ids)
    table.to_parquet(folder / CONTENT_ITEMS, index=False)
    np.save(folder / CONTENT_VECTORS, vectors, allow_pickle=False)
    build_index(vectors, config).save(folder / CONTENT_INDEX)
    shutil.copyfile(content.encoder_onnx, folder / content.encoder.file)
    shutil.copyfile(content.tokenizer, folder / content.encoder.tokenizer_file)
    return info


def _write_manifest(folder: Path, manifest: BundleManifest) -> None:
    """Replace ``manifest.json`` atomically (a reader sees the old or the new one, never half of one)."""
    tmp = folder / f".{MANIFEST}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(manifest.to_json())
    os.replace(tmp, folder / MANIFEST)


def write_bundle(
    out_dir: str | Path,
    *,
    model_kind: str,
    users: pd.DataFrame,
    items: pd.DataFrame,
    user_embeddings: np.ndarray,
    item_embeddings: np.ndarray,
    seen: sp.csr_matrix,
    index_config: Mapping[str, Any] | IndexConfig,
    item_text_embeddings: np.ndarray | None = None,
    ranker_onnx: Path | bytes | None = None,
    dataset: str = "",
    split_hash: str = "",
    metrics: Mapping[str, Any] | None = None,
    erased_users: int = 0,
    content: ContentPayload | None = None,
    item_item: ItemItemPayload | None = None,
    tfidf: TfidfState | None = None,
    content_model: ContentModelInfo | None = None,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Write a bundle to ``out_dir`` and return its path.

    ``users`` keeps only the columns a bundle may hold (:func:`~recstack.bundle.layout.minimise_users`).
    ``erased_users``: how many trained users have no row in ``users`` because they were erased; their indices are
    holes, and their rows of ``user_embeddings`` and ``seen`` must already be blank (zeros, empty), else this refuses.
    ``content``: the optional content section (:class:`ContentPayload`).
    ``item_item``: an item-item ranker (:class:`ItemItemPayload`) instead of ``ranker_onnx`` (a bundle has one
    re-ranker); refused, before anything is written, beyond its ``max_memory_gb``.
    ``tfidf``: the retrieval vectors are (or, with ``content_model`` ``encoder=both``, begin with) these TF-IDF vectors
    (:mod:`recstack.bundle.tfidf`): the vectorizer is written as plain data (``tfidf.json``, ``tfidf_idf.npy``).
    ``content_model``: the retrieval vectors are a content model's text vectors, made by its encoder
    (:mod:`recstack.bundle.content_encoding`) from ``tfidf`` and/or the content section's MiniLM encoder; refused
    (:class:`BundleError`, before anything is written) when a part it needs is missing or the widths disagree.
    ``check``: called on the finished folder before it is moved into place; whatever it raises leaves no bundle
    behind (an existing one at ``out_dir`` is kept).

    Written into a sibling temporary folder and renamed into place, so a reader never sees half a bundle. An existing
    bundle at ``out_dir`` is replaced; any other non-empty folder there is refused.
    """
    out_dir = Path(out_dir)
    if erased_users < 0:
        raise BundleError(f"erased_users={erased_users} must be >= 0")
    n_users, n_items = len(user_embeddings), len(items)  # every trained user has a vector row, erased ones too
    user_table = minimise_users(users)
    check_users(user_table, n_users, erased_users)
    check_table(items, ITEM_COLUMNS, "item_idx", n_items, ITEMS)
    user_emb = float32_matrix(user_embeddings, n_users, "user_embeddings")
    dim = user_emb.shape[1]
    item_emb = float32_matrix(item_embeddings, n_items, "item_embeddings", dim)
    text = None if item_text_embeddings is None else float32_matrix(item_text_embeddings, n_items, "item_text")
    seen = sp.csr_matrix(seen)
    if seen.shape != (n_users, n_items):
        raise BundleError(f"seen: shape {seen.shape}, expected ({n_users}, {n_items})")
    seen.sort_indices()
    _check_holes_blank(user_table["user_idx"].to_numpy(np.int64), user_emb, seen)
    config = index_config if isinstance(index_config, IndexConfig) else IndexConfig.from_mapping(index_config)
    check_retrieval_text(
        content_model,
        None if tfidf is None else tfidf.dim,
        None if content is None else content.encoder.dim,
        int(dim),
        "content_model/tfidf",
    )
    if item_item is not None:
        if ranker_onnx is not None:
            raise BundleError("a bundle has one re-ranker: pass ranker_onnx or item_item, not both")
        check_item_item_bound(n_items, item_item.max_memory_gb)  # before minutes of writing
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise BundleError(f"{out_dir} exists and is not a bundle; choose another output folder or empty it")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        user_table.to_parquet(tmp / USERS, index=False)
        item_table = items.reset_index(drop=True).copy()
        item_table["popularity"] = item_table["popularity"].astype(np.int64)
        item_table.to_parquet(tmp / ITEMS, index=False)
        np.save(tmp / USER_EMB, user_emb, allow_pickle=False)
        np.save(tmp / ITEM_EMB, item_emb, allow_pickle=False)
        if text is not None:
            np.save(tmp / TEXT_EMB, text, allow_pickle=False)
        np.save(tmp / SEEN_INDPTR, seen.indptr.astype(np.int64), allow_pickle=False)
        np.save(tmp / SEEN_INDICES, seen.indices.astype(np.int32), allow_pickle=False)
        index = build_index(item_emb, config)
        index.save(tmp / INDEX)
        ranker = None
        if ranker_onnx is not None:
            if isinstance(ranker_onnx, bytes):
                (tmp / RANKER).write_bytes(ranker_onnx)
            else:
                shutil.copyfile(ranker_onnx, tmp / RANKER)
            ranker = _ranker_info(tmp / RANKER, n_users, n_items)
        if item_item is not None:
            ranker = _write_item_item(tmp, item_item, n_items)
        content_info = None if content is None else _write_content(tmp, content, item_table["item_id"])
        tfidf_info = None if tfidf is None else tfidf.write(tmp)
        # Hashes last, over exactly the files written above.
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = BundleManifest(
            format_version=FORMAT_VERSION,
            model_kind=model_kind,
            embedding_dim=int(dim),
            n_users=n_users,
            n_items=n_items,
            dataset=dataset,
            split_hash=split_hash,
            metrics=_json_safe(metrics),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            versions=library_versions(),
            files=files,
            index=IndexInfo(config=index.config, factory=index.config.factory_string()),
            ranker=ranker,
            text_dim=None if text is None else int(text.shape[1]),
            erased_users=erased_users,
            content=content_info,
            tfidf=tfidf_info,
            content_model=content_model,
        )
        _write_manifest(tmp, manifest)
        if check is not None:
            check(tmp)
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def record_blend(bundle_dir: str | Path, blend: Blend) -> BundleManifest:
    """Record the tuned blend weight in the bundle's manifest (its digest follows); returns the new manifest.

    The manifest is read with its digest verified first, so an edited manifest is never re-signed here."""
    folder = Path(bundle_dir)
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: missing; {folder} is not a bundle (run `recstack-export run=...`)")
    manifest = BundleManifest.from_json(path.read_text(), source=str(path)).with_blend(blend)
    _write_manifest(folder, manifest)
    return manifest
