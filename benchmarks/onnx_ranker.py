"""Re-ranker latency: ONNX Runtime vs PyTorch eager, scoring 200 candidates for one user.

    nice .venv/bin/python benchmarks/onnx_ranker.py [--run outputs/runs/<wide_deep run>] [--reps 2000] [--repeats 3]

Both graphs run in both engines: the plain Wide & Deep and its served form with precomputed tables
(:class:`recstack.models.wide_deep_frozen.FrozenWideAndDeep`), each in PyTorch eager and in ONNX Runtime. So the
ONNX Runtime vs eager speed-up is reported like for like (same graph on both sides), apart from the gain from
precomputation, and the two together. Every engine is measured ``--repeats`` times, interleaved, and the figures are
the median p50 with its range; the raw p50s go to ``benchmarks/results/onnx_ranker-<time>.json``.

The model is the real :class:`recstack.models.wide_deep.WideAndDeep`. With ``--run`` its trained weights are used;
without, it is built for the ML-100K split (943 users, 1,682 items) with its default hyper-parameters and random
384-d item text vectors: the same shapes and operations, so the same latency (latency does not depend on the
weights' values). The ONNX file comes from :func:`recstack.export.onnx_export.export_ranker` (parity-checked) and
runs in the serving session of :func:`recstack.bundle.session.make_session`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from invocation import REPO, command_line, results_path

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


# (graph, engine): the two graphs in both engines, so each ratio below compares like with like.
PLAIN, FROZEN = "plain Wide & Deep", "precomputed tables (FrozenWideAndDeep, served)"
EAGER, ORT = "PyTorch eager", "ONNX Runtime"


def ratios(p50: dict[tuple[str, str, int], list[float]], threads: int) -> dict[str, list[float]]:
    """Speed-ups per repeat (each repeat measured every engine back to back, so a ratio shares the machine's state)."""

    def ratio(slow: tuple[str, str], fast: tuple[str, str]) -> list[float]:
        return [a / b for a, b in zip(p50[(*slow, threads)], p50[(*fast, threads)], strict=True)]

    return {
        "ONNX Runtime vs PyTorch eager, plain graph (like for like)": ratio((PLAIN, EAGER), (PLAIN, ORT)),
        "ONNX Runtime vs PyTorch eager, precomputed graph (like for like)": ratio((FROZEN, EAGER), (FROZEN, ORT)),
        "precomputation, in PyTorch eager": ratio((PLAIN, EAGER), (FROZEN, EAGER)),
        "precomputation, in ONNX Runtime": ratio((PLAIN, ORT), (FROZEN, ORT)),
        "both: served ONNX graph vs plain model in PyTorch eager": ratio((PLAIN, EAGER), (FROZEN, ORT)),
    }


def spread(values: list[float], fmt: str) -> str:
    mid = statistics.median(values)
    if len(values) == 1:
        return format(mid, fmt)
    return f"{format(mid, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="a Wide & Deep run folder (default: untrained, ML-100K shapes)")
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--reps", type=int, default=2000, help="timed calls per engine and repeat")
    ap.add_argument("--repeats", type=int, default=3, help="measure every engine this many times (ranges)")
    ap.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/onnx_ranker-<UTC time>.json")
    args = ap.parse_args()
    command = command_line()
    started = datetime.now(UTC)
    load_before = os.getloadavg()

    model = build_model(args.run).eval()
    n_users, n_items = int(model.n_users), int(model.n_items)  # type: ignore[arg-type]
    from recstack.models.wide_deep_frozen import FrozenWideAndDeep

    frozen = FrozenWideAndDeep(model).eval()
    all_threads = os.cpu_count() or 1
    thread_counts = sorted({1, all_threads})
    p50: dict[tuple[str, str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # The plain trace of the model, and the served form (per-user / per-item parts precomputed; what
        # recstack-export writes), each parity-checked against the PyTorch model.
        paths = {PLAIN: Path(tmp) / "plain.onnx", FROZEN: Path(tmp) / "ranker.onnx"}
        export_ranker(model, paths[PLAIN], n_users=n_users, n_items=n_items)
        report = export_ranker(model, paths[FROZEN], n_users=n_users, n_items=n_items, graph=frozen)
        rng = np.random.default_rng(0)
        b = args.candidates
        user = np.full(b, rng.integers(0, n_users), dtype=np.int64)
        items = rng.choice(n_items, b, replace=False).astype(np.int64)
        hour = np.full(b, 20, dtype=np.int64)
        dow = np.full(b, 5, dtype=np.int64)
        tensors = [torch.from_numpy(a) for a in (user, items, hour, dow)]
        modules = {PLAIN: model, FROZEN: frozen}
        sessions = {(g, t): make_session(path, intra_op_threads=t) for g, path in paths.items() for t in thread_counts}

        def eager(module: torch.nn.Module) -> None:
            with torch.inference_mode():
                module(*tensors)

        for _ in range(args.repeats):
            for threads in thread_counts:
                torch.set_num_threads(threads)
                for graph in (PLAIN, FROZEN):
                    p50.setdefault((graph, EAGER, threads), []).append(
                        p50_ms(lambda m=modules[graph]: eager(m), args.reps)
                    )
                    session = sessions[(graph, threads)]
                    p50.setdefault((graph, ORT, threads), []).append(
                        p50_ms(lambda s=session: score_ranker(s, user, items, hour, dow), args.reps)
                    )

    source = f"trained run {args.run}" if args.run else "untrained WideAndDeep with ML-100K shapes, random text vectors"
    result = {
        "command": command,
        "started_utc": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "load_average_before_after": [load_before, os.getloadavg()],
        "source": source,
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version()},
        "machine": f"{all_threads} CPUs ({platform.machine()})",
        "candidates": b,
        "reps": args.reps,
        "repeats": args.repeats,
        "parity_max_abs_diff_served_graph": report.max_abs_diff,
        "parity_samples": report.n_samples,
        "p50_ms": [{"graph": g, "engine": e, "threads": t, "p50_ms_per_repeat": v} for (g, e, t), v in p50.items()],
        "speedups_1_thread": ratios(p50, 1),
    }
    out = args.json or results_path("onnx_ranker", started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")

    print(
        f"### Ranker: {b} candidates for one user, p50 latency ({args.reps} calls per engine, {args.repeats} repeats)\n"
    )
    print(
        f"Command: `{command}`, started {result['started_utc']}, 1-min load average {load_before[0]:.2f}; {source}; "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, {all_threads} cores ({platform.machine()}); "
        f"served graph's export parity max |diff| {report.max_abs_diff:.1e} on {report.n_samples} inputs. "
        f"Figures: median over repeats (min-max). Results: `{os.path.relpath(out, REPO) if out.resolve().is_relative_to(REPO) else out}`.\n"
    )
    print("| graph | engine | threads | p50 ms |")
    print("|---|---|---:|---:|")
    for (graph, engine, threads), values in p50.items():
        print(f"| {graph} | {engine} | {threads} | {spread(values, '.3f')} |")
    print("\nSpeed-ups, 1 thread (per repeat, then median (min-max)):\n")
    print("| comparison | speed-up |")
    print("|---|---:|")
    for name, values in result["speedups_1_thread"].items():
        print(f"| {name} | {spread(values, '.2f')}x |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
