"""The re-ranker's contract: the one place that names its inputs and output and says what values they take.

``ranker.onnx`` takes four int64 tensors of shape ``(B,)`` and returns one float32 tensor ``score`` of shape ``(B,)``
(a logit). All feature lookups happen inside the graph, so the inputs are plain indices:

* ``user_idx``: 0..n_users, where ``n_users`` is the out-of-vocabulary user (one learned row for unknown users);
* ``item_idx``: 0..n_items-1;
* ``hour``: 0..23 (UTC hour of day); ``dow``: 0..6 (day of week, Monday = 0).

Export builds its ONNX graph and parity inputs from :func:`ranker_contract`, the bundle writer checks the file against
it (:meth:`RankerContract.check`) and records it in the manifest, and serving and parity checks score through
:func:`score_ranker`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
HOUR = "hour"
DOW = "dow"
INPUT_NAMES: tuple[str, ...] = (USER_IDX, ITEM_IDX, HOUR, DOW)
SCORE = "score"
N_HOURS = 24
N_DAYS = 7


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of the graph: dtype, symbolic shape and, for index inputs, the inclusive value range."""

    name: str
    dtype: str
    shape: tuple[str, ...] = ("batch",)
    low: int | None = None
    high: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.low is not None or self.high is not None:
            out["range"] = [self.low, self.high]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TensorSpec:
        low, high = raw.get("range") or (None, None)
        return cls(
            name=str(raw["name"]), dtype=str(raw["dtype"]), shape=tuple(raw.get("shape", ())), low=low, high=high
        )


@dataclass(frozen=True)
class RankerContract:
    """The inputs (in graph order), the output and the out-of-vocabulary user row of one bundle's ranker."""

    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    oov_user_index: int

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"the ranker contract has no input {name!r}; inputs: {list(self.input_names)}")

    def check(self, session: Any, *, source: str) -> None:
        """Raise ``ValueError`` naming ``source`` unless the ONNX Runtime ``session`` has exactly these inputs/output."""
        inputs = {i.name: i.type for i in session.get_inputs()}
        expected = {spec.name: f"tensor({spec.dtype})" for spec in self.inputs}
        if inputs != expected:
            raise ValueError(f"{source}: inputs {inputs}, the ranker contract expects {expected}")
        outputs = [o.name for o in session.get_outputs()]
        if outputs != [self.output.name]:
            raise ValueError(f"{source}: outputs {outputs}, the ranker contract expects [{self.output.name!r}]")

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [spec.to_dict() for spec in self.inputs],
            "output": self.output.to_dict(),
            "oov_user_index": self.oov_user_index,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RankerContract:
        return cls(
            inputs=tuple(TensorSpec.from_dict(spec) for spec in raw["inputs"]),
            output=TensorSpec.from_dict(raw["output"]),
            oov_user_index=int(raw["oov_user_index"]),
        )


def ranker_contract(n_users: int, n_items: int) -> RankerContract:
    """The contract for a catalogue of ``n_users`` x ``n_items`` (see the module docstring)."""
    return RankerContract(
        inputs=(
            TensorSpec(USER_IDX, "int64", low=0, high=n_users),
            TensorSpec(ITEM_IDX, "int64", low=0, high=n_items - 1),
            TensorSpec(HOUR, "int64", low=0, high=N_HOURS - 1),
            TensorSpec(DOW, "int64", low=0, high=N_DAYS - 1),
        ),
        output=TensorSpec(SCORE, "float32"),
        oov_user_index=n_users,
    )


def ranker_feeds(user_idx: Any, item_idx: Any, hour: Any, dow: Any) -> dict[str, np.ndarray]:
    """The session's input dict from equal-length 1-D arrays (cast to contiguous int64 here)."""
    arrays = [np.ascontiguousarray(np.asarray(a, dtype=np.int64).ravel()) for a in (user_idx, item_idx, hour, dow)]
    if len({len(a) for a in arrays}) != 1:
        raise ValueError(f"ranker inputs must have equal lengths, got {[len(a) for a in arrays]}")
    return dict(zip(INPUT_NAMES, arrays, strict=True))


def score_ranker(session: Any, user_idx: Any, item_idx: Any, hour: Any, dow: Any) -> np.ndarray:
    """Run the re-ranker on equal-length 1-D arrays; returns float32 scores ``(B,)``. ``session`` is anything with
    ONNX Runtime's ``run(output_names, feeds)``."""
    (scores,) = session.run([SCORE], ranker_feeds(user_idx, item_idx, hour, dow))
    return np.asarray(scores, dtype=np.float32).reshape(-1)
