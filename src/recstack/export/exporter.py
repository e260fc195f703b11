"""Run -> bundle: everything the service needs, computed once here so that serving only reads.

From the retrieval run (MF or LightGCN, best checkpoint): the final user and item vectors (LightGCN's propagation is
done here, once), checked against the model's own ``score_all``. From the split: the id maps, item metadata and
popularity, and the seen-items lists the service never recommends back (``seen``: :func:`seen_matrix`). The MiniLM
item text vectors (from the text encoder's disk cache when present). From an optional ranker run on the same split:
a Wide & Deep run gives ``ranker.onnx``, parity-checked; an item-item run (EASE: a model with
``item_item_weights()``) gives ``item_item.npy``, its dense weights, within ``item_item.max_memory_gb``
(:mod:`recstack.bundle.item_item`). Optionally the content section: MiniLM exported to ONNX (parity-checked
against sentence-transformers), the text vectors of the catalogue and of the items upserted live, and their own index
(:mod:`recstack.export.content_section`).
A content retrieval run also records how its item vectors are made from item text (``manifest.content_model``:
encoder and MiniLM weight; :mod:`recstack.bundle.content_encoding`) and, when they hold a TF-IDF block, its fitted
vectorizer as plain data (:mod:`recstack.bundle.tfidf`), so serving encodes items added live exactly as the model does;
a MiniLM block comes from the content section's encoder, which such a run therefore needs (:func:`content_parity`).
Users erased since training are left out of all of it, and the written bundle is checked for them before it is moved
into place (:mod:`recstack.export.erasure`).

The bundle is written through :func:`recstack.bundle.writer.write_bundle`. Tuning the ranker's blend weight needs the
served pipeline, which sits above this package: ``recstack-export`` runs it afterwards
(:func:`recstack.offline.blend.tune_and_record`).
"""

from __future__ import annotations

import logging
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import scipy.sparse as sp
import torch
from omegaconf import OmegaConf

from recstack.bundle.content_encoding import block_names, combine_blocks
from recstack.bundle.contract import INPUT_NAMES
from recstack.bundle.item_item import DEFAULT_MAX_MEMORY_GB, check_item_item_bound
from recstack.bundle.layout import BundleError
from recstack.bundle.manifest import ContentModelInfo, check_text_encoder_for
from recstack.bundle.text_encoder import PARITY_MIN_COSINE
from recstack.bundle.tfidf import TfidfEncoder, TfidfState
from recstack.bundle.writer import ItemItemPayload, write_bundle
from recstack.data.item_text import item_text
from recstack.data.prepared import PreparedSplit
from recstack.export.content_section import ContentOptions
from recstack.export.erasure import Erasures, check_no_erased_users, redact_users, zero_ranker_users
from recstack.export.onnx_export import export_ranker
from recstack.models.base import FoldsIn
from recstack.models.wide_deep import WideAndDeep
from recstack.models.wide_deep_frozen import FrozenWideAndDeep
from recstack.retrieval.index import IndexConfig

log = logging.getLogger(__name__)
# Dot products of the exported vectors must reproduce the model's scores; float32 sums of 64 terms stay well inside.
EMBEDDING_SCORE_ATOL = 1e-4
# The same function on the same vocabulary: the rebuilt vectorizer's vectors equal the model's up to float32 rounding.
TFIDF_ATOL = 1e-6


SeenOption = Literal["train", "train_valid", "all"]
"""Which of the split's interactions a bundle's seen-items lists hold (:func:`seen_matrix`)."""
SEEN_OPTIONS: tuple[str, ...] = get_args(SeenOption)
_SEEN_STAGES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "train_valid": ("train", "valid"),
    "all": ("train", "valid", "test"),
}


class ExportError(RuntimeError):
    """A run that cannot be exported as asked (wrong model kind, runs on different splits, scores not reproduced)."""


