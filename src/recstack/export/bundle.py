"""The artifact bundle: the one folder training writes and serving reads. Torch-free (serving has no torch).

Layout (every file but the manifest is listed in ``manifest.files`` with its sha256):

* ``manifest.json``: :class:`BundleManifest`.
* ``users.parquet``: ``user_idx`` (0..n_users-1), ``user_id``, demographic columns. ``items.parquet``: ``item_idx``
  (0..n_items-1), ``item_id``, ``title``, ``year``, ``categories`` (list of str), ``popularity`` (int64 train count).
  Together they are the id maps, both ways.
* ``user_embeddings.npy`` (n_users, d), ``item_embeddings.npy`` (n_items, d): float32, C-contiguous; scores are
  their dot products (LightGCN propagation already applied).
* ``item_text_embeddings.npy`` (n_items, text_dim) float32: text vectors for cold-start items and session fold-in;
  absent when the run had none (``manifest.text_dim`` is then null).
* ``seen_indptr.npy`` (n_users+1,) int64, ``seen_indices.npy`` int32: training interactions as CSR, to filter seen
  items.
* ``items.faiss``: the retrieval index over ``item_embeddings`` (``faiss.write_index``), described by
  ``manifest.index``.
* ``ranker.onnx`` (optional): the re-ranker; ``manifest.ranker`` records its input contract (int64 ``(B,)`` inputs
  ``user_idx, item_idx, hour, dow``; float32 ``(B,)`` output ``score``) and the OOV user index (= n_users).

No pickle anywhere: arrays are read with ``allow_pickle=False``, tables are parquet, the index is FAISS's own format.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recstack.retrieval.index import IndexConfig, RetrievalIndex, build_index

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
USERS = "users.parquet"
ITEMS = "items.parquet"
USER_EMB = "user_embeddings.npy"
ITEM_EMB = "item_embeddings.npy"
TEXT_EMB = "item_text_embeddings.npy"
SEEN_INDPTR = "seen_indptr.npy"
SEEN_INDICES = "seen_indices.npy"
INDEX = "items.faiss"
RANKER = "ranker.onnx"
REQUIRED_FILES: tuple[str, ...] = (USERS, ITEMS, USER_EMB, ITEM_EMB, SEEN_INDPTR, SEEN_INDICES, INDEX)
ITEM_COLUMNS: tuple[str, ...] = ("item_idx", "item_id", "title", "year", "categories", "popularity")
USER_COLUMNS: tuple[str, ...] = ("user_idx", "user_id")
RANKER_INPUTS: tuple[str, ...] = ("user_idx", "item_idx", "hour", "dow")
RANKER_OUTPUT = "score"
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
    "torch",
    "lightning",
)


class BundleError(ValueError):
    """A bundle that cannot be trusted or read: the message names the file and what differs."""


@dataclass(frozen=True)
class BundleManifest:
    """What a bundle holds and how to check it (``manifest.json``)."""

    format_version: int
    model_kind: str
    embedding_dim: int
    n_users: int
    n_items: int
    dataset: str
    split_hash: str
    metrics: dict[str, Any]
    created_at: str
    versions: dict[str, str]
    files: dict[str, str]
    index: dict[str, Any]
    ranker: dict[str, Any] | None = None
    text_dim: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = MANIFEST) -> BundleManifest:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BundleError(f"{source}: not valid JSON ({exc}); export the bundle again") from exc
        if not isinstance(raw, dict):
            raise BundleError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{source}: unknown format_version {version!r}; this recstack reads format_version {FORMAT_VERSION} "
                "(export the bundle again with this recstack version)"
            )
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in names if n not in raw and n not in ("ranker", "text_dim"))
        if missing:
            raise BundleError(f"{source}: missing field(s) {missing}")
        return cls(**{k: v for k, v in raw.items() if k in names})

    @property
    def index_config(self) -> IndexConfig:
        return IndexConfig.from_mapping(self.index["config"])


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Installed versions of :data:`VERSION_PACKAGES` (absent ones are skipped) plus Python's."""
    out = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def _float32_matrix(array: np.ndarray, rows: int, what: str, dim: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    if x.ndim != 2 or x.shape[0] != rows or (dim is not None and x.shape[1] != dim):
        want = f"({rows}, {dim if dim is not None else 'd'})"
        raise BundleError(f"{what}: shape {x.shape}, expected {want}")
    if not np.isfinite(x).all():
        raise BundleError(f"{what}: contains NaN or infinite values; check the training run")
    return x


def _check_table(frame: pd.DataFrame, columns: tuple[str, ...], idx_col: str, n: int, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise BundleError(f"{what}: missing column(s) {missing}; it has {list(frame.columns)}")
    if len(frame) != n or not np.array_equal(frame[idx_col].to_numpy(np.int64), np.arange(n)):
        raise BundleError(f"{what}: {idx_col} must be exactly 0..{n - 1} in order (got {len(frame)} rows)")


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


def _ranker_contract(path: Path, n_users: int, n_items: int) -> dict[str, Any]:
    """Check the ONNX file's inputs/outputs against the contract and describe it for the manifest."""
    import onnxruntime as ort  # torch-free; imported here so that reading a bundle without a ranker needs no ORT

    try:
        session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for a corrupt file
        raise BundleError(f"{RANKER}: ONNX Runtime cannot load it ({exc}); export the ranker again") from exc
    inputs = {i.name: i.type for i in session.get_inputs()}
    if sorted(inputs) != sorted(RANKER_INPUTS) or set(inputs.values()) != {"tensor(int64)"}:
        raise BundleError(f"{RANKER}: inputs {inputs}, expected int64 tensors named {list(RANKER_INPUTS)}")
    outputs = [o.name for o in session.get_outputs()]
    if outputs != [RANKER_OUTPUT]:
        raise BundleError(f"{RANKER}: outputs {outputs}, expected [{RANKER_OUTPUT!r}]")
    return {
        "file": RANKER,
        "inputs": [{"name": n, "dtype": "int64", "shape": ["batch"]} for n in RANKER_INPUTS],
        "output": {"name": RANKER_OUTPUT, "dtype": "float32", "shape": ["batch"]},
        "oov_user_index": n_users,
        "ranges": {"user_idx": [0, n_users], "item_idx": [0, n_items - 1], "hour": [0, 23], "dow": [0, 6]},
    }


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
) -> Path:
    """Write a bundle to ``out_dir`` (see the module docstring) and return its path.

    Written into a sibling temporary folder and renamed into place, so a reader never sees half a bundle. An existing
    bundle at ``out_dir`` is replaced; any other non-empty folder there is refused.
    """
    out_dir = Path(out_dir)
    n_users, n_items = len(users), len(items)
    _check_table(users, USER_COLUMNS, "user_idx", n_users, USERS)
    _check_table(items, ITEM_COLUMNS, "item_idx", n_items, ITEMS)
    user_emb = _float32_matrix(user_embeddings, n_users, "user_embeddings")
    dim = user_emb.shape[1]
    item_emb = _float32_matrix(item_embeddings, n_items, "item_embeddings", dim)
    text = None if item_text_embeddings is None else _float32_matrix(item_text_embeddings, n_items, "item_text")
    seen = sp.csr_matrix(seen)
    if seen.shape != (n_users, n_items):
        raise BundleError(f"seen: shape {seen.shape}, expected ({n_users}, {n_items})")
    seen.sort_indices()
    config = index_config if isinstance(index_config, IndexConfig) else IndexConfig.from_mapping(index_config)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise BundleError(f"{out_dir} exists and is not a bundle; choose another output folder or empty it")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        users.reset_index(drop=True).to_parquet(tmp / USERS, index=False)
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
            ranker = _ranker_contract(tmp / RANKER, n_users, n_items)
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
            index={
                "factory": index.config.factory_string(),
                "metric": index.config.metric,
                "config": index.config.to_dict(),
                "params": {"ef_search": index.config.ef_search, "nprobe": index.config.nprobe},
            },
            ranker=ranker,
            text_dim=None if text is None else int(text.shape[1]),
        )
        (tmp / MANIFEST).write_text(manifest.to_json())
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


