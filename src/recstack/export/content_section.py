"""The bundle's content section at export: the catalogue's text plus the items upserted live, MiniLM vectors from the
exported ONNX encoder itself, and the encoder's files (layout in :mod:`recstack.bundle.layout`).

Rows: the split's items in ``item_idx`` order (text :func:`~recstack.data.item_text.item_text`, ``updated_ms`` 0), with
the title, categories and text of those changed through ``POST /items``, then the upserted items the split does not
hold. Upserts come from Redis (:func:`recstack.collect.catalogue.read_upserts`, ``recstack-export`` reads them), so a
bundle exported after an upsert serves the item without Redis, and a server of it applies only later upserts.

Every row is encoded by the exported ``text_encoder.onnx`` through the serving code
(:class:`~recstack.bundle.text_encoder.TextEncoder`), so catalogue items and items added later are encoded by the one
function; its parity with sentence-transformers is checked on up to ``parity_samples`` catalogue texts (a seeded
sample) before anything is written. Empty texts get the fallback vector (:func:`recstack.bundle.content.fallback_vector`).
For a content retrieval run with a MiniLM block (``encoder=minilm`` or ``both``) this encoder is also what serving
builds a live item's retrieval vector with, so export checks the catalogue rows against the model's item vectors too
(:func:`recstack.export.exporter.content_parity`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recstack.bundle.content import fallback_vector
from recstack.bundle.manifest import TextEncoderInfo
from recstack.bundle.text_encoder import TextEncoder
from recstack.bundle.writer import ContentPayload
from recstack.collect.catalogue import ItemUpsert, parse_version
from recstack.data.item_text import item_text
from recstack.export.text_encoder_onnx import export_text_encoder
from recstack.models.text_encoder import DEFAULT_MODEL
from recstack.retrieval.index import IndexConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContentOptions:
    """How export builds the content section: its index (flat or HNSW, inner product over unit vectors), the upserts
    to fold in, and the parity check's size and seed."""

    index_config: IndexConfig = field(default_factory=lambda: IndexConfig(kind="hnsw", metric="ip"))
    upserts: Sequence[ItemUpsert] = ()
    parity_samples: int = 1000
    seed: int = 0
    model_name: str = DEFAULT_MODEL
    cache_dir: str | Path | None = "data/cache/text"
    """Where the traced encoder is kept between exports (:func:`~recstack.export.text_encoder_onnx.export_text_encoder`)."""


def content_items(catalogue: pd.DataFrame, upserts: Sequence[ItemUpsert]) -> pd.DataFrame:
    """The content items table: ``catalogue`` (in ``item_idx`` order) with the upserts applied, new items after it."""
    rows = catalogue.sort_values("item_idx").reset_index(drop=True)
    ids = rows["item_id"].astype(str).tolist()
    titles = rows["title"].fillna("").astype(str).tolist()
    categories = [[str(c) for c in cats] if cats is not None else [] for cats in rows["categories"]]
    texts = [item_text(r) for r in rows.to_dict("records")]
    updated = [0] * len(ids)
    position = {item: i for i, item in enumerate(ids)}
    for record in sorted(upserts, key=lambda r: parse_version(r.version)):
        at = position.get(record.item_id)
        if at is None:
            at = position[record.item_id] = len(ids)
            for column in (ids, titles, categories, texts, updated):
                column.append(None)
        ids[at], titles[at], categories[at] = record.item_id, record.title, list(record.categories)
        texts[at], updated[at] = record.text, record.updated_ms
    return pd.DataFrame(
        {
            "content_idx": np.arange(len(ids), dtype=np.int64),
            "item_id": ids,
            "title": titles,
            "categories": categories,
            "text": texts,
            "updated_ms": np.asarray(updated, dtype=np.int64),
        }
    )


def build_content(catalogue: pd.DataFrame, work_dir: str | Path, options: ContentOptions) -> ContentPayload:
    """Export the encoder into ``work_dir``, encode every content row with it, and return what
    :func:`recstack.bundle.writer.write_bundle` writes."""
    table = content_items(catalogue, options.upserts)
    n_catalogue = len(catalogue)
    texts = table["text"].tolist()
    catalogue_texts = [t for t in texts[:n_catalogue] if t]
    rng = np.random.default_rng(options.seed)
    take = min(options.parity_samples, len(catalogue_texts))
    sample = [catalogue_texts[i] for i in np.sort(rng.choice(len(catalogue_texts), take, replace=False))]
    exported = export_text_encoder(
        Path(work_dir) / "text-encoder", sample, model_name=options.model_name, cache_dir=options.cache_dir
    )
    encoder = TextEncoder(exported.onnx_path, exported.tokenizer_path, intra_op_threads=0)
    vectors = encoder.encode(texts)
    empty = np.array([not t for t in texts], dtype=bool)
    if empty.any():
        vectors[empty] = fallback_vector(vectors[:n_catalogue][~empty[:n_catalogue]])
    log.info(
        "content section: %d items (%d upserted after training), %d without text; encoder parity %.6f on %d texts",
        len(table),
        len(table) - n_catalogue,
        int(empty.sum()),
        exported.min_cosine,
        exported.parity_samples,
    )
    return ContentPayload(
        items=table,
        vectors=vectors,
        index_config=options.index_config,
        encoder_onnx=exported.onnx_path,
        tokenizer=exported.tokenizer_path,
        encoder=TextEncoderInfo(
            model_name=exported.model_name,
            dim=exported.dim,
            max_length=exported.max_length,
            parity_samples=exported.parity_samples,
            parity_min_cosine=exported.min_cosine,
        ),
    )
