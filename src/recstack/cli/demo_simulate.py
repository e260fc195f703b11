"""``make demo``'s simulation step: an A/B test between two bundles of different models, MF and LightGCN retrieval,
on the test users of the demo's split (recstack.simulate).

train LightGCN (a short run) -> export both runs as retrieval bundles whose seen lists hold train + valid
(``seen=train_valid``: what the offline evaluator masks on the test stage) -> serve them as two arms of one
experiment, with a Redis key prefix, stream and lake of the step's own -> run ``recstack-collect consume`` beside it
-> every test user visits, clicks and posts their held-out interactions -> per-arm online CTR@10 and MAP@10 from the
lake, beside each bundle's offline MAP@10 on the same users.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

EXPERIMENT = "demo-mf-vs-lightgcn"


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _stop(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM to the process group it leads (started with start_new_session), SIGKILL if it outlives ``timeout_s``."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def running(argv: Sequence[str], log: Path) -> Iterator[subprocess.Popen]:
    """A recstack tool in its own process group, its output in ``log``; stopped on leaving the block."""
    print(f"  {' '.join(argv)}  (log: {log})", flush=True)
    with log.open("w") as out:
        process = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        _stop(process)


@contextmanager
def serving(argv: Sequence[str], log: Path, base_url: str, timeout_s: float = 180) -> Iterator[subprocess.Popen]:
    """``recstack-serve`` (``argv``) until it answers ``/readyz``; stopped on leaving the block."""
    from recstack.serving.client import RecstackClient

    with running(argv, log) as server, RecstackClient(base_url) as client:
        deadline = time.monotonic() + timeout_s
        while not client.wait_ready(timeout_s=2):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the simulation's service did not become ready; see {log}")
        yield server


def delete_prefix(redis_url: str, prefix: str) -> None:
    """Remove every Redis key under ``prefix`` (the step's recent activity, consent, stream, reload log)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def export_arm(run_dir: Path, out: Path) -> Path:
    """A retrieval-only bundle of ``run_dir`` with train + valid seen lists (no ranker, no content section: quick)."""
    from recstack.cli.export import export_from_config
    from recstack.config import compose

    if out.exists():
        shutil.rmtree(out)
    return export_from_config(
        compose("export", [f"run={run_dir}", f"out={out}", "seen=train_valid", "text=false", "content.enabled=false"])
    )


def server_argv(bundles: dict[str, Path], port: int, keys_file: Path, prefix: str, lake: Path) -> list[str]:
    """``recstack-serve`` with one arm per bundle (equal weights), Redis keys under ``prefix``, its own lake, and
    consent required (the simulator consents for each user), keys and rate limits as configured by default."""
    arms = ",".join(f"{arm}:{{bundle:'{path.resolve()}',weight:1}}" for arm, path in bundles.items())
    return [
        _tool("recstack-serve"),
        f"bundle={next(iter(bundles.values())).resolve()}",
        f"port={port}",
        f"api_keys_file={keys_file.resolve()}",
        f"redis_prefix={prefix}recent:",
        # A degraded answer (Redis slower than the timeout on a busy machine) is popularity, not the bundle's list:
        # a generous timeout keeps the comparison about the bundles.
        "redis_timeout_s=1.0",
        *collector_overrides(prefix, lake),
        f"experiment.name={EXPERIMENT}",
        f"experiment.arms={{{arms}}}",
    ]


def collector_overrides(prefix: str, lake: Path) -> list[str]:
    return [f"collector.stream={prefix}collect", f"collector.lake={lake.resolve()}"]


def run_simulation(
    out: Path,
    split: object,
    runs: dict[str, Path],
    *,
    port: int,
    api_key: str,
    keys_file: Path,
    n_users: int | None = None,
    progress: bool = True,
):  # type: ignore[no-untyped-def]
    """Serve ``runs`` (arm name -> trained run folder) as an experiment and replay the split's test users through it;
    prints the per-arm table and returns the :class:`~recstack.simulate.run.SimulationResult`."""
    from recstack.config import collect_settings
    from recstack.serving.client import RecstackClient
    from recstack.simulate.click_model import ClickModel
    from recstack.simulate.compare import format_ab, format_arms
    from recstack.simulate.run import SimulateSettings, simulate
    from recstack.simulate.traffic import ApiKeys, TrafficSettings

    sim = out / "sim"
    bundles = {arm: export_arm(run_dir, sim / arm) for arm, run_dir in runs.items()}
    print(f"  bundles (seen = train + valid): {', '.join(str(p) for p in bundles.values())}", flush=True)
    lake = sim / "lake"
    shutil.rmtree(lake, ignore_errors=True)
    prefix = f"recstack:demo:{os.getpid()}:sim:"
    collect = collect_settings([o.removeprefix("collector.") for o in collector_overrides(prefix, lake)])
    base_url = f"http://127.0.0.1:{port}"
    settings = SimulateSettings(
        traffic=TrafficSettings(base_url=base_url, k=10, concurrency=8, max_batch=collect.max_batch),
        bundles=tuple(str(p) for p in bundles.values()),
        n_users=n_users,
        seed=0,
        clicks=ClickModel(0.0),
        progress=progress,
        monitor_out=str(sim / "monitor"),
    )
    consume = [_tool("recstack-collect"), "consume", "consumer=demo-sim", *collector_overrides(prefix, lake)]
    delete_prefix(collect.redis_url, prefix)
    try:
        with (
            serving(server_argv(bundles, port, keys_file, prefix, lake), sim / "serve.log", base_url),
            running([*consume, "collector.flush_interval_s=0.5"], sim / "consume.log"),
        ):
            with RecstackClient(base_url, api_key=api_key) as client:
                arms = client.ready().body.get("experiment", {}).get("arms", {})
            print(f"  experiment {EXPERIMENT}: " + ", ".join(f"{a} -> {t}" for a, t in arms.items()), flush=True)
            result = simulate(split, settings, collect, ApiKeys(recommend=api_key, collect=api_key))  # type: ignore[arg-type]
    finally:
        delete_prefix(collect.redis_url, prefix)
    print(
        f"  {len(result.visits):,} test users visited in {result.seconds:.1f} s (consent, POST /recommend, clicks and "
        f"held-out ratings through POST /events), stored in {lake}",
        flush=True,
    )
    print(f"  online figures: recstack-monitor over that lake (report: {result.monitor_report})", flush=True)
    print(format_arms(result.arms, settings.traffic.k, settings.confidence, result.n_test_users), flush=True)
    if verdicts := format_ab(result.ab, result.experiment):
        print(verdicts, flush=True)
    if not result.records_agree:
        print("  warning: the lake's judgement differs from the simulator's own records", flush=True)
    return result
