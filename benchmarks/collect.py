"""Collection benchmark: the collector mounted in recstack-serve under wrk, the consumer into Parquet, the lake's
visibility latency and the server-log import, each beside the floor of a bare ``XADD`` loop in redis-py.

    .venv/bin/python benchmarks/collect.py [--bundle PATH] [--batch-seconds 60] [--seconds 20] [--repeats 3]

What is measured (issue "Collection", benchmark):

* ``POST /events`` with batches of 100 events (10 consented users, real User-Agent), c=16, ``--batch-seconds``;
* ``POST /events`` with single events and ``GET /pixel.gif``, c=16, ``--seconds`` each;
* the consumer (``recstack-collect consume``, one process) draining what those runs left in the stream into Parquet;
* accepted -> visible in the lake: single events at ~100/s with the consumer running (its default flush interval),
  each event's first appearance in a committed Parquet file minus the time its 202 arrived;
* log import (benchmarks/collect_logs.py when present);
* the floors: a bare redis-py loop of one ``XADD`` per event, and of pipelined ``XADD`` of 100 per round trip.

Consent is required as by default (the users consent first); wrk runs with one thread beside the server on the same
2 cores, so every figure includes the load generator's share. The results JSON (with the command, the machine load
and every run) goes to benchmarks/results/collect-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import redis
from invocation import command_line, results_path
from serve_load import find_bundle, free_port, loadavg, run_wrk, stop, tree_cpu_seconds, wait_ready

REPO = Path(__file__).resolve().parents[1]
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
USERS = [f"bench-user-{i}" for i in range(10)]


def wrk_lua(path: Path, method: str, body: str | None, token: str | None = None) -> Path:
    """A wrk script: one fixed request with JSON content type, a browser User-Agent and (when given) an API key."""
    lines = [f'wrk.method = "{method}"', f'wrk.headers["User-Agent"] = "{UA}"']
    if token:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    if body is not None:
        lines += ['wrk.headers["Content-Type"] = "application/json"', f"wrk.body = [==[{body}]==]"]
    path.write_text("\n".join(lines) + "\n")
    return path


def batch_body(n: int) -> str:
    events = [
        {"user_id": USERS[i % len(USERS)], "item_id": str(1 + i % 50), "event_type": "view", "tz_offset_min": 60}
        for i in range(n)
    ]
    return json.dumps({"events": events}) if n > 1 else json.dumps(events[0])


def floors(client: redis.Redis, stream: str, row: dict, seconds: float = 5.0) -> dict:
    """Bare redis-py: one XADD per event (sync round trips), and pipelined XADD of 100 per round trip."""
    from recstack.collect.records import encode_entry

    fields = encode_entry("events", [row])
    out = {}
    for name, per_trip in (("xadd_one_per_event", 1), ("xadd_pipelined_100", 100)):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            pipe = client.pipeline(transaction=False)
            for _ in range(per_trip):
                pipe.xadd(stream, fields)
            pipe.execute()
            n += per_trip
        out[name] = n / (time.perf_counter() - start)
        client.delete(stream)
    return out


def lake_rows(lake: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in (lake / "events").glob("dt=*/hour=*/part-*.parquet"))


def consume(env: dict, overrides: list[str], client: redis.Redis, stream: str, group: str, log: Path) -> dict:
    """Drain the stream with one consumer process; events/s over the drain (rows stored / seconds)."""
    from recstack.collect.consumer import stored_up_to
    from recstack.collect.records import StreamNames

    names = StreamNames(stream=stream, group=group)
    last = client.xinfo_stream(stream)["last-generated-id"].decode()
    lake = Path(next(o for o in overrides if o.startswith("collector.lake=")).split("=", 1)[1])
    before = lake_rows(lake)
    argv = [str(Path(sys.executable).with_name("recstack-collect")), "consume", "consumer=bench", *overrides]
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    start = time.perf_counter()
    try:
        while not stored_up_to(client, names, last):
            assert process.poll() is None, log.read_text()[-2000:]
            time.sleep(0.05)
        seconds = time.perf_counter() - start
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    stored = lake_rows(lake) - before
    return {"events": stored, "seconds": round(seconds, 2), "events_per_s": stored / seconds}


def lake_latency(base: str, lake: Path, token: str, rate: float = 100.0, seconds: float = 20.0) -> dict:
    """Single events at ~``rate``/s while the consumer runs; per event: first seen in a committed file - accepted."""
    accepted: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        read: set[Path] = set()
        while not done.is_set() or len(seen) < len(accepted):
            now = time.time()
            for part in sorted((lake / "events").glob("dt=*/hour=*/part-*.parquet")):
                if part in read:
                    continue
                read.add(part)
                for event_id in pq.read_table(part, columns=["event_id"])["event_id"].to_pylist():
                    if event_id.startswith("lat-"):
                        seen.setdefault(event_id, now)
            if done.is_set() and time.time() - now > 30:
                break
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with httpx.Client(
        base_url=base, timeout=10, headers={"user-agent": UA, "authorization": f"Bearer {token}"}
    ) as http:
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < seconds:
            event_id = f"lat-{n}"
            body = {"event_id": event_id, "user_id": USERS[n % len(USERS)], "item_id": "1", "event_type": "click"}
            answer = http.post("/events", json=body)
            assert answer.status_code == 202 and answer.json()["accepted"] == 1, answer.text
            accepted[event_id] = time.time()
            n += 1
            time.sleep(max(0.0, start + n / rate - time.perf_counter()))
    done.set()
    watcher.join(timeout=60)
    delays = sorted(seen[e] - accepted[e] for e in accepted if e in seen)
    missing = len(accepted) - len(delays)
    q = statistics.quantiles(delays, n=100) if len(delays) > 1 else [float("nan")] * 99
    return {"events": len(accepted), "missing": missing, "p50_s": q[49], "p99_s": q[98], "max_s": max(delays)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--batch-seconds", type=int, default=60)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    started = datetime.now(UTC)
    work = Path(tempfile.mkdtemp(prefix="recstack-collect-bench-"))
    key_file = work / "hmac.key"
    key_file.write_text(os.urandom(32).hex())
    env = {**os.environ, "RECSTACK_HMAC_KEY_FILE": str(key_file), "BENTOML_DO_NOT_TRACK": "True"}
    env.pop("RECSTACK_HMAC_KEY", None)
    os.environ.update(RECSTACK_HMAC_KEY_FILE=str(key_file))
    stream = f"recstack:bench:{os.getpid()}:collect"
    lake = work / "lake"
    overrides = [f"collector.stream={stream}", f"collector.lake={lake}", "collector.max_backlog=100000000"]
    from recstack.serving.api_keys import new_key, write_key_file

    token, entry = new_key("collect", "bench-collect")
    keys = work / "api_keys.yaml"
    write_key_file(keys, [entry])
    # Keys and rate limits on, as deployed, with limits far above the load so that their cost is measured, not a 429
    # (the shipped per-address limits are for keyless pages and collect keys in browsers, not a load generator).
    guarded = [
        f"api_keys_file={keys}",
        "rate_limit_per_key=100000000/second",
        "rate_limit_per_ip=100000000/second",
        "rate_limit_pixel_per_ip=100000000/second",
        f"rate_limit_prefix={stream}:rl",
    ]
    client = redis.Redis()
    results: dict = {"command": command_line(), "started": started.isoformat(), "load_before": loadavg(), "runs": []}
    bundle = find_bundle(args.bundle, work)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = [
        str(Path(sys.executable).with_name("recstack-serve")),
        f"bundle={bundle}",
        f"port={port}",
        *overrides,
        *guarded,
    ]
    server = subprocess.Popen(serve, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"{base}/readyz", server)
        with httpx.Client(base_url=base, timeout=10, headers={"authorization": f"Bearer {token}"}) as http:
            for user in USERS:
                http.post("/consent", json={"user_id": user, "purposes": {"analytics": True, "personalisation": True}})
        scripts = {
            "events_batch100": (wrk_lua(work / "batch.lua", "POST", batch_body(100), token), "/events", 100),
            "events_single": (wrk_lua(work / "one.lua", "POST", batch_body(1), token), "/events", 1),
            "pixel": (wrk_lua(work / "pixel.lua", "GET", None), f"/pixel.gif?e=view&i=1&u={USERS[0]}", 1),
        }
        for name, (script, path, per_request) in scripts.items():
            run_wrk(base + path, script, 4, 3)  # warm-up
            for repeat in range(args.repeats):
                duration = args.batch_seconds if name == "events_batch100" else args.seconds
                load = loadavg()
                cpu = tree_cpu_seconds(server.pid)
                row = run_wrk(base + path, script, args.connections, duration)
                row.update(
                    name=name,
                    repeat=repeat,
                    load_before=load,
                    events_per_s=row["rps"] * per_request,
                    server_cpu_ms_per_request=1e3 * (tree_cpu_seconds(server.pid) - cpu) / max(row["requests"], 1),
                )
                print(json.dumps(row), flush=True)
                results["runs"].append(row)
        results["consumer"] = consume(env, overrides, client, stream, "lake", work / "consume.log")
        print(json.dumps({"consumer": results["consumer"]}), flush=True)
        argv = [str(Path(sys.executable).with_name("recstack-collect")), "consume", "consumer=latency", *overrides]
        with (work / "consume-latency.log").open("w") as out:
            consumer = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            results["lake_latency"] = lake_latency(base, lake, token)
        finally:
            os.killpg(consumer.pid, signal.SIGTERM)
            consumer.wait(timeout=60)
        print(json.dumps({"lake_latency": results["lake_latency"]}), flush=True)
    finally:
        stop(server)
    row = {
        "event_id": "x" * 32,
        "user_id": "0" * 32,
        "anonymous": False,
        "item_id": "1",
        "event_type": "view",
        "received_ts": int(time.time() * 1000),
        "source": "api",
        "device_class": "desktop",
    }
    results["floors"] = floors(client, stream + ":floor", row)
    print(json.dumps({"floors": results["floors"]}), flush=True)
    logs = REPO / "benchmarks" / "collect_logs.py"
    if logs.exists():
        out = subprocess.run([sys.executable, str(logs)], env=env, capture_output=True, text=True, check=True).stdout
        results["log_import"] = json.loads(out.strip().splitlines()[-1])
        print(json.dumps({"log_import": results["log_import"]}), flush=True)
    for key in list(client.scan_iter(match=f"{stream}*")):
        client.delete(key)
    results["load_after"] = loadavg()
    path = results_path("collect", started)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(textwrap.dedent(summary(results)))
    print(f"results: {path}")
    shutil.rmtree(work, ignore_errors=True)


def summary(results: dict) -> str:
    lines = []
    for name in ("events_batch100", "events_single", "pixel"):
        runs = [r for r in results["runs"] if r["name"] == name]
        eps = [r["events_per_s"] for r in runs]
        rps = [r["rps"] for r in runs]
        errors = sum(r["errors"] for r in runs)
        p99 = [r["p99_ms"] for r in runs]
        lines.append(
            f"{name:<16} {statistics.median(rps):8.0f} req/s ({min(rps):.0f}-{max(rps):.0f}), "
            f"{statistics.median(eps):9.0f} events/s ({min(eps):.0f}-{max(eps):.0f}), p99 {statistics.median(p99):.1f} ms, "
            f"errors {errors}, {len(runs)} runs"
        )
    c = results["consumer"]
    lines.append(f"consumer         {c['events_per_s']:9.0f} events/s ({c['events']:,} events in {c['seconds']} s)")
    lat = results["lake_latency"]
    lines.append(f"lake visibility  p50 {lat['p50_s']:.2f} s, p99 {lat['p99_s']:.2f} s, missing {lat['missing']}")
    f = results["floors"]
    lines.append(
        f"floor XADD/event {f['xadd_one_per_event']:9.0f} events/s; pipelined x100 {f['xadd_pipelined_100']:9.0f}"
    )
    if "log_import" in results:
        lines.append(f"log import       {json.dumps(results['log_import'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
