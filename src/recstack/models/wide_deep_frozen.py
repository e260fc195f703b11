"""Wide & Deep for serving: the same function with every per-user, per-item and per-context part precomputed.

:class:`~recstack.models.wide_deep.WideAndDeep` splits its first deep layer and its wide crosses into user, item and
context parts (see its docstring). In eval mode each part depends only on its own id, so they can be computed once for
every user (the unknown user included), every item and all 24 x 7 (hour, weekday) contexts. Scoring a pair is then
eight row gathers, one context gather and the MLP above the first layer: no 384-d text vector, category or
demographic lookups per candidate. This is what ``ranker.onnx`` holds (:func:`recstack.export.onnx_export.export_ranker`
checks it against the original model on 1,000 inputs); the tables cost ``(n_users + n_items) * (hidden + C + d + 1)``
floats.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from recstack.bundle.contract import N_DAYS, N_HOURS
from recstack.models.wide_deep import WideAndDeep


class FrozenWideAndDeep(nn.Module):
    """``forward(user_idx, item_idx, hour, dow)`` equal to ``model.eval()(...)`` up to float rounding."""

    def __init__(self, model: WideAndDeep) -> None:
        super().__init__()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                device = model.item_id.weight.device
                u_vec, u_deep, u_cross, u_bias = model._user_side(torch.arange(model.n_users + 1, device=device))
                i_vec, i_deep, i_cats, i_bias = model._item_side(torch.arange(model.n_items, device=device))
                hours = torch.arange(N_HOURS, device=device).repeat_interleave(N_DAYS)
                dows = torch.arange(N_DAYS, device=device).repeat(N_HOURS)
                c_deep, c_cross = model._context_side(hours, dows)  # row h * N_DAYS + d
                tables = {
                    "u_vec": u_vec,
                    "u_deep": u_deep,
                    "u_cross": u_cross,
                    "u_bias": u_bias,
                    "i_vec": i_vec,
                    "i_deep": i_deep,
                    "i_cats": i_cats,
                    "i_bias": i_bias,
                    "c_deep": c_deep,
                    "c_cross": c_cross,
                    "global_bias": model.global_bias.detach().clone(),
                }
                for name, value in tables.items():
                    self.register_buffer(name, value.detach().clone().float().cpu())
            self.mlp = copy.deepcopy(model.mlp).cpu().eval()
        finally:
            model.train(was_training)
        self.eval()

    def forward(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, hour: torch.Tensor, dow: torch.Tensor
    ) -> torch.Tensor:
        ctx = hour * N_DAYS + dow
        wide = (
            self.u_bias[user_idx]
            + self.i_bias[item_idx]
            + ((self.u_cross[user_idx] + self.c_cross[ctx]) * self.i_cats[item_idx]).sum(-1)
            + (self.u_vec[user_idx] * self.i_vec[item_idx]).sum(-1)
            + self.global_bias
        )
        deep = self.mlp(self.u_deep[user_idx] + self.i_deep[item_idx] + self.c_deep[ctx]).squeeze(-1)
        return wide + deep
