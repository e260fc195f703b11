"""``recstack-demo`` (``make demo``): the main job end to end on MovieLens-100K.

data -> train (popularity, MF, LightGCN, EASE, Wide & Deep) -> export (the served bundle: the retrieval model that
is best on validation, its index (exact below 20,000 items, else HNSW) and EASE's item-item weights as the second
stage; and MF -> ONNX Wide & Deep beside it for comparison) -> evaluate (report: every model and both pipelines)
-> serve (BentoML on loopback, example requests printed) -> stop -> simulate (an A/B test of MF vs LightGCN retrieval
that the test users visit: recstack.cli.demo_simulate).

Everything goes under ``--out`` (default ``outputs/demo``); ``make serve`` serves the bundle it leaves behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from recstack.config import compose

log = logging.getLogger("recstack.demo")
STEPS = 9


def ensure_dev_key(path: Path) -> str:
    """A local development pseudonymisation key when the environment names none (a deployment sets its own secret:
    README, privacy). Returns what to tell the user ('' when a key was already configured)."""
    if os.environ.get("RECSTACK_HMAC_KEY") or os.environ.get("RECSTACK_HMAC_KEY_FILE"):
        return ""
    note = f"pseudonymisation key: {path} (local development key)"
    if not path.exists():
        from recstack.cli.collect import keygen

        keygen([str(path)])
        note = f"pseudonymisation key: created {path} (mode 0600) for local development; keep it out of the repo"
    os.environ["RECSTACK_HMAC_KEY_FILE"] = str(path.resolve())
    return note


def demo_api_key(out: Path) -> tuple[str, Path]:
    """A fresh admin key for this demo run (its hash in ``<out>/api_keys.yaml``, replaced each run)."""
    from recstack.serving.api_keys import new_key, write_key_file

    path = out / "api_keys.yaml"
    token, entry = new_key("admin", "demo")
    write_key_file(path, [entry])
    return token, path


def _banner(step: int, text: str) -> None:
    print(f"\n{'=' * 100}\n[{step}/{STEPS}] {text}\n{'=' * 100}", flush=True)


def _free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def _train(model: str, out: Path, overrides: Sequence[str], split: object) -> object:
    from recstack.training.train import train

    # Lightning sets its loggers to INFO when imported; the demo prints its own summary line per run instead.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    run_dir = out / "runs" / model
    if run_dir.exists():  # the demo's own folder: a rerun starts clean rather than mixing checkpoints
        shutil.rmtree(run_dir)
    # One torch thread: on 2 cores shared with anything else, torch's default of one thread per core spins against
    # the other jobs (LightGCN took 1,976 s instead of ~200 s beside a busy machine); an override wins.
    threads = [] if any(o.startswith("torch_threads=") for o in overrides) else ["torch_threads=1"]
    cfg = compose("train", [f"model={model}", f"run_dir={run_dir}", *threads, *overrides])
    result = train(cfg, split=split)  # type: ignore[arg-type]
    test = result.metrics["test"]
    print(
        f"  {model:<10} test ndcg@10 {test['ndcg@10']:.4f}  recall@10 {test['recall@10']:.4f}  "
        f"map@10 {test['map@10']:.4f}  ({result.metrics.get('train_seconds', 0.0):.1f} s of training)",
        flush=True,
    )
    return result


def _simulate(
    out: Path, split: object, mf_run: Path, lightgcn_run: Path, port: int, api_key: str, keys_file: Path
) -> None:
    """Step 9 (recstack.cli.demo_simulate): the MF and LightGCN runs of step 2 as the two arms of an A/B test that
    every test user visits; prints each arm's online CTR@10 and MAP@10 beside its offline MAP@10."""
    from recstack.cli.demo_simulate import run_simulation

    _banner(9, "simulate: A/B test MF vs LightGCN retrieval; the test users visit, click, and their events flow back")
    started = time.perf_counter()
    run_simulation(
        out, split, {"mf": mf_run, "lightgcn": lightgcn_run}, port=port, api_key=api_key, keys_file=keys_file
    )
    print(f"  the simulation step took {time.perf_counter() - started:.0f} s", flush=True)