def seen_matrix(split: PreparedSplit, seen: str) -> sp.csr_matrix:
    """The binary users x items matrix of what the bundle's seen-items lists hold, which the service never recommends
    back to the user:

    * ``train``: the training split only (a user's validation and test items can be recommended back);
    * ``train_valid``: everything before the test split, exactly what the offline evaluator masks on the test stage,
      so the bundle served to the test users reproduces the offline test figure (offline evaluation, simulations);
    * ``all``: every interaction of the split, the default for a deployed bundle: nothing a user did is recommended
      back to them.

    A refit run's training split already holds every interaction (:mod:`recstack.training.refit`), so the three agree
    for it."""
    if seen not in _SEEN_STAGES:
        raise ExportError(f"seen={seen!r}: choose one of {', '.join(SEEN_OPTIONS)}")
    matrix = sp.csr_matrix(split.matrix("train"), dtype=np.float32, copy=True)
    for stage in _SEEN_STAGES[seen][1:]:
        matrix = matrix + split.matrix(stage)
    matrix = sp.csr_matrix(matrix)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def model_kind(run_config: Any) -> str:
    """``mf`` / ``lightgcn`` / ``wide_deep``: the model's module name, from the run config's ``model._target_``."""
    return str(run_config.model._target_).split(".")[-2]


