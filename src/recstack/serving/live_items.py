"""Items added or changed while serving (``POST /items``), applied to one worker's pipeline and content index.

An upsert (:class:`~recstack.collect.catalogue.ItemUpsert`) becomes, in this worker:

* a text vector: the one its writer encoded when it came from this bundle's encoder, else the bundle's ONNX MiniLM
  encoder run on :func:`~recstack.data.item_text.item_text` here; an item with no text at all gets the content
  section's fallback (the catalogue's mean direction, :func:`recstack.bundle.content.fallback_vector`);
* a row of the content index (FAISS ``add``; the item's previous row, if any, is dead from then on);
* for an item the collaborative model does not know, a retrieval vector. A content bundle's retrieval vectors are a
  pure function of item text (``manifest.content_model``; a bundle from before it with ``manifest.tfidf`` alone is
  ``encoder=tfidf``), so the item gets its exact one from its :func:`~recstack.data.item_text.item_text`, for every
  encoder (:mod:`recstack.bundle.content_encoding`): ``tfidf``, the model's own vocabulary
  (:mod:`recstack.bundle.tfidf`); ``minilm``, the item's text vector above (the content section's ONNX MiniLM,
  parity-checked at export against the model's vectors); ``both``, the two blocks weighted by the model's
  ``minilm_weight``. Any other bundle's (MF, LightGCN) is estimated from its ``neighbours`` nearest catalogue items by
  text: their trained vectors averaged with softmax weights ``exp((cosine - best) / 0.05)`` (:data:`TEMPERATURE`:
  MiniLM gives most titles of one catalogue cosines of 0.5-0.8 with each other, so plain cosine weights would average
  half the catalogue; this keeps the nearest few), rescaled to their mean norm (so the estimate scores like its
  neighbours instead of shrinking toward zero as averages of vectors do). The neighbours are reported either way.
  The item is then added to the retrieval index (:meth:`recstack.serving.pipeline.Pipeline.upsert_item`): a user
  whose trained vector or recent activity points at those neighbours (or, in a content bundle, whose profile reads
  like its text) retrieves it in the next request; and the pipeline's content stage brings it to users whose recent
  items (or history) read like it, however weak its neighbours' vectors are.
  A catalogue item keeps its trained vector; its title, categories and text vector change.

Versions (the Redis log id) make applying idempotent: a record not newer than what this worker holds for the item
(the bundle's ``updated_ms`` included) changes nothing, so the same upsert read twice, from the snapshot and the log,
or from a bundle that already holds it, is applied once.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from recstack.bundle.content import ContentSection
from recstack.bundle.content_encoding import ContentTextEncoder
from recstack.bundle.layout import BundleError
from recstack.bundle.manifest import ContentModelInfo
from recstack.bundle.reader import Bundle
from recstack.bundle.tfidf import TfidfState
from recstack.collect.catalogue import ItemUpsert, parse_version
from recstack.serving.growing import GrowingRows
from recstack.serving.pipeline import Pipeline

TEMPERATURE = 0.05
"""Softmax temperature over text cosines of a live item's neighbours (see the module docstring)."""


@dataclass(frozen=True)
class Applied:
    """What one upsert did here: the item's retrieval row, whether the item is new to this worker, and its nearest
    catalogue items by text (ids, best first)."""

    item_id: str
    row: int
    created: bool
    neighbours: tuple[str, ...]


