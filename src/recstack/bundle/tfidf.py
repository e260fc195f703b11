"""The TF-IDF state of a content (TF-IDF) bundle: the fitted vectorizer as plain data, never a pickle, and the one
function that encodes item text with a vectorizer, for the model (:mod:`recstack.models.content`) and serving alike.

A content run with ``encoder=tfidf`` is served from its TF-IDF item vectors (the bundle's retrieval vectors), so an
item added live (``POST /items``) gets its exact vector rather than an estimate from its text neighbours: the fitted
vocabulary's transform of its :func:`~recstack.data.item_text.item_text`, L2-normalised (:func:`tfidf_rows`), and
the model's fallback, the catalogue's mean direction, for a text that is empty or has no term of the vocabulary
(:func:`tfidf_vectors`). Files (layout in :mod:`recstack.bundle.layout`):

* ``tfidf.json``: ``format``, ``vocabulary`` (term -> column), ``settings`` (the constructor settings that change
  ``transform``, :data:`SETTINGS`; the stop words as the resolved list, so another scikit-learn's built-in list cannot
  change them) and ``fallback`` (the float32 vector of an item without usable text; exact through JSON's doubles);
* ``tfidf_idf.npy``: ``idf_``, one weight per column.

scikit-learn is imported only when a vectorizer is rebuilt (:class:`TfidfEncoder`), never torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recstack.bundle.layout import TFIDF, TFIDF_IDF, BundleError
from recstack.bundle.manifest import TfidfInfo

TFIDF_FORMAT = 1
# The TfidfVectorizer settings that change transform() (max_df, min_df, max_features only shape the fitted vocabulary),
# with the JSON types each may take. Callables (preprocessor, tokenizer, a callable analyzer) cannot be plain data.
SETTINGS: dict[str, tuple[type, ...]] = {
    "analyzer": (str,),
    "binary": (bool,),
    "decode_error": (str,),
    "dtype": (str,),
    "encoding": (str,),
    "input": (str,),
    "lowercase": (bool,),
    "ngram_range": (list,),
    "norm": (str, type(None)),
    "smooth_idf": (bool,),
    "stop_words": (list, type(None)),
    "strip_accents": (str, type(None)),
    "sublinear_tf": (bool,),
    "token_pattern": (str, type(None)),
    "use_idf": (bool,),
}
DTYPES: tuple[str, ...] = ("float32", "float64")
UNIT_ATOL = 1e-3


def tfidf_rows(vectorizer: Any, texts: Sequence[str]) -> np.ndarray:
    """``vectorizer.transform(texts)`` as float32 unit rows ``(len(texts), vocabulary)``; a text with no term of the
    vocabulary is a zero row (:func:`tfidf_vectors` gives it the fallback)."""
    x = vectorizer.transform(list(texts)).toarray()
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x, dtype=np.float32), where=norms > 0).astype(np.float32)


def tfidf_vectors(vectorizer: Any, texts: Sequence[str], fallback: np.ndarray) -> np.ndarray:
    """The TF-IDF item vectors of ``texts``: :func:`tfidf_rows`, with ``fallback`` for an empty text or a zero row
    (the content model's rule, :func:`recstack.models.content.fill_empty_rows`)."""
    rows = tfidf_rows(vectorizer, texts)
    missing = np.array([not t for t in texts], dtype=bool) | ~np.any(rows != 0, axis=1)
    rows[missing] = fallback
    return rows


@dataclass(frozen=True)
class TfidfState:
    """A fitted TfidfVectorizer as plain data: ``vocabulary`` (term -> column 0..n-1), ``idf`` ``(n,)``, the
    :data:`SETTINGS` that change ``transform``, and the unit ``fallback`` ``(n,)`` float32 of an item without usable
    text. Checked on construction (:class:`BundleError` naming ``source``)."""

    vocabulary: Mapping[str, int]
    idf: np.ndarray
    settings: Mapping[str, Any]
    fallback: np.ndarray
    source: str = TFIDF

    def __post_init__(self) -> None:
        n = len(self.vocabulary)
        columns = sorted(self.vocabulary.values()) if n else []
        if not n or any(type(c) is not int for c in columns) or columns != list(range(n)):
            raise BundleError(f"{self.source}: the vocabulary must map {n} terms to the columns 0..{n - 1}, once each")
        if sorted(self.settings) != sorted(SETTINGS):
            raise BundleError(
                f"{self.source}: settings {sorted(self.settings)} differ from the expected {sorted(SETTINGS)}"
            )
        for name, types in SETTINGS.items():
            if not isinstance(self.settings[name], types):
                raise BundleError(f"{self.source}: setting {name}={self.settings[name]!r} has the wrong type")
        s = self.settings
        if s["input"] != "content" or s["analyzer"] not in ("word", "char", "char_wb") or not s["use_idf"]:
            raise BundleError(f"{self.source}: input must be 'content', analyzer a name, use_idf true (got {dict(s)})")
        if s["dtype"] not in DTYPES or [type(v) for v in s["ngram_range"]] != [int, int]:
            raise BundleError(f"{self.source}: dtype must be one of {DTYPES} and ngram_range two ints (got {dict(s)})")
        if self.idf.shape != (n,) or self.idf.dtype.name not in DTYPES or not np.isfinite(self.idf).all():
            raise BundleError(
                f"{TFIDF_IDF}: {self.idf.dtype} {self.idf.shape}, expected ({n},) finite float32/float64 idf weights"
            )
        norm = float(np.linalg.norm(self.fallback)) if self.fallback.shape == (n,) else -1.0
        if self.fallback.dtype != np.float32 or not abs(norm - 1.0) <= UNIT_ATOL:
            raise BundleError(f"{self.source}: fallback must be a ({n},) float32 unit vector")

    @property
    def dim(self) -> int:
        """Columns of the vectors: the vocabulary's size."""
        return len(self.vocabulary)

    @classmethod
    def from_vectorizer(cls, vectorizer: Any, fallback: np.ndarray) -> TfidfState:
        """The state of a fitted ``TfidfVectorizer``; refused (:class:`BundleError`) when a setting that changes
        ``transform`` is a callable (a custom tokenizer or preprocessor cannot be written as plain data)."""
        params = vectorizer.get_params()
        custom = [name for name in ("preprocessor", "tokenizer", "analyzer") if callable(params[name])]
        if custom:
            raise BundleError(f"TF-IDF {custom} are callables: a bundle holds the vectorizer as plain data only")
        stop = vectorizer.get_stop_words()
        settings = {name: params[name] for name in SETTINGS}
        settings.update(
            dtype=np.dtype(params["dtype"]).name,
            ngram_range=[int(v) for v in params["ngram_range"]],
            stop_words=None if stop is None else sorted(str(w) for w in stop),
        )
        vocabulary = {str(term): int(column) for term, column in vectorizer.vocabulary_.items()}
        idf = np.array(vectorizer.idf_, copy=True)
        return cls(vocabulary, idf, settings, np.array(fallback, dtype=np.float32, copy=True))

    def write(self, folder: Path) -> TfidfInfo:
        """Write ``tfidf.json`` and ``tfidf_idf.npy`` into ``folder``; returns the manifest's entry."""
        info = TfidfInfo(dim=self.dim)
        payload = {
            "format": TFIDF_FORMAT,
            "vocabulary": dict(self.vocabulary),
            "settings": dict(self.settings),
            "fallback": [float(v) for v in self.fallback],
        }
        (folder / info.file).write_text(json.dumps(payload, sort_keys=True) + "\n")
        np.save(folder / info.idf_file, np.ascontiguousarray(self.idf), allow_pickle=False)
        return info

    @classmethod
    def read(cls, folder: Path, info: TfidfInfo) -> TfidfState:
        """The state written by :meth:`write`, checked against the manifest's ``info`` (:class:`BundleError`)."""
        try:
            raw = json.loads((folder / info.file).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{info.file}: cannot be read as JSON ({exc}); export the bundle again") from exc
        if not isinstance(raw, dict) or raw.get("format") != TFIDF_FORMAT:
            raise BundleError(f"{info.file}: expected a TF-IDF state of format {TFIDF_FORMAT}; export the bundle again")
        try:
            idf = np.load(folder / info.idf_file, allow_pickle=False)
        except ValueError as exc:  # object arrays need pickle: refuse them
            raise BundleError(
                f"{info.idf_file}: cannot be read without pickle ({exc}); the bundle is not trusted"
            ) from exc
        vocabulary, settings, fallback = raw.get("vocabulary"), raw.get("settings"), raw.get("fallback")
        if not isinstance(vocabulary, dict) or not isinstance(settings, dict) or not isinstance(fallback, list):
            raise BundleError(f"{info.file}: vocabulary, settings and fallback are missing; export the bundle again")
        try:
            fallback_vector = np.asarray(fallback, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{info.file}: fallback is not a list of numbers; export the bundle again") from exc
        state = cls(vocabulary, idf, settings, fallback_vector, source=info.file)
        if state.dim != info.dim:
            raise BundleError(f"{info.file}: {state.dim} vocabulary columns, the manifest says {info.dim}")
        return state


class TfidfEncoder:
    """A :class:`TfidfState` rebuilt as a scikit-learn ``TfidfVectorizer`` (``vocabulary=`` and ``idf_`` set, nothing
    fitted), encoding texts as the model encoded its catalogue (:func:`tfidf_vectors`)."""

    def __init__(self, state: TfidfState) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        settings = {**state.settings, "dtype": np.dtype(state.settings["dtype"])}
        settings["ngram_range"] = tuple(settings["ngram_range"])
        self.vectorizer = TfidfVectorizer(vocabulary=dict(state.vocabulary), **settings)
        self.vectorizer.idf_ = state.idf
        self.fallback = state.fallback
        self.dim = state.dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 unit rows."""
        return tfidf_vectors(self.vectorizer, texts, self.fallback)

    def encode_one(self, text: str) -> np.ndarray:
        """One text's ``(dim,)`` vector."""
        return self.encode([text])[0]
