"""Soak with faults: mixed traffic against a real ``recstack-serve`` while its Redis is restarted twice and paused once.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--concurrency 16] [--bundle outputs/demo/bundle]

What it does, all on loopback (127.0.0.1 only):

* starts its own ``redis-server`` on a free port (no persistence), never the shared one on 6379;
* starts ``recstack-serve`` on the bundle with ``redis_url`` pointing at that Redis, waits for ``/readyz``;
* warms up (``--warmup-s``), then records each worker's RSS (workers found in the server's process tree);
* sends ``--minutes`` of closed-loop traffic from ``--concurrency`` connections: ``/recommend`` (known and unknown
  users), ``/events`` and ``/similar_items``, recording per request its send time, latency, status and ``degraded``;
* meanwhile kills Redis (SIGKILL) and starts it again after ``--down-s``, twice, and pauses it once with
  ``CLIENT PAUSE <--pause-ms> ALL``;
* stops everything by itself and writes ``benchmarks/results/soak-<UTC date-time>.json`` plus a summary.

Verdicts (the issue's soak targets): zero 5xx; degraded answers only while Redis is away (a request that overlaps an
outage, widened by ``--grace-s`` after Redis is back); recovery within 1 s of Redis's return, measured two ways: the
first non-degraded answer sent after the return, and the end of degraded answers (the last degraded answer sent after
the return; with several workers each has its own circuit breaker, so this is when the whole service is back); worker
RSS at the end at most 10% above the RSS after warm-up.

Without ``--bundle`` it uses ``outputs/demo/bundle`` (what ``make demo`` writes) when present, else builds the small
SVD bundle of ``benchmarks/serve_load.py`` (needs ``RECSTACK_DATA_HOME``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from invocation import command_line, results_path
from serve_load import find_bundle

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # the only host this script ever sends to
RECOVERY_TARGET_S = 1.0
RSS_GROWTH_TARGET = 0.10
# Only these endpoints touch Redis; /similar_items never degrades.
REDIS_ENDPOINTS = ("/recommend", "/events")
UNSTORED = 299  # recorded for an event refused with 503 + Retry-After while Redis is away (not counted as a 5xx)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# -- Redis under our control -----------------------------------------------------------------------------------------


class RedisChild:
    """One redis-server child on a private port, with no persistence; killed and restarted by the fault schedule."""

    def __init__(self, port: int, workdir: Path) -> None:
        import redis

        self.port, self.workdir = port, workdir
        self.process: subprocess.Popen | None = None
        self.log = (workdir / "redis.log").open("ab")
        self.client = redis.Redis(host=HOST, port=port, socket_timeout=0.2, socket_connect_timeout=0.2)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", HOST,
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", str(self.workdir),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_up(self, timeout: float = 30.0, poll_s: float = 0.01) -> float:
        """Block until PING answers; return that moment (monotonic). Polls every ``poll_s``: the error on 'back'."""
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}; see {self.workdir / 'redis.log'}"
                )
            try:
                if self.client.ping():
                    return time.monotonic()
            except redis.RedisError:
                pass
            time.sleep(poll_s)
        raise RuntimeError(f"redis-server on port {self.port} not answering after {timeout} s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # a crash, not a clean shutdown
            self.process.wait()

    def pause(self, ms: int) -> float:
        """``CLIENT PAUSE ms ALL``, then block on a PING until the pause ends; return that moment (monotonic)."""
        import redis

        self.client.execute_command("CLIENT", "PAUSE", str(ms), "ALL")
        waiter = redis.Redis(host=HOST, port=self.port, socket_timeout=ms / 1000 + 10)
        waiter.ping()  # paused too: answers when the pause is over
        back = time.monotonic()
        waiter.close()
        return back

    def close(self) -> None:
        self.kill()
        self.client.close()
        self.log.close()


# -- the server's process tree ---------------------------------------------------------------------------------------


def worker_processes(root_pid: int) -> list:  # list[psutil.Process]
    """The BentoML worker processes under ``recstack-serve`` (which execs ``bentoml serve``)."""
    import psutil

    found = []
    try:
        children = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []  # the server is gone
    for proc in children:
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "_bentoml_impl.worker" in cmd or "bentoml_impl/worker" in cmd:
            found.append(proc)
    return found


def rss_by_pid(root_pid: int) -> dict[int, int]:
    import psutil

    out = {}
    for proc in worker_processes(root_pid):
        try:
            out[proc.pid] = proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return out


def tree_rss(root_pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(root_pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in tree:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def wait_ready(port: int, process: subprocess.Popen, timeout: float) -> dict:
    """Wait until ``/readyz`` says ready with the online store available; fail early if the server exits."""
    import httpx

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"recstack-serve exited with {process.returncode} before it was ready")
        try:
            answer = httpx.get(f"http://{HOST}:{port}/readyz", timeout=2)
            last = f"{answer.status_code} {answer.text[:200]}"
            if answer.status_code == 200 and answer.json().get("status") == "ready":
                return answer.json()
        except httpx.HTTPError as error:
            last = repr(error)
        time.sleep(0.3)
    raise RuntimeError(f"recstack-serve on port {port} not ready after {timeout} s (last answer: {last})")


def stop_tree(process: subprocess.Popen, timeout: float = 15.0) -> float:
    """SIGTERM the server; return how long the whole tree took to go (SIGKILL to what is left after ``timeout``)."""
    import psutil

    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for proc in alive:
        proc.kill()
    process.wait()
    return time.monotonic() - start


# -- traffic ---------------------------------------------------------------------------------------------------------


@dataclass
class Records:
    """One row per request, as parallel lists (cheap to append from 16 tasks)."""

    endpoint: list[str] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)  # monotonic
    latency: list[float] = field(default_factory=list)  # seconds
    status: list[int] = field(default_factory=list)  # 0: no HTTP answer (timeout, connection error)
    degraded: list[bool] = field(default_factory=list)
    error: list[str] = field(default_factory=list)


def make_request(rng: random.Random, users: list[str], items: list[str]) -> tuple[str, dict]:
    """Mixed traffic: 50% /recommend (80% known users, 20% unknown ones that /events has given recent activity),
    30% /events, 20% /similar_items."""
    draw = rng.random()
    cold = f"soak-cold-{rng.randrange(500)}"
    if draw < 0.5:
        user = rng.choice(users) if rng.random() < 0.8 else cold
        return "/recommend", {"user_id": user, "k": 10}
    if draw < 0.8:
        user = rng.choice(users) if rng.random() < 0.5 else cold
        return "/events", {"user_id": user, "item_id": rng.choice(items), "event_type": "click"}
    return "/similar_items", {"item_id": rng.choice(items), "k": 10}


class Connection:
    """One keep-alive HTTP/1.1 connection to the server, spoken by hand over asyncio streams.

    httpx.AsyncClient cost about 5 ms of CPU per request here, as much as the server itself on 2 shared cores, so the
    load generator would have measured mostly itself. This costs well under a tenth of that. It speaks only what the
    soak needs: POST with a JSON body, answers with Content-Length or chunked bodies.
    """

    def __init__(self, port: int, timeout_s: float) -> None:
        self.port, self.timeout_s = port, timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        try:
            return await asyncio.wait_for(self._answer(self.reader), self.timeout_s)
        except BaseException:
            self.close()  # the connection's state is unknown now: start afresh on the next request
            raise

    @staticmethod
    async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if b":" in line:
                key, value = line.split(b":", 1)
                headers[key.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16):
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")
            return status, b"".join(chunks)
        return status, await reader.readexactly(int(headers.get(b"content-length", b"0")))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def client_loop(
    port: int, seed: int, users: list[str], items: list[str], until: float, budget: list[int], records: Records | None
) -> None:
    rng = random.Random(seed)
    connection = Connection(port, timeout_s=5.0)
    try:
        while time.monotonic() < until and budget[0] > 0:
            budget[0] -= 1
            path, body = make_request(rng, users, items)
            payload = json.dumps(body).encode()
            sent = time.monotonic()
            status, degraded, error = 0, False, ""
            try:
                status, answer = await connection.post(path, payload)
                if status == 200:
                    degraded = bool(json.loads(answer).get("degraded", False))
                elif status == 503 and path == "/events":
                    # The collector cannot store an event without Redis: it refuses it (503 + Retry-After, the
                    # client retries) rather than drop it. That is its degraded answer, not a server error.
                    degraded = True
                    status = UNSTORED
                elif status >= 500:
                    error = answer[:300].decode(errors="replace")
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            done = time.monotonic()
            if records is not None:
                records.endpoint.append(path)
                records.sent.append(sent)
                records.latency.append(done - sent)
                records.status.append(status)
                records.degraded.append(degraded)
                records.error.append(error)
    finally:
        connection.close()


async def drive(port: int, concurrency: int, seconds: float, budget: list[int], users, items, records, seed: int):
    """``concurrency`` closed-loop clients until ``seconds`` pass or ``budget[0]`` requests are spent (setting it to 0
    stops them all)."""
    until = time.monotonic() + seconds
    await asyncio.gather(
        *(client_loop(port, seed * 1000 + i, users, items, until, budget, records) for i in range(concurrency))
    )


# -- faults ----------------------------------------------------------------------------------------------------------


@dataclass
class Outage:
    kind: str  # "restart" or "pause"
    start: float  # monotonic: just before the kill / the CLIENT PAUSE
    back: float = float("nan")  # monotonic: first PING answered afterwards


def run_faults(
    redis: RedisChild, plan: list[tuple[float, str]], t0: float, args, outages: list[Outage], stop: threading.Event
):
    """The fault schedule, in its own thread so its timestamps do not wait on the load generator's event loop."""
    try:
        for at, kind in plan:
            if stop.wait(max(0.0, t0 + at - time.monotonic())):
                return
            outage = Outage(kind, time.monotonic())
            outages.append(outage)
            if kind == "restart":
                redis.kill()
                if stop.wait(args.down_s):
                    redis.start()
                    return
                redis.start()
                outage.back = redis.wait_up(timeout=30)
            else:
                outage.back = redis.pause(args.pause_ms)
            print(
                f"[soak] t={outage.start - t0:7.2f}s Redis {kind}: away {outage.back - outage.start:.2f} s", flush=True
            )
    except Exception as error:
        outages.append(Outage(f"fault schedule failed: {error!r}", time.monotonic()))


