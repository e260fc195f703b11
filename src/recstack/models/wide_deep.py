"""Wide & Deep (Cheng et al., 2016): a linear model over crossed sparse features plus an MLP over embeddings.

* Wide: user and item id biases; crosses of every user demographic field, the hour and the weekday with the item's
  categories (a learned weight per (value, category) pair); and a factorised user-id x item-id cross (the inner
  product of the two id embeddings), the low-rank form of the id cross-product the paper hashes.
* Deep: an MLP over the id embeddings, demographic field embeddings, the item's category and decade embeddings, its
  BERT text vector (see :mod:`recstack.models.text_encoder`) and hour / weekday embeddings.

``forward(user_idx, item_idx, hour, dow)`` takes only int64 ids and context: every other feature is looked up inside
from registered buffers, so the ONNX export (``torch.onnx.export(..., dynamo=False)``, opset 17) has four inputs.
``user_idx == n_users`` is the unknown (cold-start) user: its own id row and "unknown" demographics, trained by
replacing a fraction ``oov_rate`` of training users with it. The deep MLP's first layer is split into user, item and
context parts (a linear layer on a concatenation is the sum of linear layers on its parts), which lets
``score_all`` compute each part once per user and once per item instead of once per pair.

Build it from a split with :meth:`WideAndDeep.from_split` (or ``instantiate(cfg.model, n_users=..., n_items=...,
features=WideDeepFeatures.from_split(split, encode_items(split.items)))``, which is what training does).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from recstack.bundle.contract import N_DAYS, N_HOURS
from recstack.data.prepared import PreparedSplit
from recstack.models.base import Recommender
from recstack.models.batches import InteractionBatch
from recstack.models.features import WideDeepFeatures
from recstack.models.losses import binary_cross_entropy_loss


class WideAndDeep(nn.Module, Recommender):
    """Pointwise click model over ids, demographics, categories, text vectors and time context; returns logits."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        features: WideDeepFeatures,
        embedding_dim: int = 32,
        field_dim: int = 8,
        text_dim: int = 32,
        context_dim: int = 8,
        hidden_dims: Sequence[int] = (128, 64),
        dropout: float = 0.1,
        oov_rate: float = 0.02,
        reg_weight: float = 1e-5,
    ) -> None:
        super().__init__()
        if (features.n_users, features.n_items) != (n_users, n_items):
            raise ValueError(
                f"features were built for {features.n_users} users / {features.n_items} items, the model for "
                f"{n_users} / {n_items}; build them from the same split (WideDeepFeatures.from_split)"
            )
        if not hidden_dims:
            raise ValueError("hidden_dims needs at least one layer, e.g. [128, 64]")
        self.n_users = n_users
        self.n_items = n_items
        self.oov_rate = oov_rate
        self.reg_weight = reg_weight
        n_cats = features.item_categories.shape[1]
        self.register_buffer("user_codes", torch.as_tensor(features.user_codes, dtype=torch.long))
        self.register_buffer("item_categories", torch.as_tensor(features.item_categories, dtype=torch.float32))
        counts = self.item_categories.sum(1, keepdim=True).clamp(min=1.0)
        self.register_buffer("item_categories_mean", self.item_categories / counts)
        self.register_buffer("item_years", torch.as_tensor(features.item_years, dtype=torch.long))
        self.register_buffer("item_text", torch.as_tensor(features.item_text, dtype=torch.float32))
        self.register_buffer("default_hours", torch.as_tensor(features.default_hours, dtype=torch.long))
        self.register_buffer("default_dows", torch.as_tensor(features.default_dows, dtype=torch.long))

        # Wide part.
        self.user_bias = nn.Embedding(n_users + 1, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        self.field_cross = nn.ModuleList(nn.Embedding(v, n_cats) for v in features.user_vocab_sizes)
        self.hour_cross = nn.Embedding(N_HOURS, n_cats)
        self.dow_cross = nn.Embedding(N_DAYS, n_cats)
        self.global_bias = nn.Parameter(torch.zeros(1))
        for table in [self.user_bias, self.item_bias, *self.field_cross, self.hour_cross, self.dow_cross]:
            nn.init.zeros_(table.weight)

        # Deep part.
        self.user_id = nn.Embedding(n_users + 1, embedding_dim)
        self.item_id = nn.Embedding(n_items, embedding_dim)
        nn.init.normal_(self.user_id.weight, std=0.1)
        nn.init.normal_(self.item_id.weight, std=0.1)
        self.field_emb = nn.ModuleList(nn.Embedding(v, field_dim) for v in features.user_vocab_sizes)
        self.category_emb = nn.Linear(n_cats, field_dim, bias=False)
        self.year_emb = nn.Embedding(features.n_year_codes, field_dim)
        self.text_proj = nn.Linear(self.item_text.shape[1], text_dim)
        self.hour_emb = nn.Embedding(N_HOURS, context_dim)
        self.dow_emb = nn.Embedding(N_DAYS, context_dim)
        hidden = list(hidden_dims)
        n_fields = len(features.user_vocab_sizes)
        self.user_in = nn.Linear(embedding_dim + n_fields * field_dim, hidden[0], bias=False)
        self.item_in = nn.Linear(embedding_dim + 2 * field_dim + text_dim, hidden[0], bias=False)
        self.context_in = nn.Linear(2 * context_dim, hidden[0])
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(hidden):
            layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(a, b)]
        layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden[-1], 1)]
        self.mlp = nn.Sequential(*layers)

    @classmethod
    def from_split(cls, split: PreparedSplit, item_text: np.ndarray, **hparams: Any) -> WideAndDeep:
        """The model for ``split`` with its feature tables; ``hparams`` are the constructor's keyword arguments."""
        features = WideDeepFeatures.from_split(split, item_text)
        return cls(split.n_users, split.n_items, features, **hparams)

    # Per-side parts, each computed once per user / item / context.
    def _user_side(self, user_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(id vector, deep first-layer part, wide field-x-category weights (B, C), user bias)``."""
        codes = self.user_codes[user_idx]
        vec = self.user_id(user_idx)
        parts = [vec] + [emb(codes[:, f]) for f, emb in enumerate(self.field_emb)]
        # Stacked and summed rather than added to zeros(len(...)), which an ONNX trace would freeze to one batch size.
        cross = torch.stack([crs(codes[:, f]) for f, crs in enumerate(self.field_cross)], dim=0).sum(0)
        return vec, self.user_in(torch.cat(parts, dim=1)), cross, self.user_bias(user_idx).squeeze(-1)

    def _item_side(self, item_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(id vector, deep first-layer part, category multi-hot (B, C), item bias)``."""
        vec = self.item_id(item_idx)
        deep = torch.cat(
            [
                vec,
                self.category_emb(self.item_categories_mean[item_idx]),
                self.year_emb(self.item_years[item_idx]),
                self.text_proj(self.item_text[item_idx]),
            ],
            dim=1,
        )
        return vec, self.item_in(deep), self.item_categories[item_idx], self.item_bias(item_idx).squeeze(-1)

    def _context_side(self, hour: torch.Tensor, dow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(deep first-layer part, wide context-x-category weights (B, C))``."""
        deep = self.context_in(torch.cat([self.hour_emb(hour), self.dow_emb(dow)], dim=1))
        return deep, self.hour_cross(hour) + self.dow_cross(dow)

    def forward(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, hour: torch.Tensor, dow: torch.Tensor
    ) -> torch.Tensor:
        """Logits ``(B,)`` of ``(user, item, hour of day, day of week)``; ``user_idx == n_users`` is an unknown user."""
        u_vec, u_deep, u_cross, u_bias = self._user_side(user_idx)
        i_vec, i_deep, i_cats, i_bias = self._item_side(item_idx)
        c_deep, c_cross = self._context_side(hour, dow)
        wide = u_bias + i_bias + ((u_cross + c_cross) * i_cats).sum(-1) + (u_vec * i_vec).sum(-1) + self.global_bias
        deep = self.mlp(u_deep + i_deep + c_deep).squeeze(-1)
        return wide + deep

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        users = users.long()
        return self.forward(users, items.long(), self.default_hours[users], self.default_dows[users])

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item in each user's default context (their most frequent training hour and weekday)."""
        users = users.long()
        all_items = torch.arange(self.n_items, device=self.item_id.weight.device)
        i_vec, i_deep, i_cats, i_bias = self._item_side(all_items)
        hidden = i_deep.shape[1]
        # Chunk users so the (users, items, hidden) activations stay around 64 MB.
        chunk = max(1, (1 << 24) // (self.n_items * hidden))
        out = []
        for start in range(0, len(users), chunk):
            u = users[start : start + chunk]
            u_vec, u_deep, u_cross, u_bias = self._user_side(u)
            c_deep, c_cross = self._context_side(self.default_hours[u], self.default_dows[u])
            wide = (
                u_bias[:, None] + i_bias[None, :] + (u_cross + c_cross) @ i_cats.T + u_vec @ i_vec.T + self.global_bias
            )
            deep = self.mlp((u_deep + c_deep)[:, None, :] + i_deep[None, :, :]).squeeze(-1)
            out.append(wide + deep)
        return torch.cat(out, dim=0)

    def loss(self, batch: InteractionBatch) -> torch.Tensor:
        """Pointwise logistic loss: positives labelled 1, their sampled negatives 0 (in the positive's context)."""
        users = batch.users
        if self.oov_rate > 0:
            cold = torch.rand(users.shape, device=users.device) < self.oov_rate
            users = torch.where(cold, torch.full_like(users, self.n_users), users)
        n_neg = batch.negatives.shape[1]
        all_users = torch.cat([users, users.repeat_interleave(n_neg)])
        all_items = torch.cat([batch.items, batch.negatives.reshape(-1)])
        hours = torch.cat([batch.hours, batch.hours.repeat_interleave(n_neg)])
        dows = torch.cat([batch.dows, batch.dows.repeat_interleave(n_neg)])
        labels = torch.cat([torch.ones_like(batch.items), torch.zeros_like(batch.negatives.reshape(-1))])
        logits = self.forward(all_users, all_items, hours, dows)
        reg = (self.user_id(users).pow(2).sum() + self.item_id(all_items).pow(2).sum()) / len(users)
        return binary_cross_entropy_loss(logits, labels) + self.reg_weight * reg