class LiveItems:
    """One worker's live catalogue: the bundle's content section plus every upsert applied since start."""

    def __init__(
        self,
        pipeline: Pipeline,
        content: ContentSection,
        encoder_id: str,
        *,
        neighbours: int = 20,
        tfidf: TfidfState | None = None,
        content_model: ContentModelInfo | None = None,
    ) -> None:
        """``content_model``: how the bundle's retrieval vectors are made from item text
        (``Bundle.manifest.retrieval_encoding``), with ``tfidf``, its TF-IDF state (``Bundle.tfidf``) when it has a
        TF-IDF block; then a new item's retrieval vector is its exact one. ``tfidf`` alone means ``encoder=tfidf``.
        :meth:`from_bundle` passes everything from a bundle."""
        if neighbours < 1:
            raise ValueError(f"neighbours={neighbours} must be at least 1")
        self.pipeline = pipeline
        self.content = content
        self.encoder = content.load_encoder()
        self.encoder_id = encoder_id
        self.dim = content.info.dim
        self.n_neighbours = neighbours
        self.index = content.index
        self.fallback = content.fallback()
        if content_model is None and tfidf is not None:
            content_model = ContentModelInfo(encoder="tfidf", minilm_weight=0.0)
        self.text_retrieval = (
            None if content_model is None else ContentTextEncoder(content_model, tfidf, minilm_dim=self.dim)
        )
        if self.text_retrieval is not None and self.text_retrieval.dim != pipeline.item_embeddings.shape[1]:
            raise BundleError(
                f"a content model (encoder={content_model.encoder}) making {self.text_retrieval.dim}-d vectors, "
                f"retrieval vectors of {pipeline.item_embeddings.shape[1]}: the pipeline is not this bundle's"
            )
        # The TF-IDF block's encoder (None without one), e.g. for its fallback.
        self.tfidf = None if self.text_retrieval is None else self.text_retrieval.tfidf
        items = content.items
        self.row_ids = GrowingRows(items["item_id"].astype(str).to_numpy(object))  # content row -> item id
        self.rows: dict[str, int] = {item: i for i, item in enumerate(self.row_ids.view)}
        self.dead = np.empty(0, np.int64)  # content rows replaced by a newer one
        # A bundle row with updated_ms > 0 came from an upsert: a record of that millisecond or older is in it.
        self.versions: dict[str, tuple[int, int]] = {
            item: ((ms, sys.maxsize) if ms > 0 else (0, 0))
            for item, ms in zip(self.row_ids.view, items["updated_ms"].astype(np.int64), strict=True)
        }
        self.applied = 0
        # The pipeline's content stage reads each row's current text vector (catalogue rows: the bundle's own).
        pipeline.attach_content(content.vectors[: content.info.n_catalogue])
        self._apply_bundle_rows(items)

    @classmethod
    def from_bundle(cls, pipeline: Pipeline, bundle: Bundle, *, neighbours: int = 20) -> LiveItems:
        """The live catalogue of ``bundle`` (which needs a content section) on its ``pipeline``: its content section,
        its encoder's digest as the encoder id, and how its retrieval vectors are made from text, if they are."""
        if bundle.content is None:
            raise BundleError(f"{bundle.root}: no content section; live items need one (export with content.enabled)")
        encoder_id = bundle.manifest.files[bundle.content.info.encoder.file]
        return cls(
            pipeline,
            bundle.content,
            encoder_id,
            neighbours=neighbours,
            tfidf=bundle.tfidf,
            content_model=bundle.manifest.retrieval_encoding,
        )

    @property
    def n_live(self) -> int:
        """Items served that the collaborative model does not know."""
        return self.pipeline.n_items - self.pipeline.n_ranked - len(self.pipeline.dead_rows)

    def _apply_bundle_rows(self, items) -> None:  # type: ignore[no-untyped-def]
        """The bundle's own upserted rows: metadata of changed catalogue items, and the items the collaborative model
        does not know (added before the export), which need a retrieval vector here."""
        n_catalogue = self.content.info.n_catalogue
        for row in np.flatnonzero(items["updated_ms"].to_numpy(np.int64) > 0):
            record = items.iloc[int(row)]
            categories = [str(c) for c in (record["categories"] if record["categories"] is not None else ())]
            vector = self.content.vectors[row]
            if row < n_catalogue:
                self.pipeline.upsert_item(str(record["item_id"]), str(record["title"]), categories, None, vector)
            else:
                embedding = self._retrieval_vector(str(record["text"] or ""), vector)[0]
                self.pipeline.upsert_item(str(record["item_id"]), str(record["title"]), categories, embedding, vector)

    # -- applying ---------------------------------------------------------------------------------------------------

    def is_newer(self, record: ItemUpsert) -> bool:
        return parse_version(record.version) > self.versions.get(record.item_id, (-1, -1))

    def vector_for(self, record: ItemUpsert) -> np.ndarray:
        """The record's own vector when this bundle's encoder made it, else encoded here (blocking: ONNX Runtime)."""
        if record.vector is not None and record.encoder == self.encoder_id and record.vector.shape == (self.dim,):
            return record.vector.astype(np.float32)
        return self.encode(record.text)

    def encode(self, text: str) -> np.ndarray:
        """The text's unit vector; the fallback for an empty text (see the module docstring)."""
        if not text.strip():
            return self.fallback.copy()
        return self.encoder.encode_one(text)

    def apply(self, record: ItemUpsert, vector: np.ndarray) -> Applied | None:
        """Apply one upsert with its text vector (:meth:`vector_for`); ``None`` when it is not newer than what this
        worker holds. Runs on the event loop, between requests (FAISS ``add`` and the arrays are not locked)."""
        if not self.is_newer(record):
            return None
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        old = self.rows.get(record.item_id)
        (content_row,) = self.index.add(vector[None, :])
        if int(content_row) != len(self.row_ids):
            raise RuntimeError(
                f"content index has {self.index.ntotal} rows, the live catalogue {len(self.row_ids) + 1}"
            )
        self.row_ids.append(record.item_id)
        self.rows[record.item_id] = int(content_row)
        if old is not None:
            self.dead = np.union1d(self.dead, [old]).astype(np.int64)
        created = record.item_id not in self.pipeline.item_index
        known = not created and self.pipeline.item_index[record.item_id] < self.pipeline.n_ranked
        embedding, neighbours = self._retrieval_vector(record.text, vector, skip=record.item_id)
        row = self.pipeline.upsert_item(
            record.item_id, record.title, record.categories, None if known else embedding, vector
        )
        self.versions[record.item_id] = parse_version(record.version)
        self.applied += 1
        return Applied(record.item_id, row, created, neighbours[:5])

    # -- the retrieval vector of an item without one ----------------------------------------------------------------

    def neighbours(self, vector: np.ndarray, k: int, skip: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(retrieval rows, cosines)`` of the ``k`` items nearest to ``vector`` by text among those with a trained
        vector (the collaborative catalogue), best first."""
        pipeline = self.pipeline
        fetch = min(self.index.ntotal, 3 * k + len(self.dead))
        exclude = [self.dead] if len(self.dead) else None
        scores, rows = self.index.search(vector[None, :].astype(np.float32), fetch, exclude)
        out_rows, out_scores = [], []
        for content_row, score in zip(rows[0].tolist(), scores[0].tolist(), strict=True):
            if content_row < 0:
                continue
            item = self.row_ids.view[content_row]
            row = pipeline.item_index.get(item)
            if item == skip or row is None or row >= pipeline.n_ranked or not pipeline.collaborative[row]:
                continue
            out_rows.append(row)
            out_scores.append(score)
            if len(out_rows) == k:
                break
        return np.asarray(out_rows, np.int64), np.asarray(out_scores, np.float32)

    def _retrieval_vector(
        self, text: str, vector: np.ndarray, skip: str | None = None
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """The retrieval vector of an item the collaborative model does not know (module docstring): exact in a
        content bundle (from ``text`` and its text ``vector``, the MiniLM block), else :meth:`_estimate`; and its
        nearest catalogue items by text, either way."""
        estimate, neighbours = self._estimate(vector, skip)
        if self.text_retrieval is None:
            return estimate, neighbours
        return self.text_retrieval.encode_one(text, vector), neighbours

    def _estimate(self, vector: np.ndarray, skip: str | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
        """The retrieval vector of an item from its text neighbours (module docstring), and their ids."""
        rows, cosines = self.neighbours(vector, self.n_neighbours, skip)
        embeddings = self.pipeline.item_embeddings
        if not len(rows):  # no catalogue item at all: the catalogue's mean vector
            rows = np.flatnonzero(self.pipeline.collaborative)
            cosines = np.ones(len(rows), np.float32)
        weights = np.exp((cosines.astype(np.float64) - float(cosines.max())) / TEMPERATURE)
        chosen = embeddings[rows].astype(np.float64)
        mean = weights @ chosen / weights.sum()
        norm = float(np.linalg.norm(mean))
        target = float(weights @ np.linalg.norm(chosen, axis=1) / weights.sum())
        estimate = mean * (target / norm) if norm > 0 else mean
        ids = tuple(str(self.pipeline.item_ids[r]) for r in rows[: self.n_neighbours])
        return estimate.astype(np.float32), ids