def _load_npy(root: Path, name: str) -> np.ndarray:
    try:
        return np.load(root / name, allow_pickle=False)
    except ValueError as exc:  # object arrays need pickle: refuse them
        raise BundleError(f"{name}: cannot be read without pickle ({exc}); the bundle is not trusted") from exc


def _expect_shape(name: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
    if array.shape != expected:
        raise BundleError(f"{name}: dimension mismatch, shape {array.shape}, manifest says {expected}")


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle (see the module docstring). ``index`` is ready to search."""

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
    ranker_path: Path | None

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True, index_params: Mapping[str, Any] | None = None) -> Bundle:
        """Read a bundle. Always checks presence, format version and dimensions; ``verify`` also checks every file's
        sha256. ``index_params`` (``ef_search``, ``nprobe``) override the exported search parameters."""
        root = Path(path)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{manifest_path}: missing; {root} is not a bundle (run `recstack-export run=...`)")
        manifest = BundleManifest.from_json(manifest_path.read_text(), source=str(manifest_path))
        expected = list(REQUIRED_FILES)
        if manifest.text_dim is not None:
            expected.append(TEXT_EMB)
        if manifest.ranker is not None:
            expected.append(RANKER)
        for name in expected:
            if name not in manifest.files:
                raise BundleError(f"{manifest_path}: files lists no sha256 for {name}; export the bundle again")
        for name, digest in sorted(manifest.files.items()):
            file = root / name
            if not file.is_file():
                raise BundleError(f"{file}: missing (the manifest lists it); copy the whole bundle folder again")
            if verify:
                actual = sha256_file(file)
                if actual != digest:
                    raise BundleError(
                        f"{file}: sha256 mismatch, manifest expects {digest}, file has {actual}; "
                        "the file was changed after export: export the bundle again"
                    )

        m = manifest
        users = pd.read_parquet(root / USERS)
        items = pd.read_parquet(root / ITEMS)
        try:
            _check_table(users, USER_COLUMNS, "user_idx", m.n_users, USERS)
            _check_table(items, ITEM_COLUMNS, "item_idx", m.n_items, ITEMS)
        except BundleError as exc:
            raise BundleError(f"{root}: {exc} (manifest says n_users={m.n_users}, n_items={m.n_items})") from exc
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
        index = RetrievalIndex.load(root / INDEX, m.index_config, **params)
        if (index.dim, index.ntotal) != (m.embedding_dim, m.n_items):
            raise BundleError(
                f"{INDEX}: dimension mismatch, index is (n={index.ntotal}, d={index.dim}), "
                f"manifest says (n={m.n_items}, d={m.embedding_dim})"
            )
        return cls(
            root=root,
            manifest=manifest,
            users=users,
            items=items,
            user_index=dict(zip(users["user_id"].astype(str), users["user_idx"].astype(int), strict=True)),
            item_index=dict(zip(items["item_id"].astype(str), items["item_idx"].astype(int), strict=True)),
            user_embeddings=user_emb,
            item_embeddings=item_emb,
            item_text_embeddings=text,
            seen=seen,
            index=index,
            ranker_path=(root / RANKER) if m.ranker is not None else None,
        )

    def seen_items(self, user_idx: int) -> np.ndarray:
        """Training items of one user (sorted item indices)."""
        return self.seen.indices[self.seen.indptr[user_idx] : self.seen.indptr[user_idx + 1]]
