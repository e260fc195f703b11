"""MiniLM (sentence-transformers) -> ``text_encoder.onnx`` + ``tokenizer.json``, parity-checked, so serving encodes
new items' text with ONNX Runtime and ``tokenizers`` alone (contract in :mod:`recstack.bundle.text_encoder`).

The traced module is the transformer followed by what sentence-transformers does after it for all-MiniLM-L6-v2:
mean pooling over the attention mask and L2 normalisation, so the graph's output is the sentence vector itself.
Exporter: ``torch.onnx.export(..., dynamo=False)`` at opset 17, as for the ranker (:mod:`recstack.export.onnx_export`
says why), with the batch and token axes dynamic; attention runs in its eager form, which traces to plain ops.

The tokenizer is the model's own ``tokenizer.json`` with sentence-transformers' settings: truncation at the model's
``max_seq_length`` (256 for MiniLM) and padding to the longest text of a batch (the file ships with a fixed 128).

Parity: :func:`check_text_parity` encodes texts with sentence-transformers and with the exported files through
:class:`recstack.bundle.text_encoder.TextEncoder` (the serving code) and requires every row's cosine to be at least
:data:`~recstack.bundle.text_encoder.PARITY_MIN_COSINE`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import shutil
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recstack.bundle.layout import sha256_file
from recstack.bundle.text_encoder import ATTENTION_MASK, EMBEDDING, INPUT_IDS, PARITY_MIN_COSINE, TextEncoder
from recstack.models.text_encoder import DEFAULT_MODEL, model_location

log = logging.getLogger(__name__)
OPSET = 17
ONNX_FILE = "text_encoder.onnx"
TOKENIZER_FILE = "tokenizer.json"


class TextParityError(RuntimeError):
    """The exported encoder's vectors differ from sentence-transformers' beyond the tolerance."""


@dataclass(frozen=True)
class TextEncoderExport:
    """What :func:`export_text_encoder` wrote and how closely it matches sentence-transformers."""

    onnx_path: Path
    tokenizer_path: Path
    model_name: str
    dim: int
    max_length: int
    parity_samples: int
    min_cosine: float


class MeanPooledEncoder(nn.Module):
    """Transformer -> mean of the token vectors under the attention mask -> unit length (sentence-transformers'
    ``Pooling(mean)`` + ``Normalize``)."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        mean = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(mean, p=2.0, dim=1)


def _sentence_model(model_name: str):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_location(model_name), device="cpu")


def _pooled_transformer(sentence_model) -> nn.Module:  # type: ignore[no-untyped-def]
    """The sentence model's transformer, checked to be the mean-pooled, normalised kind this export reproduces."""
    modules = list(sentence_model)
    kinds = [type(m).__name__ for m in modules]
    pooling = modules[1].get_config_dict() if len(modules) > 1 else {}
    if kinds[:2] != ["Transformer", "Pooling"] or pooling.get("pooling_mode", _legacy_mode(pooling)) != "mean":
        raise ValueError(f"the text model is {kinds}; only Transformer + mean Pooling (+ Normalize) can be exported")
    auto = modules[0].auto_model
    if hasattr(auto, "set_attn_implementation"):
        auto.set_attn_implementation("eager")  # plain matmul + softmax: what the TorchScript exporter traces exactly
    else:
        auto.config._attn_implementation = "eager"
    return auto.eval()


def _legacy_mode(pooling: dict) -> str:
    """sentence-transformers before 6 recorded pooling as one flag per mode."""
    return "mean" if pooling.get("pooling_mode_mean_tokens") else "other"


