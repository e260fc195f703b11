"""Content-based recommender: items described by their text, users by the items they trained on, cosine matching.

Item vectors (:attr:`ContentRecommender.item_vectors`, float32, L2-normalised, rows in ``item_idx`` order) come from
the item's text (:func:`~recstack.models.text_encoder.item_text`: title, categories, year, tags), by ``encoder``:

* ``tfidf``: scikit-learn's TF-IDF over that text, vocabulary fitted on the catalogue (English stop words removed,
  terms in more than ``max_df`` of the items dropped, so the "Genres:"/"Year:" labels every item carries weigh
  nothing); a dense block of at most ``max_features`` columns;
* ``minilm``: the MiniLM sentence vectors (:func:`~recstack.models.text_encoder.encode_items`, cached on disk under
  ``text_cache_dir``);
* ``both``: the two L2-normalised blocks side by side, scaled by ``sqrt(1 - minilm_weight)`` and ``sqrt(minilm_weight)``,
  so a row stays unit length and the item-item cosine is ``(1 - w) cos_tfidf + w cos_minilm``.

The blocks are combined by :func:`recstack.bundle.content_encoding.combine_blocks`, serving's function too: an exported
bundle records the encoder and weight (``manifest.content_model``) beside the TF-IDF state, and its content section's
ONNX MiniLM encoder gives the MiniLM block, so an item added live gets the vector this model would give it.

Fallback: an item whose text is empty (no title, categories, year or tags) gets, in every block, the mean of the other
items' vectors (re-normalised): "an average item". An item whose text has no term of the TF-IDF vocabulary (only stop
words, or only categories and words no item had when the vocabulary was fitted, e.g. an unknown category of an item
added later through :meth:`ContentRecommender.encode`) gets that mean in the TF-IDF block and keeps its MiniLM block.
A catalogue where no item has any text is refused: there is nothing to be content-based on.

User vectors (:meth:`ContentRecommender.user_vectors`) are the weighted mean of the user's training interactions'
item vectors, L2-normalised (so only the direction matters, and mean and sum coincide). Each training row weighs
``0.5 ** (age / half_life_days)``, its age counted back from the user's latest training interaction (null: no decay),
times the row's ``value`` (the event weight: a rating's stars, the lake's per-event weight) when ``weight_by_value``;
repeated events of one pair add up. A user with no usable history (zero weights) gets the profile of the whole
training set. Score = cosine between the user vector and each item vector, in [-1, 1].

Memory: ``n_items x (vocabulary + 384)`` float32 item vectors; users are scored in the evaluator's chunks from the
sparse weight matrix, so nothing of size ``n_users x dim`` is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recstack.bundle.content_encoding import CONTENT_ENCODERS, block_names, combine_blocks
from recstack.bundle.manifest import ContentEncoder, ContentModelInfo
from recstack.bundle.tfidf import TfidfState, tfidf_rows
from recstack.data.prepared import PreparedSplit
from recstack.models.base import Recommender
from recstack.models.text_encoder import item_text

Encoder = ContentEncoder  # the bundle's names (recstack.bundle.content_encoding): one list, for model and serving
ENCODERS: tuple[str, ...] = CONTENT_ENCODERS
_DAY_SECONDS = 86_400.0


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x, dtype=np.float32), where=norms > 0).astype(np.float32)


def fill_empty_rows(
    block: np.ndarray, empty: np.ndarray, mean: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``block`` (L2-normalised rows) with the rows where ``empty`` is True, or that are all zero, replaced by ``mean``
    (default: the normalised mean of the other rows); returns the block and the mean used."""
    empty = empty | ~np.any(block != 0, axis=1)
    if mean is None:
        if empty.all():
            raise ValueError("no item has a usable text vector: the content model needs item text (title, categories)")
        mean = l2_normalise(block[~empty].mean(axis=0, keepdims=True))[0]
    out = block.copy()
    out[empty] = mean
    return out, mean


