"""Training losses as pure functions of scores (and embeddings for the regulariser); no module state."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: mean of ``-log sigmoid(pos - neg)`` over every (positive, negative) pair.

    ``pos_scores`` is ``(B,)``; ``neg_scores`` is ``(B, n)`` (``n`` sampled negatives per positive) or ``(B,)``.
    """
    if neg_scores.dim() == 1:
        neg_scores = neg_scores.unsqueeze(1)
    return -F.logsigmoid(pos_scores.unsqueeze(1) - neg_scores).mean()


def sampled_softmax_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the positive against its negatives: ``(B,)`` positives, ``(B, n)`` negative scores.

    Masked negatives (e.g. in-batch collisions with the positive) are passed as ``-inf``.
    """
    logits = torch.cat([pos_scores.unsqueeze(1), neg_scores], dim=1) / temperature
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def in_batch_negative_scores(user_vecs: torch.Tensor, item_vecs: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
    """Scores of each user against the other rows' positive items, ``(B, B-1)`` worth in a ``(B, B)`` matrix.

    The diagonal (the user's own positive) and any column holding that same item are set to ``-inf``, so a popular
    item that appears twice in a batch is never counted as its own negative.
    """
    scores = user_vecs @ item_vecs.T
    same_item = item_idx.unsqueeze(1) == item_idx.unsqueeze(0)
    return scores.masked_fill(same_item, float("-inf"))


def binary_cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pointwise logistic loss for click/no-click style labels (``labels`` in {0, 1})."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def l2_regularisation(*rows: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of the embedding rows used by a batch, divided by the batch size (as pyg's and RecBole's
    BPR): only the rows a batch touches are pulled towards zero, never the whole table."""
    batch = rows[0].shape[0]
    return sum(r.pow(2).sum() for r in rows) / max(batch, 1)


def embedding_loss(
    kind: str,
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    items: torch.Tensor,
    *,
    temperature: float = 1.0,
    in_batch_negatives: bool = False,
) -> torch.Tensor:
    """BPR or sampled-softmax loss of dot-product scores: ``users``/``positives`` ``(B, d)``, ``negatives``
    ``(B, n, d)``, ``items`` the positives' indices (to drop a user's own positive from in-batch negatives)."""
    pos_scores = (users * positives).sum(-1)
    neg_scores = (users.unsqueeze(1) * negatives).sum(-1)  # not einsum: its small-bmm path is several times slower
    if kind == "bpr":
        return bpr_loss(pos_scores, neg_scores)
    if in_batch_negatives:
        neg_scores = torch.cat([neg_scores, in_batch_negative_scores(users, positives, items)], dim=1)
    return sampled_softmax_loss(pos_scores, neg_scores, temperature)
