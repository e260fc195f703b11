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
    grid it was chosen on: ``(weight, metric value)`` per weight tried."""

    weight: float
    metric: str
    grid: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"blend weight {self.weight} must be in [0, 1]")
        if self.grid and self.weight not in {w for w, _ in self.grid}:
            raise ValueError(f"blend weight {self.weight} is not one of the grid's weights {[w for w, _ in self.grid]}")

    @property
    def scores(self) -> dict[float, float]:
        return dict(self.grid)

    def to_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "metric": self.metric, "grid": [[w, s] for w, s in self.grid]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Blend:
        grid = tuple((float(w), float(s)) for w, s in raw.get("grid", ()))
        return cls(weight=float(raw["weight"]), metric=str(raw["metric"]), grid=grid)


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
        optional = {"ranker", "text_dim", "erased_users", "content", "tfidf"}
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
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(
                f"{source}: malformed index, ranker, content or tfidf section ({exc!r}); export the bundle again"
            ) from exc
        if values.get("tfidf") is not None and values["tfidf"].dim != values["embedding_dim"]:
            raise BundleError(
                f"{source}: tfidf dim={values['tfidf'].dim} differs from embedding_dim={values['embedding_dim']}: "
                "the TF-IDF state must describe the retrieval vectors; export the bundle again"
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
