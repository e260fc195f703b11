"""Torch side of the ranker export: ``nn.Module`` -> ``ranker.onnx``, then a parity check against PyTorch eager.

Exporter pinned: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter, at opset 17. Why:

* The dynamo exporter (torch's default since 2.9) needs ``onnxscript``, which is not in our ``train`` extra; adding
  it for one call is a dependency we do not need.
* The ranker's forward is plain tensor code (embedding gathers from buffers, linear layers, sums) that tracing
  captures exactly; there is no data-dependent control flow that would need dynamo's graph capture.
* Opset 17 is supported by every ONNX Runtime we allow (>= 1.18) and has every op the graph uses.

The TorchScript exporter is deprecated upstream; when it goes, switch to ``dynamo=True`` and add ``onnxscript`` to the
``train`` extra. The parity check below is what tells us either exporter is still right.

The graph's inputs, output and value ranges are the ranker contract of :mod:`recstack.bundle.contract` (recorded in
the bundle manifest); this module only traces a model to it and checks it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recstack.bundle.contract import USER_IDX, RankerContract, ranker_contract, score_ranker
from recstack.bundle.session import make_session

OPSET = 17


class ExportParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree on the exported model by more than the tolerance."""


@dataclass(frozen=True)
class ParityReport:
    """Outcome of one parity check (ONNX Runtime vs PyTorch eager on the same random inputs)."""

    onnx_path: Path
    n_samples: int
    max_abs_diff: float
    atol: float
    opset: int = OPSET
    exporter: str = "torchscript (dynamo=False)"

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol


def parity_inputs(contract: RankerContract, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` random inputs over each input's whole contract range; about 5% of users are the OOV row so that row is
    always covered."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in contract.inputs:
        assert spec.low is not None and spec.high is not None, f"input {spec.name} has no range in the contract"
        out[spec.name] = rng.integers(spec.low, spec.high + 1, n).astype(np.int64)
    users = out[USER_IDX]
    users[rng.random(n) < 0.05] = contract.oov_user_index
    if n:
        users[0] = contract.oov_user_index
    return out


@torch.no_grad()
def torch_scores(model: nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The model's scores on ``inputs`` (passed positionally in contract order)."""
    return model(*(torch.from_numpy(a) for a in inputs.values())).detach().cpu().float().numpy().reshape(-1)


def check_parity(
    model: nn.Module,
    onnx_path: str | Path,
    *,
    n_users: int,
    n_items: int,
    samples: int = 1000,
    atol: float = 1e-5,
    seed: int = 0,
    raise_on_failure: bool = True,
) -> ParityReport:
    """Score ``samples`` random inputs with ONNX Runtime (the serving session options) and with ``model`` in eval
    mode; raise :class:`ExportParityError` if the max absolute difference exceeds ``atol``. The batch is also run one
    row at a time for a few rows, which exercises the dynamic batch axis."""
    onnx_path = Path(onnx_path)
    was_training = model.training
    model.eval()
    try:
        inputs = parity_inputs(ranker_contract(n_users, n_items), samples, seed)
        expected = torch_scores(model, inputs)
        session = make_session(onnx_path)
        got = score_ranker(session, *inputs.values())
        single = [score_ranker(session, *(a[i : i + 1] for a in inputs.values())) for i in range(3)]
    finally:
        model.train(was_training)
    if got.shape != expected.shape:
        raise ExportParityError(f"{onnx_path}: ONNX output shape {got.shape}, PyTorch {expected.shape}")
    diff = float(np.max(np.abs(got - expected))) if samples else 0.0
    if single:
        diff = max(diff, float(np.max(np.abs(np.concatenate(single) - expected[:3]))))
    report = ParityReport(onnx_path=onnx_path, n_samples=samples, max_abs_diff=diff, atol=atol)
    if raise_on_failure and not report.ok:
        raise ExportParityError(
            f"{onnx_path}: ONNX Runtime differs from PyTorch by up to {diff:.3g} on {samples} inputs "
            f"(tolerance {atol:g}); the exported graph does not compute the model: do not ship it"
        )
    return report


def export_ranker(
    model: nn.Module,
    out_path: str | Path,
    *,
    n_users: int,
    n_items: int,
    parity_samples: int = 1000,
    atol: float = 1e-5,
    seed: int = 0,
    graph: nn.Module | None = None,
) -> ParityReport:
    """Export the ranker to ``out_path`` (contract in the module docstring) and check parity; on a failed check the
    file is removed and :class:`ExportParityError` raised.

    ``graph``: the module actually traced, when it is a serving form of ``model`` (e.g.
    :class:`~recstack.models.wide_deep_frozen.FrozenWideAndDeep`, with per-user and per-item parts precomputed);
    parity is always checked against ``model`` itself, so a wrong serving form fails the export."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    traced = model if graph is None else graph
    was_training = traced.training
    traced.eval()
    contract = ranker_contract(n_users, n_items)
    names = [*contract.input_names, contract.output.name]
    args = tuple(torch.from_numpy(a) for a in parity_inputs(contract, 8, seed).values())
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter's deprecation notice; the choice is documented above.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            torch.onnx.export(
                traced,
                args,
                buffer,
                dynamo=False,
                opset_version=OPSET,
                input_names=list(contract.input_names),
                output_names=[contract.output.name],
                dynamic_axes={name: {0: "batch"} for name in names},
                do_constant_folding=True,
            )
    finally:
        traced.train(was_training)
    out_path.write_bytes(buffer.getvalue())
    try:
        return check_parity(
            model, out_path, n_users=n_users, n_items=n_items, samples=parity_samples, atol=atol, seed=seed + 1
        )
    except ExportParityError:
        out_path.unlink(missing_ok=True)
        raise