def run(out: Path, port: int, data_overrides: Sequence[str] = (), serve: bool = True, simulate: bool = True) -> int:
    import numpy as np

    from recstack.config import prepare_from_config
    from recstack.data.warehouse import format_stats, stats
    from recstack.evaluation.evaluator import evaluate
    from recstack.evaluation.report import RunEvaluation, write_report

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    _banner(1, "data: prepare MovieLens-100K (dedup, implicit, per-user random 0.8/0.1/0.1) and describe it in SQL")
    split = prepare_from_config(compose("prepare", list(data_overrides)))
    print(f"  {split!r}\n  folder: {split.root}\n")
    print(format_stats(stats(split.root)), flush=True)

    _banner(2, "train: popularity, MF and LightGCN (retrieval), EASE and Wide & Deep (second stages) on the CPU")
    runs = {name: _train(name, out, data_overrides, split) for name in ("pop", "mf", "lightgcn", "ease", "wide_deep")}
    retrieval = max(("mf", "lightgcn"), key=lambda name: runs[name].metrics["valid"]["ndcg@10"])
    valid = ", ".join(f"{name} {runs[name].metrics['valid']['ndcg@10']:.4f}" for name in ("mf", "lightgcn"))
    print(f"  retrieval for the served bundle, best validation ndcg@10: {retrieval} ({valid})", flush=True)

    _banner(3, f"export: bundle = {retrieval} embeddings + exact/HNSW index + EASE item-item second stage + id maps")
    from recstack.cli.export import export_from_config

    bundle_dir, compared_dir = out / "bundle", out / "bundle-mf-wide_deep"
    for folder, run, ranker in (
        (bundle_dir, runs[retrieval], runs["ease"]),
        (compared_dir, runs["mf"], runs["wide_deep"]),  # the earlier default, for the report's comparison
    ):
        if folder.exists():
            shutil.rmtree(folder)
        export_from_config(compose("export", [f"run={run.run_dir}", f"ranker_run={ranker.run_dir}", f"out={folder}"]))
    print(f"  bundle: {bundle_dir}  (MF -> ONNX Wide & Deep, for comparison: {compared_dir})", flush=True)

    _banner(4, "evaluate: every model and the served two-stage pipeline on the test split, full ranking")
    ks = tuple(range(1, 51))
    evaluations = [
        RunEvaluation(
            name,
            evaluate(result.model, split, "test", ks, keep_per_user=True),
            {"train_seconds": round(result.metrics.get("train_seconds", 0.0), 1)},
        )
        for name, result in runs.items()
    ]
    from recstack.offline.report import evaluate_bundle

    evaluations += evaluate_bundle(bundle_dir, split, "test", ks, name=f"served {retrieval} -> ease")
    evaluations += evaluate_bundle(compared_dir, split, "test", ks, name="mf -> wide_deep")
    paths = write_report(evaluations, split, out / "report", title="recstack demo: MovieLens-100K")
    for ev in evaluations:
        m = ev.result.metrics
        print(f"  {ev.name:<46} ndcg@10 {m['ndcg@10']:.4f}  recall@10 {m['recall@10']:.4f}  map@10 {m['map@10']:.4f}")
    print(f"\n  report: {paths.html}  (also {paths.markdown.name}, {paths.metrics_json.name})", flush=True)

    if not serve:
        return 0
    _banner(5, "serve: BentoML service over the bundle (FAISS -> EASE re-rank, recent activity in Redis, collector)")
    from recstack.cli.demo_collect import demo_overrides, fresh, run_collection, write_items
    from recstack.cli.demo_segments import run_profiles_and_segments
    from recstack.serving.client import RecstackClient, send_examples

    key_note = ensure_dev_key(Path("outputs/secrets/hmac.key"))
    if key_note:
        print(f"  {key_note}", flush=True)
    api_key, keys_file = demo_api_key(out)
    print(f"  API key (role admin, for this demo only; hash in {keys_file}): {api_key}", flush=True)
    port = _free_port(port)
    base_url = f"http://127.0.0.1:{port}"
    server_log = out / "serve.log"
    serve_bin = Path(sys.executable).with_name("recstack-serve")
    stream = f"recstack:demo:{os.getpid()}:collect"  # a stream of the demo's own, deleted at the end
    collect_overrides = demo_overrides(stream, (out / "lake").resolve())
    fresh(out / "lake", stream, os.environ.get("RECSTACK_REDIS_URL", "redis://127.0.0.1:6379/0"))
    argv = [
        str(serve_bin),
        f"bundle={bundle_dir.resolve()}",
        f"port={port}",
        f"api_keys_file={keys_file.resolve()}",
        *collect_overrides,
    ]
    print(f"  {' '.join(argv)}  (log: {server_log})", flush=True)
    with server_log.open("w") as log_file:
        server = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with RecstackClient(base_url) as client:
            if not client.wait_ready(timeout_s=120):
                print(f"  the service did not become ready; see {server_log}", file=sys.stderr)
                return 1
        _banner(6, f"requests to {base_url}")
        known_user = str(split.users["user_id"].iloc[0])
        popular = split.items.iloc[np.argsort(-split.item_popularity)[:2]]["item_id"].astype(str).tolist()
        for block in send_examples(
            base_url,
            known_user=known_user,
            item_id=popular[0],
            clicked_items=popular,
            cold_user=f"demo-new-user-{os.getpid()}",
            api_key=api_key,
        ):
            print(block + "\n", flush=True)
        print(f"  the storefront: {base_url}/demo   the privacy notice: {base_url}/privacy\n", flush=True)
        _banner(
            7, "collect: real interactions replayed through the collector -> Redis Stream -> Parquet lake -> prepare"
        )
        items_csv = write_items(split.items, out / "items.csv")
        collected = run_collection(base_url, split.frame("train"), out, stream, api_key=api_key, users=split.users)
        _banner(8, "profiles and segments: per-user profiles and rule-based segments over the lake, served by the API")
        run_profiles_and_segments(base_url, out, stream, items_csv, api_key, collected.example_user)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    print("service stopped.", flush=True)
    if simulate:
        _simulate(out, split, runs["mf"].run_dir, runs["lightgcn"].run_dir, _free_port(port + 1), api_key, keys_file)
    print(f"The whole job took {time.perf_counter() - started:.0f} s.")
    print(f"Keep it running with `make serve` (serves {bundle_dir}).")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="recstack-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="where runs, report, bundle go")
    parser.add_argument("--port", type=int, default=3000, help="port for the demo service (a free one if taken)")
    parser.add_argument("--no-serve", action="store_true", help="stop after the report and the bundle")
    parser.add_argument("--no-simulate", action="store_true", help="skip the A/B simulation (the last step)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the data, e.g. data=ml1m")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The demo prints its own summary per step; Lightning's info lines and advisory warnings would bury it.
    warnings.filterwarnings("ignore", module=r"lightning(\..*)?")
    warnings.filterwarnings("ignore", category=UserWarning)
    sys.exit(run(args.out, args.port, args.overrides, serve=not args.no_serve, simulate=not args.no_simulate))


if __name__ == "__main__":
    main()
