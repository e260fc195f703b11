"""ONNX Runtime sessions for the re-ranker, with the options chosen on purpose (scoring: :mod:`recstack.bundle.contract`).

Choices, for a latency-bound server that runs one session per worker process:

* ``intra_op_threads=1``: a 200-candidate Wide & Deep batch is a few small matmuls; splitting it over threads costs
  more in wake-ups than it saves, and several workers each spawning one thread per core oversubscribe the CPU.
  Scale out with workers, not threads. Raise it for large offline batches.
* ``inter_op_threads=1`` with ``ORT_SEQUENTIAL`` execution: the graph is a chain, there is no branch parallelism
  worth a thread pool.
* ``optimization="all"`` (``ORT_ENABLE_ALL``): constant folding, node fusions (Gemm+Relu, ...) and layout
  optimisations; the export's parity check (:mod:`recstack.export.onnx_export`) runs against exactly this setting.
* CPU execution provider only: the serving image is CPU-only.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

OPTIMIZATION_LEVELS: dict[str, ort.GraphOptimizationLevel] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session_options(
    *, intra_op_threads: int = 1, inter_op_threads: int = 1, optimization: str = "all"
) -> ort.SessionOptions:
    """The :class:`onnxruntime.SessionOptions` described in the module docstring."""
    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization={optimization!r} is unknown; use one of {sorted(OPTIMIZATION_LEVELS)}")
    if intra_op_threads < 0 or inter_op_threads < 0:
        raise ValueError("thread counts must be >= 0 (0 lets ONNX Runtime use one per physical core)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
    return options


def make_session(
    path: str | Path, *, intra_op_threads: int = 1, inter_op_threads: int = 1, optimization: str = "all"
) -> ort.InferenceSession:
    """An inference session on ``path`` with the options of :func:`session_options`, CPU provider."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist; export it with `recstack-export`")
    options = session_options(
        intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads, optimization=optimization
    )
    return ort.InferenceSession(os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"])