def export_text_encoder(
    out_dir: str | Path,
    parity_texts: Sequence[str],
    *,
    model_name: str = DEFAULT_MODEL,
    min_cosine: float = PARITY_MIN_COSINE,
    cache_dir: str | Path | None = None,
) -> TextEncoderExport:
    """Write ``text_encoder.onnx`` and ``tokenizer.json`` into ``out_dir`` and check parity on ``parity_texts``
    (at least one); on a failed check both files are removed and :class:`TextParityError` is raised.

    ``cache_dir``: keep the exported files there, keyed by the model's files and the exporter's versions, and reuse
    them on the next export (tracing a transformer takes tens of seconds); parity is checked on every export."""
    if not parity_texts:
        raise ValueError("parity_texts is empty: the export is checked on real texts (the catalogue's)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sentence = _sentence_model(model_name)
    max_length = int(sentence.max_seq_length)
    onnx_path, tokenizer_path = out / ONNX_FILE, out / TOKENIZER_FILE
    cached = _cache_folder(cache_dir, model_name, max_length) if cache_dir is not None else None
    if cached is not None and (cached / ONNX_FILE).is_file() and (cached / TOKENIZER_FILE).is_file():
        shutil.copyfile(cached / ONNX_FILE, onnx_path)
        shutil.copyfile(cached / TOKENIZER_FILE, tokenizer_path)
        log.info("text encoder: reusing the export cached in %s", cached)
    else:
        _save_tokenizer(sentence.tokenizer, tokenizer_path, max_length)
        onnx_path.write_bytes(_trace(sentence))
    try:
        worst = check_text_parity(sentence, onnx_path, tokenizer_path, parity_texts, min_cosine=min_cosine)
    except TextParityError:
        onnx_path.unlink(missing_ok=True)
        tokenizer_path.unlink(missing_ok=True)
        raise
    if cached is not None and not (cached / ONNX_FILE).is_file():
        _store(cached, onnx_path, tokenizer_path)
    dim = TextEncoder(onnx_path, tokenizer_path).dim
    log.info("text encoder exported: min cosine %.6f vs sentence-transformers on %d texts", worst, len(parity_texts))
    return TextEncoderExport(onnx_path, tokenizer_path, model_name, dim, max_length, len(parity_texts), worst)


def _trace(sentence) -> bytes:  # type: ignore[no-untyped-def]
    graph = MeanPooledEncoder(_pooled_transformer(sentence)).eval()
    sample = sentence.tokenizer(
        ["a short text", "and a somewhat longer one, to pad"], padding=True, return_tensors="pt"
    )
    args = (sample["input_ids"].long(), sample["attention_mask"].long())
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(
            graph,
            args,
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_IDS, ATTENTION_MASK],
            output_names=[EMBEDDING],
            dynamic_axes={
                INPUT_IDS: {0: "batch", 1: "tokens"},
                ATTENTION_MASK: {0: "batch", 1: "tokens"},
                EMBEDDING: {0: "batch"},
            },
            do_constant_folding=True,
        )
    return buffer.getvalue()


def _cache_folder(cache_dir: str | Path, model_name: str, max_length: int) -> Path:
    """``<cache_dir>/onnx-<key>``: the key hashes the model folder's files, the tokenizer settings and the versions
    of the exporter's packages, so a changed model or torch never reuses a stale export."""
    digest = hashlib.sha256(f"{model_name}|{max_length}|{OPSET}|{torch.__version__}".encode())
    for package in ("transformers", "sentence-transformers", "onnx"):
        try:
            digest.update(f"|{importlib_metadata.version(package)}".encode())
        except importlib_metadata.PackageNotFoundError:
            continue
    folder = Path(model_location(model_name))
    if folder.is_dir():
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(folder)).encode() + sha256_file(file).encode())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name)
    return Path(cache_dir) / f"{slug}-onnx-{digest.hexdigest()[:20]}"


def _store(folder: Path, onnx_path: Path, tokenizer_path: Path) -> None:
    """Copy a checked export into the cache, atomically (a concurrent export sees all of it or nothing)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    shutil.copyfile(onnx_path, tmp / ONNX_FILE)
    shutil.copyfile(tokenizer_path, tmp / TOKENIZER_FILE)
    try:
        tmp.rename(folder)
    except OSError:  # another export stored it first
        shutil.rmtree(tmp, ignore_errors=True)


def _save_tokenizer(hf_tokenizer, path: Path, max_length: int) -> None:  # type: ignore[no-untyped-def]
    """The fast tokenizer's ``tokenizer.json`` with truncation at ``max_length`` and padding to the batch's longest."""
    backend = hf_tokenizer.backend_tokenizer
    raw = json.loads(backend.to_str())
    pad_id = int(hf_tokenizer.pad_token_id)
    raw["truncation"] = {"direction": "Right", "max_length": max_length, "strategy": "LongestFirst", "stride": 0}
    raw["padding"] = {
        "strategy": "BatchLongest",
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": pad_id,
        "pad_type_id": 0,
        "pad_token": str(hf_tokenizer.pad_token),
    }
    path.write_text(json.dumps(raw, ensure_ascii=False))


def check_text_parity(
    sentence_model,  # type: ignore[no-untyped-def]
    onnx_path: str | Path,
    tokenizer_path: str | Path,
    texts: Sequence[str],
    *,
    min_cosine: float = PARITY_MIN_COSINE,
) -> float:
    """The least cosine over ``texts`` between sentence-transformers' vectors and the exported encoder's (through the
    serving :class:`TextEncoder`); :class:`TextParityError` when it is below ``min_cosine``."""
    expected = sentence_model.encode(
        list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    ).astype(np.float32)
    got = TextEncoder(onnx_path, tokenizer_path, intra_op_threads=0).encode(texts)
    cosine = np.sum(expected * got, axis=1) / np.maximum(
        np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1), 1e-12
    )
    worst = float(cosine.min())
    if worst < min_cosine:
        bad = int(cosine.argmin())
        raise TextParityError(
            f"{onnx_path}: ONNX text vectors differ from sentence-transformers' (cosine {worst:.6f} < {min_cosine} "
            f"on {texts[bad]!r}); the exported graph does not compute the model: do not ship it"
        )
    return worst