# -- analysis --------------------------------------------------------------------------------------------------------


def percentiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    ms = values * 1e3
    return {f"p{p}_ms": round(float(np.percentile(ms, p)), 3) for p in (50, 90, 99, 99.9)} | {
        "max_ms": round(float(ms.max()), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def analyse(records: Records, outages: list[Outage], t0: float, grace_s: float) -> dict:
    endpoint = np.array(records.endpoint)
    sent = np.array(records.sent) - t0
    latency = np.array(records.latency)
    done = sent + latency
    status = np.array(records.status)
    degraded = np.array(records.degraded)
    redis_path = np.isin(endpoint, REDIS_ENDPOINTS)

    windows = [(o.start - t0, o.back - t0) for o in outages if o.kind in ("restart", "pause")]
    explained = np.zeros(len(sent), bool)
    for start, back in windows:
        explained |= (done >= start) & (sent <= back + grace_s)
    unexplained = degraded & ~explained

    recoveries = []
    for outage, (start, back) in zip([o for o in outages if o.kind in ("restart", "pause")], windows, strict=True):
        after = redis_path & (sent >= back) & (status >= 200) & (status < 300) & (status != UNSTORED)
        nxt = [s for s, _ in windows if s > back]
        if nxt:  # only answers before the next outage belong to this recovery
            after &= done < nxt[0]
        first_ok = np.flatnonzero(after & ~degraded)
        still = np.flatnonzero(after & degraded)
        first_s = float(done[first_ok].min() - back) if len(first_ok) else None
        all_s = float(done[still].max() - back) if len(still) else 0.0
        recoveries.append(
            {
                "kind": outage.kind,
                "away_from_s": round(start, 3),
                "back_at_s": round(back, 3),
                "away_s": round(back - start, 3),
                "degraded_answers_during": int((degraded & (done >= start) & (sent <= back)).sum()),
                "first_non_degraded_after_return_s": None if first_s is None else round(first_s, 3),
                "last_degraded_after_return_s": round(all_s, 3),
                "degraded_answers_sent_after_return": len(still),
            }
        )

    by_endpoint = {}
    for name in sorted(set(records.endpoint)):
        sel = endpoint == name
        codes, counts = np.unique(status[sel], return_counts=True)
        by_endpoint[name] = {
            "requests": int(sel.sum()),
            "status": {str(int(c)): int(n) for c, n in zip(codes, counts, strict=True)},
            "degraded": int((degraded & sel).sum()),
            "latency": percentiles(latency[sel & (status > 0)]),
        }
    errors5xx = np.flatnonzero(status >= 500)
    transport = np.flatnonzero(status == 0)
    span = float(done.max() - sent.min()) if len(sent) else 0.0
    # Per-second timeline: requests, 5xx, no-answer, degraded.
    seconds = np.floor(sent).astype(int)
    timeline = []
    for s in range(int(seconds.max()) + 1 if len(seconds) else 0):
        sel = seconds == s
        timeline.append(
            [
                s,
                int(sel.sum()),
                int((sel & (status >= 500)).sum()),
                int((sel & (status == 0)).sum()),
                int((sel & degraded).sum()),
            ]
        )
    first_fault = min((start for start, _ in windows), default=float("inf"))
    return {
        "requests": len(sent),
        "duration_s": round(span, 2),
        "requests_per_s": round(len(sent) / span, 1) if span else 0.0,
        "status_5xx": len(errors5xx),
        "no_answer": len(transport),
        "status_4xx": int(((status >= 400) & (status < 500)).sum()),
        "degraded_answers": int(degraded.sum()),
        # Before any fault, a degraded answer can only be a Redis call over its timeout (e.g. a CPU-starved worker).
        "degraded_before_first_fault": int((degraded & (done < first_fault)).sum()),
        "degraded_outside_outages": int(unexplained.sum()),
        "degraded_outside_outages_at_s": [round(float(x), 3) for x in sent[unexplained][:50]],
        "first_5xx": [
            {
                "t_s": round(float(sent[i]), 3),
                "endpoint": records.endpoint[i],
                "status": int(status[i]),
                "body": records.error[i],
            }
            for i in errors5xx[:20]
        ],
        "first_no_answer": [
            {"t_s": round(float(sent[i]), 3), "endpoint": records.endpoint[i], "error": records.error[i]}
            for i in transport[:20]
        ],
        "latency_all": percentiles(latency[status > 0]),
        "by_endpoint": by_endpoint,
        "recoveries": recoveries,
        "timeline_columns": ["second", "requests", "5xx", "no_answer", "degraded"],
        "timeline": timeline,
    }


def verdicts(summary: dict, rss_start: dict[int, int], rss_end: dict[int, int]) -> dict:
    growth = {
        str(pid): round(rss_end[pid] / rss_start[pid] - 1, 4) for pid in rss_start if pid in rss_end and rss_start[pid]
    }
    rec = summary["recoveries"]
    firsts = [r["first_non_degraded_after_return_s"] for r in rec]
    lasts = [r["last_degraded_after_return_s"] for r in rec]
    return {
        "zero_5xx": summary["status_5xx"] == 0,
        "every_request_answered": summary["no_answer"] == 0,
        "degraded_only_while_redis_away": summary["degraded_outside_outages"] == 0,
        "recovery_first_answer_within_1s": bool(rec) and all(f is not None and f <= RECOVERY_TARGET_S for f in firsts),
        # vacuous without a single good answer after the return (e.g. the server died): not a pass
        "recovery_all_workers_within_1s": bool(rec)
        and all(f is not None and x <= RECOVERY_TARGET_S for f, x in zip(firsts, lasts, strict=True)),
        "same_workers_start_to_end": set(rss_start) == set(rss_end),
        "worker_rss_growth": growth,
        "worker_rss_growth_within_10pct": bool(growth)
        and set(rss_start) == set(rss_end)
        and all(g <= RSS_GROWTH_TARGET for g in growth.values()),
    }


# -- main ------------------------------------------------------------------------------------------------------------


def bundle_ids(path: Path) -> tuple[list[str], list[str]]:
    from recstack.bundle.reader import Bundle

    bundle = Bundle.load(path, verify=False)
    return list(bundle.user_index), list(bundle.item_index)


def fault_plan(seconds: float) -> list[tuple[float, str]]:
    """Two restarts and one pause, spread over the run, each followed by a stretch of normal traffic."""
    return [(0.2 * seconds, "restart"), (0.5 * seconds, "pause"), (0.75 * seconds, "restart")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="measured traffic, after the warm-up")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--bundle", type=Path, default=None, help="default: outputs/demo/bundle, else a small SVD bundle")
    ap.add_argument("--workers", type=int, default=None, help="recstack-serve workers (default: configs/serve.yaml)")
    ap.add_argument("--warmup-s", type=float, default=20.0, help="traffic before the RSS baseline is taken")
    ap.add_argument("--down-s", type=float, default=3.0, help="how long Redis stays dead on each restart")
    ap.add_argument("--pause-ms", type=int, default=3000, help="CLIENT PAUSE length")
    ap.add_argument("--grace-s", type=float, default=RECOVERY_TARGET_S, help="degraded answers allowed after a return")
    ap.add_argument("--max-requests", type=int, default=1_500_000, help="hard bound on requests sent")
    ap.add_argument("--ready-timeout-s", type=float, default=180.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/soak-<UTC time>.json")
    args = ap.parse_args()
    for tool in ("redis-server", "recstack-serve"):
        if shutil.which(tool, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}") is None:
            sys.exit(f"{tool} not found: install Redis (apt-get install redis-server) and the package (make install)")

    command = command_line()
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    out = args.out or results_path("soak", started)
    seconds = args.minutes * 60
    work = Path(tempfile.mkdtemp(prefix="recstack-soak-"))
    redis = RedisChild(free_port(), work)
    server: subprocess.Popen | None = None
    server_log = None
    stop = threading.Event()
    try:
        bundle = find_bundle(args.bundle, work).resolve()
        users, items = bundle_ids(bundle)
        redis.start()
        redis.wait_up()
        port = free_port()
        redis_url = f"redis://{HOST}:{redis.port}/0"
        argv = [
            str(Path(sys.executable).with_name("recstack-serve")),
            f"bundle={bundle}",
            f"host={HOST}",
            f"port={port}",
            f"redis_url={redis_url}",
            "redis_prefix=soak:",
            "collector.stream=soak:collect",
            # Redis faults are what is measured: keys, rate limits and consent are off (their own tests cover them)
            "auth=false",
            "rate_limit=false",
            "collector.consent_required=false",
            "consent_for_personalisation=false",
        ] + ([f"workers={args.workers}"] if args.workers else [])
        env = {**os.environ, "RECSTACK_REDIS_URL": redis_url}
        env.setdefault("RECSTACK_HMAC_KEY", os.urandom(32).hex())
        server_log = (work / "server.log").open("ab")
        server = subprocess.Popen(argv, cwd=REPO, env=env, stdout=server_log, stderr=subprocess.STDOUT)
        ready = wait_ready(port, server, args.ready_timeout_s)
        print(
            f"[soak] server (pid {server.pid}) ready on {HOST}:{port}, Redis on {redis.port}; warming up "
            f"{args.warmup_s:.0f} s",
            flush=True,
        )

        asyncio.run(
            drive(port, args.concurrency, args.warmup_s, [args.max_requests], users, items, None, args.seed + 1)
        )
        workers_start = worker_processes(server.pid)
        rss_start = rss_by_pid(server.pid)
        tree_start = tree_rss(server.pid)
        print(
            f"[soak] workers {sorted(rss_start)} RSS MiB {[round(v / 2**20) for v in rss_start.values()]}", flush=True
        )

        records, outages = Records(), []
        cpu0 = time.process_time()
        t0 = time.monotonic()
        faults = threading.Thread(
            target=run_faults, args=(redis, fault_plan(seconds), t0, args, outages, stop), daemon=True
        )
        faults.start()
        rss_samples: list[list] = []

        budget = [args.max_requests]
        server_exited: list[float] = []

        async def watch() -> None:
            """Worker RSS every 10 s; and if the server dies, stop the clients rather than spin on refused
            connections."""
            next_sample = time.monotonic()
            while time.monotonic() < t0 + seconds:
                if server.poll() is not None:
                    server_exited.append(round(time.monotonic() - t0, 2))
                    budget[0] = 0
                    return
                if time.monotonic() >= next_sample:
                    rss_samples.append(
                        [round(time.monotonic() - t0, 1), {str(p): r for p, r in rss_by_pid(server.pid).items()}]
                    )
                    next_sample += 10
                await asyncio.sleep(0.5)

        async def measured() -> None:
            watcher = asyncio.create_task(watch())
            await drive(port, args.concurrency, seconds, budget, users, items, records, args.seed)
            watcher.cancel()

        asyncio.run(measured())
        load_cpu = time.process_time() - cpu0
        stop.set()
        faults.join(timeout=60)
        rss_end = rss_by_pid(server.pid)
        tree_end = tree_rss(server.pid)
        summary = analyse(records, outages, t0, args.grace_s)
        server_pid = server.pid
        stop_s = stop_tree(server)
        server = None
        result = {
            "command": command,
            "started_utc": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
            "load_average_before_after": [load_before, os.getloadavg()],
            "bundle": str(bundle),
            "server_argv": argv,
            "server_pid": server_pid,
            "readyz": ready,
            "settings": {
                "minutes": args.minutes,
                "concurrency": args.concurrency,
                "warmup_s": args.warmup_s,
                "down_s": args.down_s,
                "pause_ms": args.pause_ms,
                "grace_s": args.grace_s,
                "mix": "50% /recommend (80% known users), 30% /events, 20% /similar_items",
                "fault_plan_s": fault_plan(seconds),
            },
            "workers": [p.pid for p in workers_start],
            "worker_rss_start_bytes": {str(k): v for k, v in rss_start.items()},
            "worker_rss_end_bytes": {str(k): v for k, v in rss_end.items()},
            "server_tree_rss_start_end_bytes": [tree_start, tree_end],
            "worker_rss_samples": rss_samples,
            "outages": [
                {"kind": o.kind, "start_s": round(o.start - t0, 3), "back_s": round(o.back - t0, 3)} for o in outages
            ],
            "load_generator_cpu_s": round(load_cpu, 1),
            "server_exited_at_s": server_exited[0] if server_exited else None,
            "server_stop_s": round(stop_s, 2),
            "summary": summary,
            "server_log_tail": (work / "server.log").read_text(errors="replace").splitlines()[-40:],
            "verdicts": {"server_stayed_up": not server_exited, **verdicts(summary, rss_start, rss_end)},
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print_summary(result, out)
    finally:
        stop.set()
        if server is not None:
            stop_tree(server)
        redis.close()
        if server_log is not None:
            server_log.close()
        shutil.rmtree(work, ignore_errors=True)


def print_summary(result: dict, out: Path) -> None:
    s, v = result["summary"], result["verdicts"]
    mib = 2**20
    print(f"\ncommand: {result['command']}")
    print(f"bundle: {result['bundle']}; workers: {result['workers']}; {result['machine']}")
    print(
        f"requests: {s['requests']:,} in {s['duration_s']:.0f} s ({s['requests_per_s']:,.0f}/s); 5xx: {s['status_5xx']}; "
        f"no answer: {s['no_answer']}; 4xx: {s['status_4xx']}; degraded: {s['degraded_answers']:,} "
        f"(outside outages + {result['settings']['grace_s']} s grace: {s['degraded_outside_outages']}, of which before the "
        f"first fault: {s['degraded_before_first_fault']})"
    )
    print(f"latency (all answered): {s['latency_all']}")
    for name, e in s["by_endpoint"].items():
        print(f"  {name}: {e['requests']:,} requests, status {e['status']}, degraded {e['degraded']:,}, {e['latency']}")
    for r in s["recoveries"]:
        print(
            f"  Redis {r['kind']} at {r['away_from_s']:.1f} s, away {r['away_s']:.2f} s: first non-degraded answer "
            f"{r['first_non_degraded_after_return_s']} s after return, last degraded answer "
            f"{r['last_degraded_after_return_s']} s after return ({r['degraded_answers_sent_after_return']} sent after)"
        )
    for pid, start in result["worker_rss_start_bytes"].items():
        end = result["worker_rss_end_bytes"].get(pid)
        print(f"  worker {pid}: RSS {start / mib:.0f} MiB -> {'gone' if end is None else f'{end / mib:.0f} MiB'}")
    print(f"load generator CPU: {result['load_generator_cpu_s']} s; server stopped in {result['server_stop_s']} s")
    print("verdicts: " + ", ".join(f"{k}={val}" for k, val in v.items() if isinstance(val, bool)))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