@torch.no_grad()
def retrieval_vectors(model: Any, *, check_users: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(user_vectors, item_vectors)`` float32, verified: their dot products equal ``model.score_all``."""
    if not (hasattr(model, "user_embeddings") and hasattr(model, "item_embeddings")):
        raise ExportError(
            f"{type(model).__name__} has no user_embeddings()/item_embeddings(): only dot-product models (MF, "
            "LightGCN, content) can be the retrieval stage; pass a Wide & Deep or EASE run as ranker_run= instead"
        )
    if isinstance(model, torch.nn.Module):
        model.eval()
    if hasattr(model, "propagate"):  # LightGCN: one propagation for both sides
        users_t, items_t = model.propagate()
    else:
        users_t, items_t = model.user_embeddings(), model.item_embeddings()
    users = np.ascontiguousarray(users_t.detach().cpu().float().numpy())
    items = np.ascontiguousarray(items_t.detach().cpu().float().numpy())
    sample = torch.arange(min(check_users, len(users)))
    expected = model.score_all(sample).detach().cpu().float().numpy()
    diff = float(np.max(np.abs(users[: len(sample)] @ items.T - expected))) if len(sample) else 0.0
    if diff > EMBEDDING_SCORE_ATOL:
        raise ExportError(
            f"{type(model).__name__}: user/item vector dot products differ from score_all by {diff:.3g} "
            f"(> {EMBEDDING_SCORE_ATOL}); the model's scores are not plain dot products, so an index cannot serve it"
        )
    return users, items


def content_model_info(model: Any) -> ContentModelInfo | None:
    """How a content retrieval model makes its item vectors from text
    (:meth:`~recstack.models.content.ContentRecommender.content_model_info`); None for any other model."""
    return model.content_model_info() if hasattr(model, "content_model_info") else None


def content_parity(
    info: ContentModelInfo,
    tfidf: TfidfState | None,
    items: Any,
    item_vectors: np.ndarray,
    minilm: np.ndarray | None,
    unchanged: np.ndarray | None = None,
) -> float:
    """Check that the bundle rebuilds a content model's item vectors from text as serving will
    (:mod:`recstack.bundle.content_encoding`): the TF-IDF block from ``tfidf`` rebuilt from its plain data, the MiniLM
    block from ``minilm`` (the content section's catalogue rows, its ONNX encoder's vectors), combined, against the
    exported ``item_vectors`` of ``items`` (the catalogue, ``item_idx`` order). The TF-IDF columns must agree within
    :data:`TFIDF_ATOL` (the same function of the same vocabulary), every whole row to a cosine of at least
    :data:`~recstack.bundle.text_encoder.PARITY_MIN_COSINE` (the ONNX encoder against the model's sentence-transformers
    vectors); ``unchanged`` (bool per catalogue row; None: all) leaves out rows whose text an upsert changed, whose
    content vector is the new text's. Returns the least cosine; :class:`ExportError` on any miss."""
    names = block_names(info.encoder)
    n = len(item_vectors)
    texts = [item_text(row) for row in items.to_dict("records")]
    blocks: list[np.ndarray] = []
    tfidf_width = 0
    for name in names:
        if name == "tfidf":
            if tfidf is None:
                raise ExportError(f"content model encoder={info.encoder}: it gave no TF-IDF state")
            block = TfidfEncoder(tfidf).encode(texts)
            tfidf_width = block.shape[1]
        else:
            if minilm is None:
                raise ExportError(f"content model encoder={info.encoder}: no content section to take MiniLM from")
            block = np.asarray(minilm, dtype=np.float32)
        if len(block) != n:
            raise ExportError(f"content model: {len(block)} {name} rows for {n} item vectors")
        blocks.append(block)
    expected = combine_blocks(info.encoder, info.minilm_weight, blocks)
    if expected.shape != item_vectors.shape:
        raise ExportError(
            f"content model encoder={info.encoder}: the bundle rebuilds {expected.shape} vectors from item text "
            f"(blocks {[b.shape[1] for b in blocks]}), the model's item vectors are {item_vectors.shape}; the content "
            "section's text encoder must be the model's MiniLM"
        )
    diff = float(np.max(np.abs(expected[:, :tfidf_width] - item_vectors[:, :tfidf_width]))) if n and tfidf_width else 0
    if diff > TFIDF_ATOL:
        raise ExportError(
            f"content model: the TF-IDF vectorizer rebuilt from its plain data encodes the catalogue to vectors "
            f"differing by {diff:.3g} from the model's; a setting that changes transform() is not written "
            "(recstack.bundle.tfidf.SETTINGS)"
        )
    keep = np.ones(n, dtype=bool) if unchanged is None else np.asarray(unchanged, dtype=bool)
    a, b = expected[keep].astype(np.float64), item_vectors[keep].astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosines = np.einsum("ij,ij->i", a, b) / np.where(norms > 0, norms, 1.0)
    least = float(cosines.min()) if len(cosines) else 1.0
    if least < PARITY_MIN_COSINE:
        worst = int(np.flatnonzero(keep)[int(np.argmin(cosines))])
        raise ExportError(
            f"content model encoder={info.encoder}: the bundle rebuilds item {worst}'s vector from its text "
            f"({texts[worst]!r}) to a cosine of {least:.6f} with the model's (< {PARITY_MIN_COSINE}); the content "
            "section's text encoder must be the model's MiniLM, on the same item text"
        )
    return least


def item_text_vectors(split: Any, cache_dir: str | Path) -> np.ndarray | None:
    """MiniLM vectors of the items (cached on disk by the text encoder), or None when the encoder is unavailable."""
    from recstack.training.build import item_text_vectors as encode

    try:
        return encode(split, cache_dir, progress=False)
    except (ImportError, OSError) as exc:
        log.warning("item text vectors skipped (%s); the bundle will have none", exc)
        return None


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    index_config: IndexConfig,
    ranker_run: str | Path | None = None,
    text: bool = True,
    parity_samples: int = 1000,
    seed: int = 0,
    erasures: Erasures | None = None,
    content: ContentOptions | None = None,
    seen: SeenOption = "all",
    item_item_max_memory_gb: float = DEFAULT_MAX_MEMORY_GB,
    fold_in: bool = False,
) -> Path:
    """Export ``run_dir`` (and ``ranker_run``) as a bundle at ``out_dir`` (no blend weight yet, see the module docstring).

    ``ranker_run``: a Wide & Deep run (``ranker.onnx``) or an item-item run such as EASE (``item_item.npy``, refused
    with :class:`ExportError` before the run is fitted when ``n_items^2 x 4`` bytes exceed ``item_item_max_memory_gb``,
    ``configs/export.yaml`` ``item_item.max_memory_gb``).

    ``seen``: what the seen-items lists hold (:func:`seen_matrix`; ``configs/export.yaml`` ``seen``), recorded in the
    manifest's metrics as ``export.seen``.

    ``fold_in``: the retrieval model reads the ``seen`` interactions at inference instead of its training matrix
    (:class:`~recstack.models.base.FoldsIn`; LightGCN propagates over their graph), so what users did after the
    training split shapes the bundle's vectors without retraining; the erased users' interactions are left out of
    that graph. Recorded as ``export.fold_in``. Refused (:class:`ExportError`) for a model with nothing to fold in (MF).
    A bundle folded in over ``train_valid`` or ``all`` has seen the validation split: ``recstack-export`` tunes its
    blend weight on a bundle without them, and the offline evaluators refuse to judge it on a stage it has seen.

    ``content``: also write the content section (:mod:`recstack.export.content_section`: MiniLM exported to ONNX,
    the catalogue's and the upserted items' text vectors and their index); None: none.

    A content run also writes how its item vectors are made from text (``manifest.content_model``) and, for
    ``encoder=tfidf`` or ``both``, its TF-IDF vectorizer as plain data (``tfidf.json``, ``tfidf_idf.npy``), with which
    serving encodes items added live exactly (:mod:`recstack.bundle.content_encoding`), checked before anything is
    written (:func:`content_parity`, recorded as ``content_model_parity_min_cosine``). ``minilm`` and ``both`` take
    their MiniLM block from the content section's encoder: such a run exported without ``content`` is refused
    (:class:`~recstack.bundle.layout.BundleError`) as soon as the run is loaded.

    ``erasures``: the users to leave out (:class:`~recstack.export.erasure.Erasures`; ``recstack-export`` reads them
    from the lake and Redis); a bundle still holding one of them is refused with
    :class:`~recstack.export.erasure.ErasureError` and not written.

    Returns the bundle folder. The same runs exported twice give bundles with identical search results (the index
    build is seeded and single-threaded; see :mod:`recstack.retrieval.index`).
    """
    from recstack.training.runs import load_run, read_metrics

    if seen not in SEEN_OPTIONS:  # before minutes of loading
        raise ExportError(f"seen={seen!r}: choose one of {', '.join(SEEN_OPTIONS)}")
    erasures = erasures if erasures is not None else Erasures()
    run = load_run(run_dir)
    if ranker_run is not None and _is_item_item(ranker_run):
        try:  # before the item-item model is fitted (minutes and gigabytes for a large catalogue)
            check_item_item_bound(run.split.n_items, item_item_max_memory_gb)
        except BundleError as exc:
            raise ExportError(str(exc)) from None
    kind = model_kind(run.config)
    content_model = content_model_info(run.model)
    check_text_encoder_for(content_model, content is not None, f"{run_dir}")  # before minutes of exporting
    split = run.split
    users = split.users.sort_values("user_idx").reset_index(drop=True)
    seen_items = seen_matrix(split, seen)
    if fold_in:
        if not isinstance(run.model, FoldsIn):
            raise ExportError(
                f"fold_in=true: {type(run.model).__name__}'s user vectors are trained parameters, it reads no "
                "interactions at inference; export it with fold_in=false (LightGCN folds in)"
            )
        # The erased users' interactions stay out of the graph, so they shape no one's vector.
        run.model.fold_in(redact_users(users, np.zeros((len(users), 1)), seen_items, erasures).seen)
        log.info("fold-in: the retrieval model reads the %s interactions (%d)", seen, seen_items.nnz)
    users_vec, items_vec = retrieval_vectors(run.model)
    items = split.items.sort_values("item_idx").reset_index(drop=True).copy()
    items["popularity"] = split.item_popularity.astype(np.int64)
    tfidf = run.model.tfidf_state() if content_model is not None else None
    redacted = redact_users(users, users_vec, seen_items, erasures)
    if len(redacted.erased):
        log.info("%d erased user(s) left out of the bundle", len(redacted.erased))
    text_cache = run.config.get("text_cache_dir", "data/cache/text")
    text_vectors = item_text_vectors(split, text_cache) if text else None
    metrics: dict[str, Any] = {
        "retrieval": _metrics_or_empty(read_metrics, run.run_dir),
        "export": {"seen": seen, "fold_in": fold_in},
    }

    with tempfile.TemporaryDirectory(prefix="recstack-export-") as tmp:
        onnx_path: Path | None = None
        item_item: ItemItemPayload | None = None
        if ranker_run is not None:
            ranker = load_run(ranker_run)
            if ranker.split.config_hash != split.config_hash or (ranker.split.n_users, ranker.split.n_items) != (
                split.n_users,
                split.n_items,
            ):
                raise ExportError(
                    f"ranker run {ranker_run} trained on split {ranker.split.config_hash} "
                    f"({ranker.split.n_users} users, {ranker.split.n_items} items), the retrieval run {run_dir} on "
                    f"{split.config_hash} ({split.n_users}, {split.n_items}); their indices would not agree: train "
                    "both on the same data/split config"
                )
            if hasattr(ranker.model, "item_item_weights"):
                params = OmegaConf.to_container(ranker.config.model, resolve=True)
                assert isinstance(params, dict)
                item_item = ItemItemPayload(
                    weights=ranker.model.item_item_weights(),
                    model=model_kind(ranker.config),
                    params={str(k): v for k, v in params.items() if k != "_target_"},
                    max_memory_gb=item_item_max_memory_gb,
                )
                metrics["ranker"] = _metrics_or_empty(read_metrics, ranker.run_dir)
            else:
                if _forward_args(ranker.model) != list(INPUT_NAMES):
                    raise ExportError(
                        f"ranker run {ranker_run} is a {model_kind(ranker.config)}, not a Wide & Deep run (ONNX "
                        "ranker) nor an item-item model such as EASE (item-item ranker)"
                    )
                onnx_path = Path(tmp) / "ranker.onnx"
                report = export_ranker(
                    ranker.model,  # type: ignore[arg-type]
                    onnx_path,
                    graph=FrozenWideAndDeep(ranker.model) if isinstance(ranker.model, WideAndDeep) else None,
                    n_users=split.n_users,
                    n_items=split.n_items,
                    parity_samples=parity_samples,
                    seed=seed,
                )
                log.info(
                    "ranker exported: ONNX vs PyTorch max |diff| %.2e on %d inputs",
                    report.max_abs_diff,
                    report.n_samples,
                )
                metrics["ranker"] = _metrics_or_empty(read_metrics, ranker.run_dir)
                metrics["ranker_parity_max_abs_diff"] = report.max_abs_diff
                if len(redacted.erased):  # after the parity check, which compares every user's rows with the model
                    tables = zero_ranker_users(onnx_path, redacted.erased, split.n_users)
                    log.info("ranker: erased users' rows zeroed in %s", ", ".join(tables) or "no per-user table")
        content_payload = None
        if content is not None:
            from recstack.export.content_section import build_content

            content_payload = build_content(items, tmp, content)
            metrics["text_encoder_parity_min_cosine"] = content_payload.encoder.parity_min_cosine
        if content_model is not None:
            minilm, unchanged = None, None
            if content_payload is not None:
                minilm = content_payload.vectors[: len(items)]
                unchanged = content_payload.items["updated_ms"].to_numpy(np.int64)[: len(items)] == 0
            least = content_parity(content_model, tfidf, items, items_vec, minilm, unchanged)
            metrics["content_model_parity_min_cosine"] = least
        out = write_bundle(
            out_dir,
            model_kind=kind,
            users=redacted.users,
            items=items,
            user_embeddings=redacted.user_embeddings,
            item_embeddings=items_vec,
            seen=redacted.seen,
            index_config=index_config,
            item_text_embeddings=text_vectors,
            ranker_onnx=onnx_path,
            dataset=split.dataset,
            split_hash=split.config_hash,
            metrics=metrics,
            erased_users=len(redacted.erased),
            content=content_payload,
            item_item=item_item,
            tfidf=tfidf,
            content_model=content_model,
            check=partial(check_no_erased_users, erasures=erasures),
        )
    log.info("bundle written to %s", out)
    return out


def _is_item_item(run_dir: str | Path) -> bool:
    """Whether the run's model is an item-item model (has ``item_item_weights``), from its config alone (no fit)."""
    from hydra.utils import get_class

    from recstack.training.runs import CONFIG_FILE

    cfg = OmegaConf.load(Path(run_dir) / CONFIG_FILE)
    return hasattr(get_class(str(cfg.model._target_)), "item_item_weights")


def _forward_args(model: Any) -> list[str]:
    import inspect

    return list(inspect.signature(model.forward).parameters)


def _metrics_or_empty(read: Any, run_dir: Path) -> dict[str, Any]:
    try:
        return dict(read(run_dir))
    except FileNotFoundError:
        log.warning("%s has no metrics.json; the manifest records no metrics for it", run_dir)
        return {}
