"""Re-ranker latency: ONNX Runtime vs PyTorch eager, scoring 200 candidates for one user.

    nice .venv/bin/python benchmarks/onnx_ranker.py [--run outputs/runs/<wide_deep run>] [--reps 2000]

The model is the real :class:`recstack.models.wide_deep.WideAndDeep`. With ``--run`` its trained weights are used;
without, it is built for the ML-100K split (943 users, 1,682 items) with its default hyper-parameters and random
384-d item text vectors: the same shapes and operations, so the same latency (latency does not depend on the
weights' values). The ONNX file comes from :func:`recstack.export.onnx_export.export_ranker` (parity-checked) and
runs in the serving session of :func:`recstack.bundle.session.make_session`.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from recstack.bundle.contract import score_ranker
from recstack.bundle.session import make_session
from recstack.export.onnx_export import export_ranker


def build_model(run: str | None) -> torch.nn.Module:
    if run:
        from recstack.training.runs import load_run

        return load_run(run).model  # type: ignore[return-value]
    from recstack.config import prepare_named
    from recstack.models.wide_deep import WideAndDeep

    data_home = os.environ.get("RECSTACK_DATA_HOME")
    if not data_home:
        raise SystemExit("set RECSTACK_DATA_HOME to the folder holding ml-100k/ (or pass --run)")
    split = prepare_named("ml100k", "random", out_root=Path(tempfile.mkdtemp()) / "processed")
    text = np.random.default_rng(0).standard_normal((split.n_items, 384)).astype(np.float32)
    torch.manual_seed(0)
    return WideAndDeep.from_split(split, text)


def p50_ms(fn, reps: int) -> float:
    for _ in range(50):
        fn()
    times = np.empty(reps)
    for i in range(reps):
        t = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t
    return float(np.median(times) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="a Wide & Deep run folder (default: untrained, ML-100K shapes)")
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--reps", type=int, default=2000)
    args = ap.parse_args()

    model = build_model(args.run).eval()
    n_users, n_items = int(model.n_users), int(model.n_items)  # type: ignore[arg-type]
    from recstack.models.wide_deep_frozen import FrozenWideAndDeep

    with tempfile.TemporaryDirectory() as tmp:
        # The plain trace of the model, and the served form (per-user / per-item parts precomputed; what
        # recstack-export writes), each parity-checked against the PyTorch model.
        paths = {"plain graph": Path(tmp) / "plain.onnx", "precomputed tables (served)": Path(tmp) / "ranker.onnx"}
        export_ranker(model, paths["plain graph"], n_users=n_users, n_items=n_items)
        report = export_ranker(
            model,
            paths["precomputed tables (served)"],
            n_users=n_users,
            n_items=n_items,
            graph=FrozenWideAndDeep(model),
        )
        rng = np.random.default_rng(0)
        b = args.candidates
        user = np.full(b, rng.integers(0, n_users), dtype=np.int64)
        items = rng.choice(n_items, b, replace=False).astype(np.int64)
        hour = np.full(b, 20, dtype=np.int64)
        dow = np.full(b, 5, dtype=np.int64)
        tensors = [torch.from_numpy(a) for a in (user, items, hour, dow)]

        def torch_call() -> None:
            with torch.inference_mode():
                model(*tensors)

        results = {}
        default_threads = torch.get_num_threads()
        for threads in (1, default_threads):
            torch.set_num_threads(threads)
            results[f"PyTorch eager, {threads} thread(s)"] = p50_ms(torch_call, args.reps)
        for label, path in paths.items():
            for threads in (1, os.cpu_count() or 1):
                session = make_session(path, intra_op_threads=threads)
                results[f"ONNX Runtime, {label}, intra_op_threads={threads}"] = p50_ms(
                    lambda s=session: score_ranker(s, user, items, hour, dow), args.reps
                )

    print(f"### Ranker: {b} candidates for one user, p50 latency ({args.reps} reps)\n")
    source = f"trained run {args.run}" if args.run else "untrained WideAndDeep with ML-100K shapes, random text vectors"
    print(
        f"`nice .venv/bin/python benchmarks/onnx_ranker.py{' --run ' + args.run if args.run else ''}`: {source}; "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, {os.cpu_count()} cores "
        f"({platform.machine()}); served graph's export parity max |diff| {report.max_abs_diff:.1e} on {report.n_samples} inputs.\n"
    )
    base = results["PyTorch eager, 1 thread(s)"]
    print("| engine | p50 ms | speed-up vs PyTorch 1 thread |")
    print("|---|---:|---:|")
    for name, ms in results.items():
        print(f"| {name} | {ms:.3f} | {base / ms:.2f}x |")


if __name__ == "__main__":
    main()
