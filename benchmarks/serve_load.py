"""Serving load benchmark: the recstack service under wrk on loopback, beside two floors, plus in-process timings.

    .venv/bin/python benchmarks/serve_load.py [--bundle PATH] [--duration 30] [--repeats 3] [--append RESULTS.md]

What it measures, ``--repeats`` times over (so the floors share the machine's state with the service, and every
figure comes with its range over the repeats):

* floors doing the same numpy top-10 work per request (scores over an ML-100K-sized item matrix + argpartition):
  a plain Starlette app under uvicorn (1 process); a bare BentoML 1.4 service with default settings (BentoML's
  default: 1 worker); the same bare service with the settings recstack's service uses (GC freeze, async endpoint, 2 s
  traffic timeout, access log and per-request tracing span off, one BLAS thread), with 1 worker and with 2;
* the recstack service (``recstack-serve``) over an ML-100K bundle, mixed known (80%) and unknown (20%) users,
  with 1 worker and with 2 (the default in ``configs/serve.yaml``);
* every server at concurrency 1 and 16 (``--duration`` seconds each); every row names its worker count, and the
  throughput ratios name both sides' configuration and workers;
* the pipeline in-process, without HTTP (ML-100K bundle, and a synthetic 1M-item catalogue with an IVF index);
* whether cross-request batching of the ranker would pay: one ORT call over 16x200 rows vs 16 calls of 200.

Without ``--bundle`` it uses ``outputs/demo/bundle`` (what ``make demo`` writes) when present, else builds an ML-100K
bundle: the prepared split, a truncated-SVD factorisation of the training matrix as embeddings, a small ONNX ranker
initialised from the same factors. wrk must be installed (Debian package). The results JSON, with the command it was
run with, goes to ``benchmarks/results/serve_load-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from invocation import command_line, results_path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

FLOOR_WORK = """
import numpy as np

_ITEMS = np.random.default_rng(0).standard_normal((1682, 64)).astype(np.float32)
_USERS = np.random.default_rng(1).standard_normal((943, 64)).astype(np.float32)


def top10(user_id: str) -> list[int]:
    scores = _ITEMS @ _USERS[sum(map(ord, user_id)) % len(_USERS)]
    part = np.argpartition(-scores, 10)[:10]
    return part[np.argsort(-scores[part])].tolist()
"""

PLAIN_APP = """
import json
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from floor_work import top10


async def recommend(request):
    body = json.loads(await request.body())
    return JSONResponse({"items": top10(body["user_id"])})

app = Starlette(routes=[Route("/recommend", recommend, methods=["POST"])])
"""

BARE_DEFAULT = """
import bentoml
from floor_work import top10


@bentoml.service(name="bare")
class Bare:
    @bentoml.api
    def recommend(self, user_id: str, k: int = 10) -> dict:
        return {"items": top10(user_id)}
"""

BARE_TUNED = """
import gc
import os
import bentoml
from floor_work import top10
from recstack.serving.http_guards import GcFreezeMiddleware
from recstack.serving.settings import ServeSettings

# recstack's own settings and middleware (configs/serve.yaml, http_guards), so the floor cannot drift from them.
S = ServeSettings.compose(["bundle=unused"])


@bentoml.service(
    name="baretuned",
    workers=int(os.environ.get("BARE_WORKERS", "1")),
    logging={"access": {"enabled": S.access_log}},
    traffic={"timeout": S.request_timeout_s},
    tracing={} if S.tracing else {"excluded_urls": ["/"]},
)
class BareTuned:
    def __init__(self):
        gc.collect()
        gc.freeze()

    @bentoml.api
    async def recommend(self, user_id: str, k: int = 10) -> dict:
        return {"items": top10(user_id)}


