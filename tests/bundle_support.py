"""A small structured bundle with a real ONNX ranker, shared by the serving and offline tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recstack.bundle.contract import INPUT_NAMES, SCORE
from recstack.data.prepared import PreparedSplit


def random_bundle_args(
    split: PreparedSplit, model_kind: str, item_columns: Sequence[str] | None = None
) -> dict[str, Any]:
    """``write_bundle``'s arguments for ``split``: random 8-d user and item embeddings (seed 0), the catalogue
    (``item_columns`` of it; all by default) with its popularity, the training seen lists and a flat index."""
    rng = np.random.default_rng(0)
    items = (split.items if item_columns is None else split.items[list(item_columns)]).copy()
    items["popularity"] = split.item_popularity.astype(np.int64)
    return dict(
        model_kind=model_kind,
        users=split.users,
        items=items,
        user_embeddings=rng.standard_normal((split.n_users, 8)).astype(np.float32),
        item_embeddings=rng.standard_normal((split.n_items, 8)).astype(np.float32),
        seen=split.matrix("train"),
        index_config={"kind": "flat"},
    )


def bundle_rewrite_args(source: Path, **changes: Any) -> dict[str, Any]:
    """``write_bundle``'s arguments that rewrite the bundle at ``source`` as it is (its model kind, users, items,
    vectors, seen lists, ONNX ranker and split; a flat inner-product index), with ``changes`` on top."""
    from recstack.bundle.reader import Bundle

    bundle = Bundle.load(source)
    args: dict[str, Any] = dict(
        model_kind=bundle.manifest.model_kind,
        users=bundle.users,
        items=bundle.items,
        user_embeddings=bundle.user_embeddings,
        item_embeddings=bundle.item_embeddings,
        seen=bundle.seen,
        index_config={"kind": "flat", "metric": "ip"},
        ranker_onnx=bundle.ranker_path,
        split_hash=bundle.manifest.split_hash,
    )
    return {**args, **changes}


def train_tiny(
    model: str,
    split: PreparedSplit,
    root: Path,
    *extra: str,
    name: str | None = None,
    text_cache_dir: Path | None = None,
) -> Path:
    """A real 2-epoch run of ``model`` on ``split`` in ``root / (name or model)`` (no logger, no progress bar), with
    ``extra`` overrides; MiniLM vectors cached in ``text_cache_dir`` (default: under ``root``)."""
    from recstack.config import compose
    from recstack.training.train import train

    run_dir = root / (name or model)
    overrides = [f"model={model}", "fit.max_epochs=2", "logger=none", "progress=false", f"run_dir={run_dir}"]
    cache = text_cache_dir or root / "text-cache"
    cfg = compose("train", [*overrides, *extra, f"text_cache_dir={cache}"])
    return train(cfg, split=split).run_dir


def export_tiny_ranker(path: Path, n_users: int, n_items: int, item_groups: np.ndarray, seed: int = 0) -> Path:
    """A Wide & Deep-shaped ranker honouring the bundle contract (user/item/hour/dow int64 -> score), via torch."""
    import torch

    torch.manual_seed(seed)

    class TinyRanker(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.user = torch.nn.Embedding(n_users + 1, 8)  # + the OOV row
            self.item = torch.nn.Embedding(n_items, 8)
            self.hour = torch.nn.Embedding(24, 1)
            self.dow = torch.nn.Embedding(7, 1)
            self.item_bias = torch.nn.Embedding(n_items, 1)
            with torch.no_grad():  # structure: users like their group's items, as in the split
                self.item.weight.normal_(0, 0.1)
                self.user.weight.normal_(0, 0.1)
                for i, g in enumerate(item_groups):
                    self.item.weight[i, int(g)] += 1.0
                for u in range(n_users):
                    self.user.weight[u, u % 4] += 1.0

        def forward(self, user_idx, item_idx, hour, dow):  # type: ignore[no-untyped-def]
            dot = (self.user(user_idx) * self.item(item_idx)).sum(-1)
            return dot + self.item_bias(item_idx).squeeze(-1) + self.hour(hour).squeeze(-1) + self.dow(dow).squeeze(-1)

    model = TinyRanker().eval()
    b = 5
    args = tuple(torch.zeros(b, dtype=torch.long) for _ in range(4))
    torch.onnx.export(
        model,
        args,
        str(path),
        input_names=list(INPUT_NAMES),
        output_names=[SCORE],
        dynamic_axes={n: {0: "batch"} for n in [*INPUT_NAMES, SCORE]},
        dynamo=False,
    )
    return path


def content_payload(split: PreparedSplit, encoder_dir: Path, *, index_kind: str = "hnsw"):  # type: ignore[no-untyped-def]
    """The content section of the split's catalogue: text vectors from the real exported MiniLM ONNX encoder in
    ``encoder_dir`` (tests/conftest.py's ``text_encoder_dir``), no upserts."""
    from recstack.bundle.manifest import TextEncoderInfo
    from recstack.bundle.text_encoder import TextEncoder
    from recstack.bundle.writer import ContentPayload
    from recstack.export.content_section import content_items
    from recstack.export.text_encoder_onnx import ONNX_FILE, TOKENIZER_FILE
    from recstack.retrieval.index import IndexConfig

    table = content_items(split.items, ())
    encoder = TextEncoder(encoder_dir / ONNX_FILE, encoder_dir / TOKENIZER_FILE, intra_op_threads=0)
    return ContentPayload(
        items=table,
        vectors=encoder.encode(table["text"].tolist()),
        index_config=IndexConfig(kind=index_kind, metric="ip"),  # type: ignore[arg-type]
        encoder_onnx=encoder_dir / ONNX_FILE,
        tokenizer=encoder_dir / TOKENIZER_FILE,
        encoder=TextEncoderInfo(
            model_name="sentence-transformers/all-MiniLM-L6-v2",
            dim=encoder.dim,
            max_length=256,
            parity_samples=0,
            parity_min_cosine=1.0,
        ),
    )


def write_test_bundle(
    out: Path,
    split: PreparedSplit,
    *,
    seed: int = 0,
    text: bool = True,
    content_encoder: Path | None = None,
    noise: float = 0.1,
    seen: str = "train",
) -> Path:
    """A bundle from the tiny split: group-structured embeddings (``noise``: the spread around each group's axis),
    popularity, seen lists as ``recstack-export seen=<seen>`` writes them, a real ONNX ranker; with
    ``content_encoder`` (a folder of the exported MiniLM encoder), a content section too."""
    from recstack.bundle.writer import write_bundle
    from recstack.export.exporter import seen_matrix

    rng = np.random.default_rng(seed)
    n_users, n_items, d = split.n_users, split.n_items, 8
    groups = np.arange(n_items) % 4
    item_emb = rng.normal(0, noise, (n_items, d)).astype(np.float32)
    item_emb[np.arange(n_items), groups] += 1.0
    user_emb = rng.normal(0, noise, (n_users, d)).astype(np.float32)
    user_emb[np.arange(n_users), np.arange(n_users) % 4] += 1.0
    items = split.items[["item_idx", "item_id", "title", "year", "categories"]].copy()
    items["popularity"] = split.item_popularity.astype(np.int64)
    users = split.users.copy()
    text_emb = None
    if text:
        text_emb = rng.normal(0, 1, (n_items, 16)).astype(np.float32)
        text_emb[np.arange(n_items), groups] += 3.0
    ranker = export_tiny_ranker(out.parent / f"{out.name}-ranker.onnx", n_users, n_items, groups, seed)
    return write_bundle(
        out,
        model_kind="mf",
        users=users,
        items=items,
        user_embeddings=user_emb,
        item_embeddings=item_emb,
        seen=seen_matrix(split, seen),
        index_config={"kind": "flat", "metric": "ip"},
        item_text_embeddings=text_emb,
        ranker_onnx=ranker,
        dataset="tiny",
        split_hash=split.config_hash,
        content=None if content_encoder is None else content_payload(split, content_encoder),
    )