def interaction_weights(
    user: np.ndarray,
    item: np.ndarray,
    timestamp: np.ndarray,
    value: np.ndarray,
    shape: tuple[int, int],
    half_life_days: float | None = None,
    weight_by_value: bool = False,
) -> sp.csr_matrix:
    """Users x items CSR of each pair's summed row weights (see the module docstring): recency decay by the age behind
    the user's latest row (``half_life_days``; None: 1), times ``value`` when ``weight_by_value``."""
    user = np.asarray(user, dtype=np.int64)
    weight = np.ones(len(user), dtype=np.float64)
    if half_life_days is not None and len(user):
        ts = np.asarray(timestamp, dtype=np.int64)
        latest = np.full(shape[0], np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(latest, user, ts)
        weight = 0.5 ** ((latest[user] - ts) / (half_life_days * _DAY_SECONDS))
    if weight_by_value:
        weight = weight * np.asarray(value, dtype=np.float64)
    matrix = sp.csr_matrix((weight, (user, np.asarray(item, dtype=np.int64))), shape=shape)
    matrix.sum_duplicates()
    return matrix


class ContentRecommender(Recommender):
    """Content-based recommender over item text (see the module docstring for the vectors, fallbacks and weights)."""

    scores_untrained_items = True  # an item's text is its profile, with or without interactions

    def __init__(
        self,
        n_users: int,
        n_items: int,
        encoder: Encoder = "tfidf",
        minilm_weight: float = 0.5,
        half_life_days: float | None = None,
        weight_by_value: bool = False,
        max_features: int = 4096,
        min_df: int = 1,
        max_df: float = 0.9,
        text_cache_dir: str | Path = "data/cache/text",
    ) -> None:
        if encoder not in ENCODERS:
            raise ValueError(f"content encoder={encoder!r} is not one of {list(ENCODERS)}")
        if not 0.0 <= minilm_weight <= 1.0:
            raise ValueError(f"content minilm_weight={minilm_weight} must be in [0, 1] (the MiniLM block's share)")
        if half_life_days is not None and not half_life_days > 0:
            raise ValueError(f"content half_life_days={half_life_days} must be > 0, or null for no recency decay")
        if max_features < 1:
            raise ValueError(f"content max_features={max_features} must be >= 1")
        if min_df < 1:
            raise ValueError(f"content min_df={min_df} must be >= 1: the fewest items a TF-IDF term must be in")
        if not 0.0 < max_df <= 1.0:
            raise ValueError(f"content max_df={max_df} must be in (0, 1]: the largest share of items a term may be in")
        self.n_users = n_users
        self.n_items = n_items
        self.encoder = encoder
        self.minilm_weight = minilm_weight
        self.half_life_days = half_life_days
        self.weight_by_value = weight_by_value
        self.max_features = max_features
        self.min_df = min_df
        self.max_df = max_df
        self.text_cache_dir = Path(text_cache_dir)
        self.item_vectors: np.ndarray | None = None  # (n_items, dim) float32, unit rows, item_idx order
        self.weights: sp.csr_matrix | None = None  # (n_users, n_items) interaction weights of the user profiles
        self._vectorizer = None  # the fitted TfidfVectorizer
        self._means: dict[str, np.ndarray] = {}  # the fallback (mean item) vector of each block
        self._default_user: np.ndarray | None = None

    @property
    def uses(self) -> tuple[str, ...]:
        """The blocks this encoder builds, in column order."""
        return block_names(self.encoder)

    def fit(self, split: PreparedSplit) -> Self:
        items = split.items.sort_values("item_idx")
        if len(items) != self.n_items or split.n_users != self.n_users:
            raise ValueError(
                f"ContentRecommender built for {self.n_users} users x {self.n_items} items, but the split has "
                f"{split.n_users} x {len(items)} ({split!r})"
            )
        if "tfidf" in self.uses:
            from sklearn.feature_extraction.text import TfidfVectorizer

            texts = [item_text(row) for row in items.to_dict("records")]
            if not any(texts):
                raise ValueError(f"no item of {split!r} has text: the content model needs item metadata")
            # max_df is a share of the items; on a catalogue too small for it to leave any term, keep them all
            max_df = self.max_df if self.max_df * len(texts) >= 1 else 1.0
            self._vectorizer = TfidfVectorizer(
                stop_words="english",
                sublinear_tf=True,
                min_df=self.min_df,
                max_df=max_df,
                max_features=self.max_features,
                dtype=np.float32,
            )
            try:
                self._vectorizer.fit(texts)
            except ValueError as exc:  # every term a stop word, or in more than max_df of the items
                raise ValueError(f"content TF-IDF found no usable term in the item text of {split!r}: {exc}") from exc
        self._means = {}
        self.item_vectors = self._encode(items)
        train = split.train
        self.weights = interaction_weights(
            train["user_idx"].to_numpy(),
            train["item_idx"].to_numpy(),
            train["timestamp"].to_numpy(),
            train["value"].to_numpy(),
            (self.n_users, self.n_items),
            self.half_life_days,
            self.weight_by_value,
        )
        popularity = split.item_popularity.astype(np.float32)[None, :]
        self._default_user = l2_normalise(popularity @ self.item_vectors)[0]
        return self

    def encode(self, items: pd.DataFrame) -> np.ndarray:
        """Vectors of ``items`` (rows of an items table: title, categories, year, text), float32 unit rows, in the
        frame's order, with the fitted vocabulary and fallbacks: the same function for the catalogue at fit time and
        for items added later."""
        if self.item_vectors is None:
            raise RuntimeError("ContentRecommender is not fitted; call fit(split) first")
        return self._encode(items)

    def _encode(self, items: pd.DataFrame) -> np.ndarray:
        texts = [item_text(row) for row in items.to_dict("records")]
        empty = np.array([not t for t in texts], dtype=bool)
        blocks = []
        for name in self.uses:
            if name == "tfidf":
                block = tfidf_rows(self._vectorizer, texts)  # serving's function too (recstack.bundle.tfidf)
            else:
                from recstack.models.text_encoder import encode_items

                block = encode_items(items, cache_dir=self.text_cache_dir, progress=False)
            block, self._means[name] = fill_empty_rows(block, empty, self._means.get(name))
            blocks.append(block)
        # serving's formula too (recstack.bundle.content_encoding), so a live item gets exactly this vector
        return combine_blocks(self.encoder, self.minilm_weight, blocks)

    def tfidf_state(self) -> TfidfState | None:
        """The fitted TF-IDF vectorizer and its fallback as plain data (:mod:`recstack.bundle.tfidf`), which
        ``recstack-export`` writes into the bundle so serving encodes items added live exactly as :meth:`encode`
        does (the TF-IDF block, for ``encoder=both``); a read-only copy. None for ``encoder=minilm``, which has no
        TF-IDF block."""
        if self.item_vectors is None:
            raise RuntimeError("ContentRecommender is not fitted; call fit(split) first")
        if "tfidf" not in self.uses:
            return None
        return TfidfState.from_vectorizer(self._vectorizer, self._means["tfidf"])

    def content_model_info(self) -> ContentModelInfo:
        """How :meth:`encode` makes an item's vector from its text, for the bundle's manifest (``content_model``):
        with the TF-IDF state (:meth:`tfidf_state`) and the content section's MiniLM encoder, serving encodes items
        added live exactly (:mod:`recstack.bundle.content_encoding`)."""
        return ContentModelInfo(encoder=self.encoder, minilm_weight=float(self.minilm_weight))

    def user_vectors(self, users: np.ndarray | torch.Tensor) -> np.ndarray:
        """The users' profile vectors, float32 unit rows ``(len(users), dim)`` (see the module docstring)."""
        if self.weights is None or self.item_vectors is None or self._default_user is None:
            raise RuntimeError("ContentRecommender is not fitted; call fit(split) first")
        idx = users.detach().cpu().numpy() if isinstance(users, torch.Tensor) else np.asarray(users)
        vectors = l2_normalise(np.asarray(self.weights[idx] @ self.item_vectors, dtype=np.float32))
        vectors[~np.any(vectors != 0, axis=1)] = self._default_user
        return vectors

    def fold_in(
        self, items: np.ndarray, timestamps: np.ndarray | None = None, values: np.ndarray | None = None
    ) -> np.ndarray:
        """The profile vector (float32, unit length) of one history not seen in training, e.g. a new user's recent
        clicks: item indices, with their times and values, weighted like the training profiles."""
        if self.item_vectors is None or self._default_user is None:
            raise RuntimeError("ContentRecommender is not fitted; call fit(split) first")
        items = np.asarray(items, dtype=np.int64)
        times = np.zeros(len(items), np.int64) if timestamps is None else np.asarray(timestamps)
        vals = np.ones(len(items), np.float32) if values is None else np.asarray(values)
        w = interaction_weights(
            np.zeros(len(items), np.int64),
            items,
            times,
            vals,
            (1, self.n_items),
            self.half_life_days,
            self.weight_by_value,
        )
        vector = l2_normalise(np.asarray(w @ self.item_vectors, dtype=np.float32))[0]
        return vector if np.any(vector != 0) else self._default_user.copy()

    def user_embeddings(self) -> torch.Tensor:
        """Every user's profile vector: with :meth:`item_embeddings`, dot products are :meth:`score_all`'s cosines, so
        ``recstack-export`` serves this model from a FAISS index over its item vectors (how they are made from text
        in the bundle: :meth:`content_model_info`)."""
        return torch.from_numpy(self.user_vectors(np.arange(self.n_users)))

    def item_embeddings(self) -> torch.Tensor:
        """The item vectors (unit rows; see :meth:`user_embeddings`)."""
        if self.item_vectors is None:
            raise RuntimeError("ContentRecommender is not fitted; call fit(split) first")
        return torch.from_numpy(np.ascontiguousarray(self.item_vectors, dtype=np.float32))

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        if self.item_vectors is None:
            raise RuntimeError("ContentRecommender is not fitted; call fit(split) first")
        scores = self.user_vectors(users) @ self.item_vectors.T  # cosine: both sides are unit rows
        return torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)).to(users.device)
