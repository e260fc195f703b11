"""``manifest.json``: what a bundle holds and how to check it, as typed, frozen dataclasses.

The manifest lists every other file with its sha256 and carries a ``digest``: the sha256 of its own canonical JSON
(sorted keys, no whitespace, the ``digest`` key left out), so an edited manifest is caught like an edited file. Only
:func:`recstack.bundle.writer.write_bundle` and :func:`recstack.bundle.writer.record_blend` write it.

Format history: 1 had untyped ``index`` / ``ranker`` dicts and no digest; 2 (this) is the typed layout below.
``erased_users`` came later within format 2: optional, so a manifest without it reads as 0 and its digest still checks;
``content`` likewise (a manifest without it reads as a bundle without a content section). The ranker's ``kind`` also
came later within format 2: absent means ``onnx`` (so ONNX rankers keep the manifest, and digest, they always had);
``item_item`` (:mod:`recstack.bundle.item_item`) has no ONNX contract, so a reader from before it refuses such a
bundle ("malformed ... ranker section": its ranker has no ``inputs``) instead of misreading it, and the version stays 2.
``tfidf`` (:class:`TfidfInfo`) came later too, optional like ``content``: absent means the retrieval vectors are not a
content model's TF-IDF vectors (or serving may not rebuild them), and a reader from before it serves the bundle as
before, estimating live items' vectors from their neighbours.
``content_model`` (:class:`ContentModelInfo`) came after it, optional too: the retrieval vectors are a content model's
text vectors, made from item text by its ``encoder`` (``tfidf``: the ``tfidf`` state; ``minilm``: the content section's
text encoder; ``both``: the two, weighted by ``minilm_weight``; :mod:`recstack.bundle.content_encoding`). Absent, a
bundle reads as before it (a ``tfidf`` state alone means ``encoder=tfidf``). A reader from before it ignores the key: it
serves a ``tfidf`` bundle exactly as before, a ``minilm`` one with estimated live vectors, and refuses a ``both`` one
(its ``tfidf`` state is narrower than the retrieval vectors) instead of misreading it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Literal, get_args

from recstack.bundle.contract import RankerContract
from recstack.bundle.layout import (
    ITEM_ITEM,
    MANIFEST,
    RANKER,
    TEXT_ENCODER,
    TFIDF,
    TFIDF_IDF,
    TOKENIZER,
    BundleError,
)
from recstack.retrieval.index import IndexConfig

FORMAT_VERSION = 2
DIGEST_KEY = "digest"
ContentEncoder = Literal["tfidf", "minilm", "both"]
CONTENT_ENCODERS: tuple[str, ...] = get_args(ContentEncoder)


@dataclass(frozen=True)
class IndexInfo:
    """The retrieval index: the config it was built with and its FAISS factory string."""

    config: IndexConfig
    factory: str

    @property
    def kind(self) -> str:
        """``flat`` / ``hnsw`` / ``ivf_flat`` / ``ivf_pq``."""
        return self.config.kind

    def to_dict(self) -> dict[str, Any]:
        return {"factory": self.factory, "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> IndexInfo:
        return cls(config=IndexConfig.from_mapping(raw["config"]), factory=str(raw["factory"]))


@dataclass(frozen=True)
class Blend:
    """How much the ranker counts in the served order, ``(1 - w) * z(retrieval) + w * z(ranker)``, and the validation
    grid it was chosen on: ``(weight, metric value)`` per weight tried. ``content_trust``: how far a live or cold
    item's content z moves its ranker score (:class:`recstack.serving.pipeline.PipelineConfig`), with its own grid at
    the chosen weight; None when it was not tuned (no content section, or no validation interaction with an item the
    model did not train on)."""

    weight: float
    metric: str
    grid: tuple[tuple[float, float], ...]
    content_trust: float | None = None
    content_grid: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"blend weight {self.weight} must be in [0, 1]")
        if self.grid and self.weight not in {w for w, _ in self.grid}:
            raise ValueError(f"blend weight {self.weight} is not one of the grid's weights {[w for w, _ in self.grid]}")
        if self.content_trust is not None and not 0.0 <= self.content_trust <= 1.0:
            raise ValueError(f"content_trust {self.content_trust} must be in [0, 1]")

    @property
    def scores(self) -> dict[float, float]:
        return dict(self.grid)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"weight": self.weight, "metric": self.metric, "grid": [[w, s] for w, s in self.grid]}
        if self.content_trust is not None:
            out["content_trust"] = self.content_trust
            out["content_grid"] = [[c, s] for c, s in self.content_grid]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Blend:
        grid = tuple((float(w), float(s)) for w, s in raw.get("grid", ()))
        trust = raw.get("content_trust")
        content_grid = tuple((float(c), float(s)) for c, s in raw.get("content_grid", ()))
        return cls(
            weight=float(raw["weight"]),
            metric=str(raw["metric"]),
            grid=grid,
            content_trust=None if trust is None else float(trust),
            content_grid=content_grid,
        )


RankerKind = Literal["onnx", "item_item"]
RANKER_KINDS: tuple[str, ...] = get_args(RankerKind)


@dataclass(frozen=True)
class ItemItemInfo:
    """The item-item ranker's matrix (:mod:`recstack.bundle.item_item`): ``(n_items, n_items)`` float32 weights of
    ``nbytes`` bytes, from a ``model`` run (e.g. ``ease``) with its hyper-parameters ``params``."""

    model: str
    nbytes: int
    params: dict[str, Any]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "nbytes": self.nbytes, "params": dict(self.params), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ItemItemInfo:
        return cls(
            model=str(raw["model"]), nbytes=int(raw["nbytes"]), params=dict(raw["params"]), dtype=str(raw["dtype"])
        )


@dataclass(frozen=True)
class RankerInfo:
    """The optional re-ranker: its kind, its file, what checks it (the ONNX ``contract``, or the item-item matrix's
    ``item_item`` description) and, once tuned, its blend weight.

    ``onnx``: ``ranker.onnx``, the Wide & Deep graph (:mod:`recstack.bundle.contract`), trained users only.
    ``item_item``: ``item_item.npy``, scores from the user's history (:mod:`recstack.bundle.item_item`)."""

    contract: RankerContract | None = None
    blend: Blend | None = None
    file: str = RANKER
    kind: RankerKind = "onnx"
    item_item: ItemItemInfo | None = None

    def __post_init__(self) -> None:
        if self.kind not in RANKER_KINDS:
            raise ValueError(f"ranker kind {self.kind!r} is unknown; this recstack serves {list(RANKER_KINDS)}")
        if self.kind == "onnx" and (self.contract is None or self.item_item is not None):
            raise ValueError("an onnx ranker needs its contract (inputs, output) and no item_item section")
        if self.kind == "item_item" and (self.item_item is None or self.contract is not None):
            raise ValueError("an item_item ranker needs its item_item section and no ONNX contract")

    def to_dict(self) -> dict[str, Any]:
        blend = None if self.blend is None else self.blend.to_dict()
        if self.kind == "item_item":
            assert self.item_item is not None
            return {"kind": self.kind, "file": self.file, "item_item": self.item_item.to_dict(), "blend": blend}
        assert self.contract is not None
        return {"file": self.file, **self.contract.to_dict(), "blend": blend}  # no "kind": as before it existed

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RankerInfo:
        blend = raw.get("blend")
        kind = str(raw.get("kind", "onnx"))
        if kind not in RANKER_KINDS:
            raise ValueError(f"ranker kind {kind!r} is unknown; this recstack serves {list(RANKER_KINDS)}")
        if kind == "item_item":
            return cls(
                kind="item_item",
                item_item=ItemItemInfo.from_dict(raw["item_item"]),
                blend=None if blend is None else Blend.from_dict(blend),
                file=str(raw.get("file", ITEM_ITEM)),
            )
        return cls(
            contract=RankerContract.from_dict(raw),
            blend=None if blend is None else Blend.from_dict(blend),
            file=str(raw.get("file", RANKER)),
        )