BareTuned.add_asgi_middleware(GcFreezeMiddleware, after=S.gc_freeze_after)
"""


# -- helpers ---------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready in {timeout} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def wrk_script(path: Path, bodies: list[str]) -> Path:
    quoted = ",\n".join("  [==[" + b + "]==]" for b in bodies)
    path.write_text(
        textwrap.dedent(
            """\
            local bodies = {
            %s
            }
            local n = 0
            request = function()
              n = n + 1
              return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[(n %% #bodies) + 1])
            end
            """
        )
        % quoted
    )
    return path


# Appended to a wrk script, it counts the responses with a status >= 300 by status and keeps the first one's body;
# run_wrk reads what it prints. (wrk then calls a Lua function per response: a little more client CPU.)
STATUS_COUNTER_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
statuses = {}
response = function(status, headers, body)
  if status >= 300 then
    statuses[status] = (statuses[status] or 0) + 1
    if first_body == nil then first_body = body end
  end
end
done = function(summary, latency, requests)
  for _, t in ipairs(threads) do
    for code, count in pairs(t:get("statuses")) do io.write(string.format("status %d: %d\\n", code, count)) end
    local body = t:get("first_body")
    if body ~= nil then io.write("first non-2xx body: " .. string.gsub(string.sub(body, 1, 300), "\\n", " ") .. "\\n") end
  end
end
"""


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, script: Path, connections: int, duration: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict = {"connections": connections, "duration_s": duration, "load_before": None}
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        result[f"p{pct}_ms"] = _ms(match.group(1)) if match else float("nan")
    result["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    result["socket_errors"] = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()))) if sock else {}
    )
    result["errors"] = result["non2xx"] + sum(result["socket_errors"].values())
    # Written by a script that includes STATUS_COUNTER_LUA: which statuses the non-2xx were, and one body.
    result["statuses"] = {code: int(n) for code, n in re.findall(r"^status (\d+): (\d+)$", out, re.M)}
    body = re.search(r"^first non-2xx body: (.*)$", out, re.M)
    if body:
        result["first_non2xx_body"] = body.group(1)
    return result


def measure_server(
    name: str,
    argv: list[str],
    env: dict,
    cwd: Path,
    port: int,
    script: Path,
    plan: list[tuple[int, int]],
    ready_path: str = "/readyz",
) -> list[dict]:
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_ready(f"http://127.0.0.1:{port}{ready_path}", process)
        url = f"http://127.0.0.1:{port}/recommend"
        run_wrk(url, script, 4, 3)  # warm-up (and past the service's GC freeze after 200 requests)
        for connections, duration in plan:
            load = loadavg()
            cpu_before = tree_cpu_seconds(process.pid)
            row = run_wrk(url, script, connections, duration)
            cpu = tree_cpu_seconds(process.pid) - cpu_before
            # CPU per request of the whole server (arbiter + workers): much less sensitive to a busy machine than
            # latency, and what capacity on an idle machine follows from.
            row.update(name=name, load_before=load, server_cpu_ms_per_request=1e3 * cpu / max(row["requests"], 1))
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        stop(process)
    return rows


# -- bundles ---------------------------------------------------------------------------------------------------------


def export_ranker(path: Path, user_factors: np.ndarray, item_factors: np.ndarray, seed: int = 0) -> Path:
    """A Wide & Deep-shaped ONNX ranker (user/item embeddings from the factors, hour and day-of-week terms)."""
    import torch

    torch.manual_seed(seed)
    n_users, d = user_factors.shape
    n_items = len(item_factors)

    class Ranker(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.user = torch.nn.Embedding(n_users + 1, d)
            self.item = torch.nn.Embedding(n_items, d)
            self.hour = torch.nn.Embedding(24, 1)
            self.dow = torch.nn.Embedding(7, 1)
            self.deep = torch.nn.Sequential(torch.nn.Linear(2 * d, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
            with torch.no_grad():
                self.user.weight[:n_users] = torch.from_numpy(user_factors)
                self.user.weight[n_users] = 0
                self.item.weight[:] = torch.from_numpy(item_factors)

        def forward(self, user_idx, item_idx, hour, dow):  # type: ignore[no-untyped-def]
            u, i = self.user(user_idx), self.item(item_idx)
            wide = (u * i).sum(-1) + self.hour(hour).squeeze(-1) + self.dow(dow).squeeze(-1)
            return wide + 0.1 * self.deep(torch.cat([u, i], -1)).squeeze(-1)

    names = ["user_idx", "item_idx", "hour", "dow"]
    args = tuple(torch.zeros(4, dtype=torch.long) for _ in names)
    torch.onnx.export(
        Ranker().eval(),
        args,
        str(path),
        input_names=names,
        output_names=["score"],
        dynamic_axes={n: {0: "batch"} for n in [*names, "score"]},
        dynamo=False,
    )
    return path


def build_ml100k_bundle(out: Path, dim: int = 32) -> Path:
    from scipy.sparse.linalg import svds

    from recstack.bundle.writer import write_bundle
    from recstack.config import prepare_named

    split = prepare_named("ml100k", "random", out_root=out / "processed")
    train = split.matrix("train").astype(np.float64)
    u, s, vt = svds(train, k=dim, random_state=0)
    root = np.sqrt(s)
    users_f = (u * root).astype(np.float32)
    items_f = (vt.T * root).astype(np.float32)
    items = split.items.copy()
    items["popularity"] = split.item_popularity.astype(np.int64)
    keep = [c for c in ("item_idx", "item_id", "title", "year", "categories", "popularity") if c in items.columns]
    ranker = export_ranker(out / "ranker.onnx", users_f, items_f)
    return write_bundle(
        out / "bundle",
        model_kind="svd-benchmark",
        users=split.users,
        items=items[keep],
        user_embeddings=users_f,
        item_embeddings=items_f,
        seen=split.matrix("train"),
        index_config={"kind": "flat", "metric": "ip"},
        ranker_onnx=ranker,
        dataset="ml100k",
        split_hash=split.config_hash,
    )


def synthetic_pipeline(n_items: int = 1_000_000, n_users: int = 20_000, dim: int = 64, seed: int = 0):  # type: ignore[no-untyped-def]
    """A 1M-item catalogue in memory: clustered vectors, an IVF index, Zipf popularity, a real ONNX ranker."""
    import pandas as pd
    import scipy.sparse as sp

    from recstack.retrieval.index import IndexConfig, build_index
    from recstack.serving.fallbacks import PopularityFallback
    from recstack.serving.pipeline import Pipeline, ranker_session

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((256, dim)).astype(np.float32)
    items = centres[rng.integers(0, 256, n_items)] + 0.5 * rng.standard_normal((n_items, dim)).astype(np.float32)
    users = centres[rng.integers(0, 256, n_users)] + 0.5 * rng.standard_normal((n_users, dim)).astype(np.float32)
    popularity = rng.zipf(1.3, n_items).clip(max=100_000)
    rows = np.repeat(np.arange(n_users), 30)
    cols = rng.integers(0, n_items, len(rows))
    seen = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    index = build_index(items, IndexConfig(kind="ivf_flat", metric="ip", nlist=1024, nprobe=16))
    genres = [f"g{i}" for i in range(18)]
    cats = [[genres[i % 18]] for i in range(n_items)]
    tmp = Path(tempfile.mkdtemp(prefix="recstack-1m-"))
    ranker = ranker_session(export_ranker(tmp / "ranker.onnx", users[:, :16].copy(), items[:, :16].copy()))
    user_table = pd.DataFrame({"user_idx": np.arange(n_users), "user_id": [f"s{u}" for u in range(n_users)]})
    pipeline = Pipeline(
        user_index={f"s{u}": u for u in range(n_users)},
        item_index={f"m{i}": i for i in range(n_items)},
        item_ids=np.array([f"m{i}" for i in range(n_items)], dtype=object),
        item_titles=np.array([f"item {i}" for i in range(n_items)], dtype=object),
        item_categories=cats,
        user_embeddings=users,
        item_embeddings=items,
        seen=seen,
        index=index,
        popularity=PopularityFallback.build(popularity, seen, user_table),
        ranker=ranker,
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return pipeline


# -- in-process ------------------------------------------------------------------------------------------------------


def inprocess(pipeline, user_ids: list[str], n: int = 3000, seed: int = 0) -> dict:  # type: ignore[no-untyped-def]
    from recstack.serving.online_store import Event
    from recstack.serving.pipeline import Query

    rng = random.Random(seed)
    item_ids = list(pipeline.item_index)[:5000]
    times, cpu = [], []
    for i in range(n):
        if rng.random() < 0.8:
            query, recent = Query(user_id=rng.choice(user_ids), k=10, hour=12, dow=3), ()
        else:  # unknown user, half with recent activity (fold-in)
            recent = [Event(rng.choice(item_ids), "click", 1.0, 0) for _ in range(5)] if i % 2 else ()
            query = Query(user_id=f"cold-{i}", k=10)
        start, start_cpu = time.perf_counter(), time.thread_time()
        pipeline.recommend(query, recent)
        times.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    ms = np.array(times[200:]) * 1e3  # after warm-up
    # CPU time of this thread too: on a shared machine the wall-clock tail is mostly time spent preempted.
    cpu_ms = np.array(cpu[200:]) * 1e3
    return (
        {f"p{p}_ms": float(np.percentile(ms, p)) for p in (50, 90, 99)}
        | {"mean_ms": float(ms.mean())}
        | {f"cpu_p{p}_ms": float(np.percentile(cpu_ms, p)) for p in (50, 99)}
    )


def ranker_batching(pipeline, reps: int = 200) -> dict:  # type: ignore[no-untyped-def]
    """Does batching 16 requests' candidates into one ORT call pay? Per-request time, both ways."""
    rng = np.random.default_rng(0)
    one = rng.integers(0, pipeline.n_items, 200)
    many = rng.integers(0, pipeline.n_items, 16 * 200)
    for _ in range(20):
        pipeline._rerank(0, one, 12, 3)
    start = time.perf_counter()
    for _ in range(reps):
        pipeline._rerank(0, one, 12, 3)
    single = (time.perf_counter() - start) / reps
    start = time.perf_counter()
    for _ in range(reps // 4):
        pipeline._rerank(0, many, 12, 3)
    batched = (time.perf_counter() - start) / (reps // 4) / 16
    return {"ort_200_rows_ms": single * 1e3, "ort_per_request_in_batch_of_16_ms": batched * 1e3}


# -- main ------------------------------------------------------------------------------------------------------------


def find_bundle(arg: Path | None, work: Path) -> Path:
    """``--bundle``, else the demo's bundle when ``make demo`` has run, else a small SVD bundle built in ``work``."""
    if arg is not None:
        return arg
    demo = REPO / "outputs" / "demo" / "bundle"
    if (demo / "manifest.json").is_file():
        return demo
    print("no --bundle and no outputs/demo/bundle: building a small SVD bundle", flush=True)
    return build_ml100k_bundle(work)


def servers(work: Path, bundle_path: Path, env: dict, tuned_env: dict, redis_prefix: str) -> list[dict]:
    """What is measured: name, worker count, argv builder (from the port), environment, cwd, wrk script name."""
    py, bentoml, serve = str(VENV_BIN / "python"), str(VENV_BIN / "bentoml"), str(VENV_BIN / "recstack-serve")
    uvicorn = [py, "-m", "uvicorn", "plain_app:app", "--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
    out = [
        {"name": "plain uvicorn (Starlette)", "workers": 1, "argv": lambda p: [*uvicorn, "--port", str(p)], "env": env},
        {
            "name": "bare BentoML, defaults",
            "workers": 1,  # BentoML's default
            "argv": lambda p: [bentoml, "serve", "bare_default:Bare", "--host", "127.0.0.1", "--port", str(p)],
            "env": env,
        },
    ]
    for workers in (1, 2):
        out.append(
            {
                "name": "bare BentoML, recstack settings",
                "workers": workers,
                "argv": lambda p: [bentoml, "serve", "bare_tuned:BareTuned", "--host", "127.0.0.1", "--port", str(p)],
                "env": {**tuned_env, "BARE_WORKERS": str(workers)},
            }
        )
    for workers in (1, 2):
        out.append(
            {
                "name": "recstack service",
                "workers": workers,
                "argv": lambda p, w=workers: [
                    serve,
                    f"bundle={bundle_path}",
                    f"port={p}",
                    f"workers={w}",
                    f"redis_prefix={redis_prefix}",
                    # Keys and rate limits off, as the floors have none: their cost is benchmarks/privacy.py's figure.
                    "auth=false",
                    "rate_limit=false",
                ],
                "env": env,
                "cwd": REPO,
                "recstack": True,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="an ML-100K bundle (default: outputs/demo/bundle, else built)")
    parser.add_argument("--duration", type=int, default=30, help="seconds per load run at c=1 and c=16")
    parser.add_argument("--repeats", type=int, default=3, help="measure every server this many times (ranges)")
    parser.add_argument("--skip-1m", action="store_true", help="skip the synthetic 1M-item in-process run")
    parser.add_argument("--recstack-only", action="store_true", help="measure the recstack service only (no floors)")
    parser.add_argument("--append", type=Path, help="append the markdown section to this file")
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/serve_load-<time>.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    command = command_line()
    started = datetime.now(UTC)

    work = Path(tempfile.mkdtemp(prefix="recstack-serve-load-"))
    bundle_path = find_bundle(args.bundle, work).resolve()
    from recstack.bundle.reader import Bundle
    from recstack.serving.pipeline import Pipeline

    bundle = Bundle.load(bundle_path)
    pipeline = Pipeline.from_bundle(bundle)
    gc.collect()
    gc.freeze()  # as the service does after loading
    known = list(bundle.user_index)
    results: dict = {
        "command": command,
        "bundle": str(bundle_path),
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python {platform.python_version()}",
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "duration_s": args.duration,
        "repeats": args.repeats,
    }

    results["inprocess_ml100k"] = inprocess(pipeline, known)
    # ORT batching only means something for an ONNX ranker (an item-item ranker is one numpy gather and sum).
    results["ranker_batching"] = ranker_batching(pipeline) if pipeline.ranker_kind == "onnx" else None
    print(json.dumps({k: results[k] for k in ("inprocess_ml100k", "ranker_batching")}), flush=True)

    rng = random.Random(0)
    bodies = []
    for i in range(400):
        user = rng.choice(known) if rng.random() < 0.8 else f"cold-{i}"
        bodies.append(json.dumps({"user_id": user, "k": 10}))
    script = wrk_script(work / "mixed.lua", bodies)

    for name, source in (("floor_work.py", FLOOR_WORK), ("plain_app.py", PLAIN_APP)):
        (work / name).write_text(source)
    (work / "bare_default.py").write_text(BARE_DEFAULT)
    (work / "bare_tuned.py").write_text(BARE_TUNED)
    env = {**os.environ, "PYTHONPATH": f"{work}:{REPO}"}
    for var in ("BENTOML_DO_NOT_TRACK", "BENTOML_CONFIG_OVERRIDES", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.pop(var, None)  # the default floor runs with BentoML's defaults
    # what recstack-serve sets (src/recstack/cli/serve.py), for the tuned floor
    tuned_env = {
        **env,
        "BENTOML_DO_NOT_TRACK": "True",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    plan = [(1, args.duration), (16, args.duration)]
    redis_prefix = f"bench:{int(time.time())}:"
    rows: list[dict] = []
    for run in range(args.repeats):
        for server in servers(work, bundle_path, env, tuned_env, redis_prefix):
            if args.recstack_only and not server.get("recstack"):
                continue
            port = free_port()
            label = f"{server['name']}, {server['workers']} worker{'s' if server['workers'] > 1 else ''}"
            measured = measure_server(
                label,
                server["argv"](port),
                server["env"],
                server.get("cwd", work),
                port,
                script,
                plan,
                ready_path="/readyz" if server["name"] != "plain uvicorn (Starlette)" else "/recommend",
            )
            for row in measured:
                row.update(run=run, server=server["name"], workers=server["workers"])
            rows += measured
    results["http"] = rows

    if not args.skip_1m:
        del pipeline
        big = synthetic_pipeline()
        gc.collect()
        gc.freeze()
        results["inprocess_1m"] = inprocess(big, [f"s{u}" for u in range(20_000)])
        print(json.dumps({"inprocess_1m": results["inprocess_1m"]}), flush=True)

    out = args.json or results_path("serve_load", started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    section = render(results)
    print(section)
    print(f"wrote {out}")
    if args.append:
        if not args.append.exists():
            args.append.write_text("# Benchmark results\n")
        with args.append.open("a") as f:
            f.write("\n" + section)
    shutil.rmtree(work, ignore_errors=True)


def _range(values: list[float], fmt: str) -> str:
    mid = statistics.median(values)
    return (
        format(mid, fmt)
        if len(values) == 1
        else f"{format(mid, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"
    )


# The throughput ratios at c=16 that the README quotes: (recstack side, floor side), each (server, workers).
RATIOS = [
    (("recstack service", 2), ("bare BentoML, defaults", 1)),
    (("recstack service", 1), ("bare BentoML, defaults", 1)),
    (("recstack service", 2), ("bare BentoML, recstack settings", 2)),
    (("recstack service", 1), ("bare BentoML, recstack settings", 1)),
    (("recstack service", 2), ("bare BentoML, recstack settings", 1)),
]


def ratio_rows(rows: list[dict], connections: int = 16) -> list[dict]:
    """Per repeat, req/s of one side over the other at ``connections`` (both measured in the same repeat)."""
    by = {(r["run"], r["server"], r["workers"], r["connections"]): r for r in rows}
    out = []
    for ours, floor in RATIOS:
        values = [
            by[(run, *ours, connections)]["rps"] / by[(run, *floor, connections)]["rps"]
            for run in sorted({r["run"] for r in rows})
            if (run, *ours, connections) in by and (run, *floor, connections) in by
        ]
        if values:
            out.append({"ours": ours, "floor": floor, "connections": connections, "ratios": values})
    return out


def render(results: dict) -> str:
    rows = results["http"]
    lines = [
        "## Serving under load (`benchmarks/serve_load.py`)",
        "",
        f"Command: `{results['command']}`. Started {results['started']}; {results['machine']}; bundle "
        f"`{results['bundle']}`. wrk on loopback, 1 thread, {results['duration_s']} s per row, mixed known (80%) / "
        f"unknown (20%) users, k=10; {results['repeats']} repeats of every server. `load` is the 1-min load average "
        "before each row (the machine is shared). Figures: median over repeats (min-max).",
        "",
        "| server | workers | conns | req/s | p50 ms | p99 ms | errors | server CPU ms/req | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["server"], r["workers"], r["connections"]), []).append(r)
    for (server, workers, conns), group in groups.items():
        lines.append(
            f"| {server} | {workers} | {conns} | {_range([g['rps'] for g in group], ',.0f')} | "
            f"{_range([g['p50_ms'] for g in group], '.2f')} | {_range([g['p99_ms'] for g in group], '.2f')} | "
            f"{sum(g['errors'] for g in group)} | "
            f"{_range([g.get('server_cpu_ms_per_request', float('nan')) for g in group], '.2f')} | "
            f"{min(float(g['load_before']) for g in group):.2f}-{max(float(g['load_before']) for g in group):.2f} |"
        )
    lines += [
        "",
        "Throughput ratios at c=16, per repeat (both sides measured in the same repeat), median (min-max):",
        "",
        "| recstack side | floor side | req/s ratio |",
        "|---|---|---:|",
    ]
    for r in ratio_rows(rows):
        (ours, ow), (floor, fw) = r["ours"], r["floor"]
        lines.append(
            f"| {ours}, {ow} worker{'s' if ow > 1 else ''} | {floor}, {fw} worker{'s' if fw > 1 else ''} | "
            f"{_range(r['ratios'], '.2f')}x |"
        )
    lines += ["", "In-process pipeline, per request, no HTTP (mixed known / cold / fold-in users, k=10, N=200):", ""]
    lines += [
        "| catalogue | p50 ms | p90 ms | p99 ms | mean ms | CPU p50 ms | CPU p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in (
        ("inprocess_ml100k", "ML-100K bundle"),
        ("inprocess_1m", "synthetic 1M items, IVF1024 nprobe 16"),
    ):
        if key in results:
            r = results[key]
            lines.append(
                f"| {label} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['mean_ms']:.3f} | "
                + (f"{r['cpu_p50_ms']:.3f} | {r['cpu_p99_ms']:.3f} |" if "cpu_p50_ms" in r else "– | – |")
            )
    b = results["ranker_batching"]
    if b is not None:
        lines += [
            "",
            f"Ranker batching: one ORT call over 200 candidates {b['ort_200_rows_ms']:.3f} ms; per request inside one "
            f"call over 16x200 rows {b['ort_per_request_in_batch_of_16_ms']:.3f} ms.",
        ]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
