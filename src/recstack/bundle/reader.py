"""Reading a bundle back, verified: every file's sha256 and the manifest's digest, then shapes and dimensions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recstack.bundle.content import ContentSection, check_content_items
from recstack.bundle.item_item import load_item_item
from recstack.bundle.layout import (
    CONTENT_INDEX,
    CONTENT_ITEMS,
    CONTENT_VECTORS,
    INDEX,
    ITEM_COLUMNS,
    ITEM_EMB,
    ITEMS,
    MANIFEST,
    REQUIRED_FILES,
    SEEN_INDICES,
    SEEN_INDPTR,
    TEXT_EMB,
    USER_EMB,
    USERS,
    BundleError,
    check_table,
    check_users,
    sha256_file,
)
from recstack.bundle.manifest import BundleManifest
from recstack.bundle.tfidf import TfidfState
from recstack.retrieval.index import RetrievalIndex


def _load_npy(root: Path, name: str) -> np.ndarray:
    try:
        return np.load(root / name, allow_pickle=False)
    except ValueError as exc:  # object arrays need pickle: refuse them
        raise BundleError(f"{name}: cannot be read without pickle ({exc}); the bundle is not trusted") from exc


def _expect_shape(name: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
    if array.shape != expected:
        raise BundleError(f"{name}: dimension mismatch, shape {array.shape}, manifest says {expected}")


def read_manifest(path: str | Path, *, verify: bool = True) -> BundleManifest:
    """The manifest of the bundle folder ``path`` (digest checked when ``verify``), without reading anything else."""
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing; {path} is not a bundle (run `recstack-export run=...`)")
    return BundleManifest.from_json(manifest_path.read_text(), source=str(manifest_path), verify=verify)


def verify_files(root: Path, manifest: BundleManifest, *, hashes: bool = True) -> None:
    """Every file the manifest needs is listed and present; with ``hashes``, each one's sha256 matches."""
    expected = list(REQUIRED_FILES)
    if manifest.text_dim is not None:
        expected.append(TEXT_EMB)
    if manifest.ranker is not None:
        expected.append(manifest.ranker.file)
    if manifest.content is not None:
        encoder = manifest.content.encoder
        expected.extend((CONTENT_ITEMS, CONTENT_VECTORS, CONTENT_INDEX, encoder.file, encoder.tokenizer_file))
    if manifest.tfidf is not None:
        expected.extend((manifest.tfidf.file, manifest.tfidf.idf_file))
    for name in expected:
        if name not in manifest.files:
            raise BundleError(f"{root / MANIFEST}: files lists no sha256 for {name}; export the bundle again")
    for name, digest in sorted(manifest.files.items()):
        file = root / name
        if not file.is_file():
            raise BundleError(f"{file}: missing (the manifest lists it); copy the whole bundle folder again")
        if hashes:
            actual = sha256_file(file)
            if actual != digest:
                raise BundleError(
                    f"{file}: sha256 mismatch, manifest expects {digest}, file has {actual}; "
                    "the file was changed after export: export the bundle again"
                )


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle (layout in :mod:`recstack.bundle.layout`). ``index`` is ready to search."""

    root: Path
    manifest: BundleManifest
    users: pd.DataFrame
    items: pd.DataFrame
    user_index: dict[str, int]
    item_index: dict[str, int]
    user_embeddings: np.ndarray
    item_embeddings: np.ndarray
    item_text_embeddings: np.ndarray | None
    seen: sp.csr_matrix
    index: RetrievalIndex
    content: ContentSection | None = None
    """The optional content section (:mod:`recstack.bundle.content`): text vectors, their index, the encoder."""
    item_item: np.ndarray | None = None
    """The item-item ranker's weights (``manifest.ranker.kind == "item_item"``), memory-mapped read-only
    (:mod:`recstack.bundle.item_item`)."""
    tfidf: TfidfState | None = None
    """The retrieval vectors' TF-IDF vectorizer as plain data (``manifest.tfidf``; :mod:`recstack.bundle.tfidf`): all
    of each vector, or its TF-IDF block (``manifest.content_model``; :mod:`recstack.bundle.content_encoding`)."""

    @property
    def ranker_path(self) -> Path | None:
        """The re-ranker's file (``ranker.onnx`` or ``item_item.npy``: ``manifest.ranker.kind`` says which)."""
        return None if self.manifest.ranker is None else self.root / self.manifest.ranker.file

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True, index_params: Mapping[str, Any] | None = None) -> Bundle:
        """Read a bundle. Always checks presence, format version and dimensions; ``verify`` also checks every file's
        sha256 and the manifest's digest. ``index_params`` (``ef_search``, ``nprobe``) override the exported search
        parameters."""
        root = Path(path)
        m = read_manifest(root, verify=verify)
        verify_files(root, m, hashes=verify)
        users = pd.read_parquet(root / USERS)
        items = pd.read_parquet(root / ITEMS)
        try:
            check_users(users, m.n_users, m.erased_users)
            check_table(items, ITEM_COLUMNS, "item_idx", m.n_items, ITEMS)
        except BundleError as exc:
            raise BundleError(
                f"{root}: {exc} (manifest says n_users={m.n_users}, erased_users={m.erased_users}, n_items={m.n_items})"
            ) from exc
        user_emb = _load_npy(root, USER_EMB)
        item_emb = _load_npy(root, ITEM_EMB)
        _expect_shape(USER_EMB, user_emb, (m.n_users, m.embedding_dim))
        _expect_shape(ITEM_EMB, item_emb, (m.n_items, m.embedding_dim))
        text = None
        if m.text_dim is not None:
            text = _load_npy(root, TEXT_EMB)
            _expect_shape(TEXT_EMB, text, (m.n_items, m.text_dim))
        indptr = _load_npy(root, SEEN_INDPTR)
        indices = _load_npy(root, SEEN_INDICES)
        _expect_shape(SEEN_INDPTR, indptr, (m.n_users + 1,))
        if len(indices) != indptr[-1] or (len(indices) and (indices.min() < 0 or indices.max() >= m.n_items)):
            raise BundleError(f"{SEEN_INDICES}: {len(indices)} entries, indptr ends at {indptr[-1]}, ids < {m.n_items}")
        seen = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(m.n_users, m.n_items))
        params = dict(index_params or {})
        unknown = set(params) - {"ef_search", "nprobe"}
        if unknown:
            raise BundleError(f"index_params {sorted(unknown)} are unknown; use ef_search and/or nprobe")
        index = RetrievalIndex.load(root / INDEX, m.index.config, **params)
        if (index.dim, index.ntotal) != (m.embedding_dim, m.n_items):
            raise BundleError(
                f"{INDEX}: dimension mismatch, index is (n={index.ntotal}, d={index.dim}), "
                f"manifest says (n={m.n_items}, d={m.embedding_dim})"
            )
        content = _load_content(root, m, items, params) if m.content is not None else None
        item_item = None
        if m.ranker is not None and m.ranker.kind == "item_item":
            item_item = load_item_item(root / m.ranker.file, m.n_items)
        tfidf = None if m.tfidf is None else TfidfState.read(root, m.tfidf)
        return cls(
            root=root,
            manifest=m,
            users=users,
            items=items,
            user_index=dict(zip(users["user_id"].astype(str), users["user_idx"].astype(int), strict=True)),
            item_index=dict(zip(items["item_id"].astype(str), items["item_idx"].astype(int), strict=True)),
            user_embeddings=user_emb,
            item_embeddings=item_emb,
            item_text_embeddings=text,
            seen=seen,
            index=index,
            content=content,
            item_item=item_item,
            tfidf=tfidf,
        )

    def seen_items(self, user_idx: int) -> np.ndarray:
        """Training items of one user (sorted item indices)."""
        return self.seen.indices[self.seen.indptr[user_idx] : self.seen.indptr[user_idx + 1]]


def _load_content(root: Path, m: BundleManifest, items: pd.DataFrame, params: dict[str, Any]) -> ContentSection:
    info = m.content
    assert info is not None
    frame = pd.read_parquet(root / CONTENT_ITEMS)
    try:
        check_content_items(frame, info, items["item_id"])
    except BundleError as exc:
        raise BundleError(f"{root}: {exc}") from exc
    vectors = _load_npy(root, CONTENT_VECTORS)
    _expect_shape(CONTENT_VECTORS, vectors, (info.n_items, info.dim))
    index = RetrievalIndex.load(root / CONTENT_INDEX, info.index.config, ef_search=params.get("ef_search"))
    if (index.dim, index.ntotal) != (info.dim, info.n_items):
        raise BundleError(
            f"{CONTENT_INDEX}: dimension mismatch, index is (n={index.ntotal}, d={index.dim}), "
            f"manifest says (n={info.n_items}, d={info.dim})"
        )
    return ContentSection(
        info=info,
        items=frame,
        vectors=vectors,
        index=index,
        encoder_path=root / info.encoder.file,
        tokenizer_path=root / info.encoder.tokenizer_file,
    )