@dataclass(frozen=True)
class TextEncoderInfo:
    """The content section's text encoder: which model it was exported from, its files, the longest text it reads
    (tokens) and its parity with sentence-transformers at export (the least cosine over ``parity_samples`` texts)."""

    model_name: str
    dim: int
    max_length: int
    parity_samples: int
    parity_min_cosine: float
    file: str = TEXT_ENCODER
    tokenizer_file: str = TOKENIZER

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TextEncoderInfo:
        return cls(
            model_name=str(raw["model_name"]),
            dim=int(raw["dim"]),
            max_length=int(raw["max_length"]),
            parity_samples=int(raw["parity_samples"]),
            parity_min_cosine=float(raw["parity_min_cosine"]),
            file=str(raw.get("file", TEXT_ENCODER)),
            tokenizer_file=str(raw.get("tokenizer_file", TOKENIZER)),
        )


@dataclass(frozen=True)
class ContentInfo:
    """The optional content section (layout in :mod:`recstack.bundle.layout`): ``n_items`` content rows of which the
    first ``n_catalogue`` are the collaborative catalogue, ``dim``-d text vectors, their index and the encoder."""

    n_items: int
    n_catalogue: int
    dim: int
    index: IndexInfo
    encoder: TextEncoderInfo

    def __post_init__(self) -> None:
        if not 0 <= self.n_catalogue <= self.n_items:
            raise ValueError(f"content n_catalogue={self.n_catalogue} must be within 0..n_items={self.n_items}")
        if self.dim != self.encoder.dim:
            raise ValueError(f"content dim={self.dim} differs from its text encoder's dim={self.encoder.dim}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_items": self.n_items,
            "n_catalogue": self.n_catalogue,
            "dim": self.dim,
            "index": self.index.to_dict(),
            "encoder": self.encoder.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ContentInfo:
        return cls(
            n_items=int(raw["n_items"]),
            n_catalogue=int(raw["n_catalogue"]),
            dim=int(raw["dim"]),
            index=IndexInfo.from_dict(raw["index"]),
            encoder=TextEncoderInfo.from_dict(raw["encoder"]),
        )


@dataclass(frozen=True)
class TfidfInfo:
    """The retrieval vectors are TF-IDF vectors of item text (a content run with ``encoder=tfidf``): ``dim``
    vocabulary columns, the fitted vectorizer as plain data in ``file`` and its idf weights in ``idf_file``
    (:mod:`recstack.bundle.tfidf`), so serving encodes a live item exactly."""

    dim: int
    file: str = TFIDF
    idf_file: str = TFIDF_IDF

    def __post_init__(self) -> None:
        if type(self.dim) is not int or self.dim < 1:
            raise ValueError(f"tfidf dim={self.dim!r} must be a count >= 1 (the vocabulary's size)")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TfidfInfo:
        return cls(dim=raw["dim"], file=str(raw.get("file", TFIDF)), idf_file=str(raw.get("idf_file", TFIDF_IDF)))


@dataclass(frozen=True)
class ContentModelInfo:
    """The retrieval vectors are a content model's item vectors, each a pure function of the item's text: its
    ``encoder`` (which blocks, :func:`~recstack.bundle.content_encoding.block_names`) and ``minilm_weight`` (the MiniLM
    block's share when ``encoder=both``), so serving encodes an item added live exactly
    (:mod:`recstack.bundle.content_encoding`)."""

    encoder: ContentEncoder
    minilm_weight: float

    def __post_init__(self) -> None:
        if self.encoder not in CONTENT_ENCODERS:
            raise ValueError(f"content_model encoder={self.encoder!r} is not one of {list(CONTENT_ENCODERS)}")
        if type(self.minilm_weight) is not float or not 0.0 <= self.minilm_weight <= 1.0:
            raise ValueError(f"content_model minilm_weight={self.minilm_weight!r} must be a float in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "minilm_weight": self.minilm_weight}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ContentModelInfo:
        weight = raw["minilm_weight"]
        return cls(encoder=raw["encoder"], minilm_weight=float(weight) if type(weight) is int else weight)


def check_text_encoder_for(content_model: ContentModelInfo | None, has_content: bool, source: str) -> None:
    """A content model whose vectors hold a MiniLM block (``encoder=minilm`` or ``both``) needs the content section:
    its text encoder is what serving encodes a live item's MiniLM block with (:class:`BundleError` otherwise)."""
    if content_model is not None and content_model.encoder != "tfidf" and not has_content:
        raise BundleError(
            f"{source}: a content model with encoder={content_model.encoder} has MiniLM item vectors, which serving "
            "rebuilds for items added live only with the content section's text encoder, and there is none; export "
            "with the content section (recstack-export content.enabled=true)"
        )


def check_retrieval_text(
    content_model: ContentModelInfo | None,
    tfidf_dim: int | None,
    content_dim: int | None,
    embedding_dim: int,
    source: str,
) -> None:
    """The parts that make the retrieval vectors from text are there and as wide as the vectors
    (:class:`BundleError`): ``tfidf_dim`` (the TF-IDF state's vocabulary, None: no state) and ``content_dim`` (the
    content section's text vectors, None: no section). Without ``content_model``, a TF-IDF state alone is the
    vectors (bundles from before it)."""
    if content_model is None:
        if tfidf_dim is not None and tfidf_dim != embedding_dim:
            raise BundleError(
                f"{source}: tfidf dim={tfidf_dim} differs from embedding_dim={embedding_dim}: the TF-IDF state must "
                "describe the retrieval vectors; export the bundle again"
            )
        return
    check_text_encoder_for(content_model, content_dim is not None, source)
    encoder = content_model.encoder
    if encoder != "minilm" and tfidf_dim is None:
        raise BundleError(f"{source}: a content model with encoder={encoder} needs its TF-IDF state; none is there")
    if encoder == "minilm" and tfidf_dim is not None:
        raise BundleError(f"{source}: a content model with encoder=minilm has no TF-IDF block, yet a state is there")
    widths = {"tfidf": tfidf_dim, "minilm": content_dim, "both": (tfidf_dim or 0) + (content_dim or 0)}
    if widths[encoder] != embedding_dim:
        raise BundleError(
            f"{source}: a content model with encoder={encoder} makes {widths[encoder]}-d vectors (TF-IDF "
            f"{tfidf_dim}, MiniLM {content_dim}), the retrieval vectors are {embedding_dim}-d; export the bundle again"
        )


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
    index: IndexInfo
    ranker: RankerInfo | None = None
    text_dim: int | None = None
    # Trained users left out at export because they asked to be erased (their user_idx is a hole in users.parquet).
    erased_users: int = 0
    # Item text vectors, their own index and the text encoder serving runs on items added live (POST /items).
    content: ContentInfo | None = None
    # The retrieval vectors are TF-IDF: the vectorizer's files, so serving encodes items added live exactly.
    tfidf: TfidfInfo | None = None
    # The retrieval vectors are a content model's text vectors: how they are made (with tfidf and content's encoder).
    content_model: ContentModelInfo | None = None

    @property
    def retrieval_encoding(self) -> ContentModelInfo | None:
        """How the retrieval vectors are made from item text: ``content_model``, or for a bundle from before it that
        has a TF-IDF state, ``encoder=tfidf``; None when they are not a function of item text (MF, LightGCN)."""
        if self.content_model is None and self.tfidf is not None:
            return ContentModelInfo(encoder="tfidf", minilm_weight=0.0)
        return self.content_model

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["index"] = self.index.to_dict()
        out["ranker"] = None if self.ranker is None else self.ranker.to_dict()
        if self.content is None:
            del out["content"]  # bundles without one keep the manifest (and digest) they always had
        else:
            out["content"] = self.content.to_dict()
        if self.tfidf is None:
            del out["tfidf"]  # likewise
        else:
            out["tfidf"] = self.tfidf.to_dict()
        if self.content_model is None:
            del out["content_model"]  # likewise
        else:
            out["content_model"] = self.content_model.to_dict()
        return out

    def digest(self) -> str:
        return content_digest(self.to_dict())

    def to_json(self) -> str:
        return json.dumps({**self.to_dict(), DIGEST_KEY: self.digest()}, indent=2, sort_keys=True) + "\n"

    def with_blend(self, blend: Blend) -> BundleManifest:
        if self.ranker is None:
            raise BundleError(f"{MANIFEST}: the bundle has no ranker, so there is no blend weight to record")
        return replace(self, ranker=replace(self.ranker, blend=blend))

    @classmethod
    def from_json(cls, text: str, *, source: str = MANIFEST, verify: bool = True) -> BundleManifest:
        """Parse and check a manifest; ``verify`` also checks its digest (an edited manifest is refused)."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BundleError(f"{source}: not valid JSON ({exc}); export the bundle again") from exc
        if not isinstance(raw, dict):
            raise BundleError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            older = isinstance(version, int) and version < FORMAT_VERSION
            raise BundleError(
                f"{source}: format_version {version!r} "
                + ("was written by an older recstack" if older else "is unknown")
                + f"; this recstack reads format_version {FORMAT_VERSION}: export the bundle again "
                "(`recstack-export run=<run-dir>`)"
            )
        recorded = raw.pop(DIGEST_KEY, None)
        if verify:
            actual = content_digest(raw)
            if recorded != actual:
                raise BundleError(
                    f"{source}: digest mismatch, manifest records {recorded}, its content hashes to {actual}; "
                    "the manifest was edited after export: export the bundle again"
                )
        optional = {"ranker", "text_dim", "erased_users", "content", "tfidf", "content_model"}
        missing = sorted(f.name for f in fields(cls) if f.name not in raw and f.name not in optional)
        if missing:
            raise BundleError(f"{source}: missing field(s) {missing}; export the bundle again")
        values = {f.name: raw[f.name] for f in fields(cls) if f.name in raw}
        if not isinstance(values["files"], dict):
            raise BundleError(f"{source}: files must map file names to sha256 digests; export the bundle again")
        for name in values["files"]:
            check_file_name(name, source)
        erased = values.get("erased_users", 0)
        if type(erased) is not int or erased < 0:
            raise BundleError(f"{source}: erased_users must be a count >= 0, got {erased!r}; export the bundle again")
        try:
            values["index"] = IndexInfo.from_dict(values["index"])
            if values.get("ranker") is not None:
                values["ranker"] = RankerInfo.from_dict(values["ranker"])
                check_file_name(values["ranker"].file, source)
            if values.get("content") is not None:
                values["content"] = ContentInfo.from_dict(values["content"])
                check_file_name(values["content"].encoder.file, source)
                check_file_name(values["content"].encoder.tokenizer_file, source)
            if values.get("tfidf") is not None:
                values["tfidf"] = TfidfInfo.from_dict(values["tfidf"])
                check_file_name(values["tfidf"].file, source)
                check_file_name(values["tfidf"].idf_file, source)
            if values.get("content_model") is not None:
                values["content_model"] = ContentModelInfo.from_dict(values["content_model"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(
                f"{source}: malformed index, ranker, content, tfidf or content_model section ({exc!r}); export the "
                "bundle again"
            ) from exc
        tfidf, content = values.get("tfidf"), values.get("content")
        check_retrieval_text(
            values.get("content_model"),
            None if tfidf is None else tfidf.dim,
            None if content is None else content.dim,
            values["embedding_dim"],
            source,
        )
        return cls(**values)


def check_file_name(name: object, source: str) -> None:
    """A bundle file is named by a plain file name inside the bundle folder: no folder part, not absolute, not ``..``
    (a manifest naming ``../x`` or ``/etc/x`` would make the reader open files outside the bundle)."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or PureWindowsPath(name).drive
    ):
        raise BundleError(
            f"{source}: file name {name!r} is not a plain file name inside the bundle folder (no path separator, "
            "not absolute, not '..'); the manifest is not trusted: export the bundle again"
        )


def content_digest(content: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``content`` (sorted keys, no whitespace)."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
