"""Profiles and segments benchmark: batch profiles and 20 segments over a synthetic lake of 20M events, the real-time
follower, and ``GET /users/{id}/segments`` under load.

    .venv/bin/python benchmarks/profiles.py [--workdir DIR] [--part batch|build|segments|realtime|api ...] [--events 20000000]
        [--users 200000] [--items 20000] [--repeats 1] [--no-publish] [--threads N] [--memory-limit 3GB]

Targets (issue 13): profiles + 20 segments over 20M events in at most 60 s and 4 GiB with DuckDB; real-time update at
least 10,000 events/s sustained with p99 at most 5 ms per event; ``GET /users/{id}/segments`` p99 at most 5 ms at c=16.

* the lake: benchmarks/synthetic_lake.py writes ``<workdir>/lake`` and ``<workdir>/items.csv`` (reused while its
  spec and key match; ``<workdir>/hmac.key`` is made once, so the service finds ``user-<n>`` by its raw id);
* ``batch``: ``recstack-profiles build segments.run=true``: profiles, quality checks and the 20 segments in one
  process over one load of the lake (the issue's "profiles + 20 segments"; the target's figure when it runs);
* ``build``: ``recstack-profiles build`` as a subprocess (profiles, quality checks, Redis load unless --no-publish);
* ``segments``: ``recstack-segments run`` with the 20 rules of benchmarks/segments_20.yaml (published to Redis
  unless --no-publish);
* ``realtime``: ``realtime_benchmark()`` of benchmarks/profiles_realtime.py (its own stream and Redis keys);
* ``api``: ``recstack-serve`` with an analyst key, segments published for the lake's users first (not timed), then
  wrk at c=16 on ``GET /users/user-<n>/segments`` over members of the segments (serve_load.run_wrk).

Each subprocess is measured for wall time, peak RSS of its process tree (psutil, every 50 ms, the tree listed again
every second; an upper bound, shared pages count once per process), its own maximum RSS and CPU seconds (``wait4``;
the kernel's peak, a check on the polled one), with the machine's load before and after. Every run starts from the
lake as generated (the build's duplicate merges, alias rows, are removed before each run) with a fresh output folder.
Redis keys live under a prefix of the workdir's own and are deleted at the end (--keep-redis keeps them). A part whose
code is missing fails with a message saying what is missing; the other parts still run, and the exit status is 1.
Results: benchmarks/results/profiles-<time>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from invocation import command_line, results_path
from serve_load import STATUS_COUNTER_LUA, find_bundle, free_port, loadavg, run_wrk, stop, tree_cpu_seconds, wait_ready
from synthetic_lake import LakeInfo, LakeSpec, ensure_lake, raw_user_id

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RULES = Path(__file__).resolve().parent / "segments_20.yaml"
PARTS = ("batch", "build", "segments", "realtime", "api")
TARGETS = {
    "batch_seconds": 60.0,
    "batch_peak_rss_gib": 4.0,
    "realtime_events_per_s": 10_000.0,
    "realtime_p99_ms": 5.0,
    "api_p99_ms": 5.0,
    "api_connections": 16,
}


class PartUnavailable(RuntimeError):
    """A part that cannot run here: its code has not landed or a tool is missing (the message says which)."""


# ---- measuring a subprocess -----------------------------------------------------------------------------------------


class _TreeRss:
    """The RSS of a process and its descendants. Listing the descendants scans every process of the machine (about
    2 ms of CPU), so it is refreshed every ``refresh_s``; their RSS is read at every poll (20 us each). Polling at
    50 ms with a full scan each time took about 3.5% of one core from the measured job on a 2-core machine."""

    def __init__(self, pid: int, refresh_s: float = 1.0) -> None:
        self.pid, self.refresh_s = pid, refresh_s
        self.procs: list[psutil.Process] = []
        self.listed = -float("inf")

    def __call__(self) -> int:
        now = time.monotonic()
        if now - self.listed >= self.refresh_s:
            try:
                root = psutil.Process(self.pid)
                self.procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return 0
            self.listed = now
        total = 0
        for proc in self.procs:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total


def measure(argv: Sequence[str], env: Mapping[str, str], log: Path, poll_s: float = 0.05) -> dict[str, Any]:
    """Run ``argv`` to completion: wall seconds, peak tree RSS (polled), the child's own max RSS and CPU (wait4), exit
    status, and the last stdout line parsed as JSON when it is one (the CLIs print a summary line)."""
    out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
    load = loadavg()
    with out_path.open("w") as out, err_path.open("w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), env=dict(env), cwd=REPO, stdout=out, stderr=err)
        peak = 0
        tree_rss = _TreeRss(proc.pid)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, tree_rss())
            time.sleep(poll_s)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: Popen must not wait again
    stdout = out_path.read_text()
    stderr = err_path.read_text()
    lines = stdout.strip().splitlines()
    summary: Any = None
    if lines:
        try:
            summary = json.loads(lines[-1])
        except json.JSONDecodeError:
            seconds = re.search(r" in ([\d.]+) s\b", stdout)  # recstack-profiles: "... events in 6.8 s"
            summary = {"text": stdout[-1500:], **({"seconds": float(seconds.group(1))} if seconds else {})}
    # per-step seconds from the CLIs' progress lines ("[5/6] write profiles.parquet: 0.1 s")
    steps = {name: float(sec) for name, sec in re.findall(r"\[\d+/\d+\] (.+?): ([\d.]+) s$", stderr, re.M)}
    return {
        "argv": [str(a) for a in argv],
        "rc": proc.returncode,
        "wall_s": round(wall, 3),
        "peak_tree_rss_mib": round(peak / 2**20, 1),
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),  # kilobytes on Linux
        "cpu_user_s": round(usage.ru_utime, 2),
        "cpu_sys_s": round(usage.ru_stime, 2),
        "load_before": load,
        "load_after": loadavg(),
        "summary": summary,
        "steps": steps,
        "stderr_tail": stderr[-2000:] if proc.returncode else "",
    }


def _script(name: str) -> Path:
    path = BIN / name
    if not path.is_file():
        raise PartUnavailable(
            f"{path} is missing: the console script has not landed or is not installed "
            f"(`.venv/bin/pip install -e . --no-deps -q` after pyproject changes)"
        )
    return path


def _overrides(defaults: Mapping[str, Any], extra: Sequence[str]) -> list[str]:
    """Hydra overrides: ``defaults`` then ``extra`` (``key=value``), later keys replacing earlier ones."""
    merged = {k: str(v) for k, v in defaults.items()}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--build-arg/--segments-arg {item!r}: expected key=value")
        merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


# ---- the parts ------------------------------------------------------------------------------------------------------


class Bench:
    """What every part shares: the workdir, the lake, the key, the Redis prefix and the command-line options."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = args.workdir.resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        key_file = self.work / "hmac.key"
        if not key_file.is_file():
            key_file.write_text(os.urandom(32).hex())
            key_file.chmod(0o600)
        self.key_file = key_file
        self.key = key_file.read_bytes().strip()
        digest = hashlib.sha256(str(self.work).encode()).hexdigest()[:8]
        self.prefix = f"recstack:bench:profiles:{digest}"
        self.env = {**os.environ, "RECSTACK_HMAC_KEY_FILE": str(key_file), "BENTOML_DO_NOT_TRACK": "True"}
        self.env.pop("RECSTACK_HMAC_KEY", None)
        self.spec = LakeSpec(events=args.events, users=args.users, items=args.items, days=args.days, seed=args.seed)
        self.lake_info: LakeInfo | None = None
        self.rules_dir = self.work / "rules"
        self.rules_dir.mkdir(exist_ok=True)
        shutil.copyfile(RULES, self.rules_dir / RULES.name)
        self.logs = self.work / "logs"
        self.logs.mkdir(exist_ok=True)

    @property
    def lake(self) -> Path:
        return self.work / "lake"

    @property
    def items(self) -> Path:
        return self.work / "items.csv"

    @property
    def as_of(self) -> str:
        return self.spec.end.replace("+00:00", "Z")

    def ensure_lake(self) -> dict[str, Any]:
        if self.lake_info is None:
            print(
                f"lake: {self.spec.events:,} events, {self.spec.users:,} users, {self.spec.items:,} items ...",
                flush=True,
            )
            self.lake_info, reused = ensure_lake(self.work, self.spec, self.key, progress=True)
            print(f"lake: {'reused' if reused else 'generated'} {self.lake_info.rows:,} events in {self.lake} "
                  f"({self.lake_info.seconds:.1f} s to generate)", flush=True)  # fmt: skip
            self.lake_reused = reused
        return {**self.lake_info.as_dict(), "reused": self.lake_reused}

    def pristine(self) -> None:
        """The lake as generated: alias rows a previous build wrote (duplicate merges) are removed."""
        shutil.rmtree(self.lake / "aliases", ignore_errors=True)

    def collector(self) -> dict[str, str]:
        return {"collector.stream": self.prefix, "collector.lake": str(self.lake)}

    def segments_argv(self, out: Path, publish: bool) -> list[str]:
        defaults = {
            **self.collector(),
            "rules": str(self.rules_dir),
            "lake": str(self.lake),
            "items_path": str(self.items),
            "out": str(out),
            "as_of": self.as_of,
            "publish": str(publish).lower(),
            "registry": "false",
            **({"threads": self.args.threads} if self.args.threads else {}),
            **({"memory_limit": self.args.memory_limit} if self.args.memory_limit else {}),
        }
        return [str(_script("recstack-segments")), "run", *_overrides(defaults, self.args.segments_arg)]

    def build_argv(self, out: Path) -> list[str]:
        defaults = {
            **self.collector(),
            "lake": str(self.lake),
            "items_path": str(self.items),
            "out": str(out),
            "as_of": self.as_of,
            "redis.load": str(not self.args.no_publish).lower(),
            **({"threads": self.args.threads} if self.args.threads else {}),
            **({"memory_limit": self.args.memory_limit} if self.args.memory_limit else {}),
        }
        return [str(_script("recstack-profiles")), "build", *_overrides(defaults, self.args.build_arg)]

    def batch_argv(self, out: Path) -> list[str]:
        """The build with ``segments.run=true``: profiles, checks and the 20 segments over one load of the lake."""
        seg = {
            "rules": str(self.rules_dir),
            "out": str(out / "segments"),
            "publish": str(not self.args.no_publish).lower(),
            "registry": "false",
        }
        overrides = ",".join(f"'{k}={v}'" for k, v in seg.items())
        return [*self.build_argv(out), "segments.run=true", f"segments.overrides=[{overrides}]"]

    def timed(self, name: str, argv_for: Callable[[Path], list[str]]) -> dict[str, Any]:
        self.ensure_lake()
        runs = []
        for repeat in range(self.args.repeats):
            out = self.work / name
            shutil.rmtree(out, ignore_errors=True)
            self.pristine()
            row = measure(argv_for(out), self.env, self.logs / f"{name}-{repeat}.log")
            row["repeat"] = repeat
            print(
                json.dumps({name: {k: v for k, v in row.items() if k not in ("argv", "summary", "steps")}}), flush=True
            )
            runs.append(row)
            if row["rc"] != 0:
                raise RuntimeError(
                    f"{name}: exit status {row['rc']}; stderr ends with:\n{row['stderr_tail'][-1500:]}\n"
                    f"(full logs: {self.logs}/{name}-{repeat}.err)"
                )
        self.pristine()
        return {"runs": runs, **_medians(runs)}

    def build(self) -> dict[str, Any]:
        return self.timed("build", self.build_argv)

    def batch(self) -> dict[str, Any]:
        return self.timed("batch", self.batch_argv)

    def segments(self) -> dict[str, Any]:
        result = self.timed("segments", lambda out: self.segments_argv(out, not self.args.no_publish))
        sizes = (result["runs"][-1].get("summary") or {}).get("sizes")
        if sizes is not None:
            result["sizes"] = sizes
            result["n_segments"] = len(sizes)
        return result

    def realtime(self) -> dict[str, Any]:
        try:
            from profiles_realtime import realtime_benchmark
        except ImportError as exc:
            raise PartUnavailable(
                f"benchmarks/profiles_realtime.py cannot be imported ({exc}): the real-time follower's benchmark "
                "or the code it measures has not landed"
            ) from None
        a = self.args
        return realtime_benchmark(n_events=a.rt_events, rate=a.rt_rate, seconds=a.rt_seconds, segments=20)

    def api(self) -> dict[str, Any]:
        try:
            from recstack.serving import segments_api  # noqa: F401
        except ImportError as exc:
            raise PartUnavailable(
                f"recstack.serving.segments_api cannot be imported ({exc}): the endpoint has not landed"
            ) from None
        if shutil.which("wrk") is None:
            raise PartUnavailable("wrk is not installed (apt-get install wrk): the API load test needs it")
        self.ensure_lake()
        return api_load(self)


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {
        "wall_s_median": statistics.median(r["wall_s"] for r in runs),
        "peak_tree_rss_mib_max": max(r["peak_tree_rss_mib"] for r in runs),
    }
    inner = [r["summary"].get("seconds") for r in runs if isinstance(r.get("summary"), dict)]
    if inner and all(isinstance(s, (int, float)) for s in inner):
        out["reported_seconds_median"] = statistics.median(inner)  # the CLI's own timing (its summary line)
    return out


# ---- the API load test ----------------------------------------------------------------------------------------------


def _members(bench: Bench, out: Path, n: int) -> list[str]:
    """Raw ids of up to ``n`` users who are in at least one segment (what the endpoint answers 200 for)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from recstack.collect.pseudonymise import Pseudonymiser

    members = set(pc.unique(pq.read_table(out / "membership.parquet", columns=["user_id"])["user_id"]).to_pylist())
    pseudo = Pseudonymiser(bench.key)
    order = list(range(bench.spec.users))
    random.Random(0).shuffle(order)
    found = []
    for u in order:
        if pseudo.user(raw_user_id(u)) in members:
            found.append(raw_user_id(u))
            if len(found) == n:
                break
    if not found:
        raise RuntimeError(f"no user of the lake is in any segment ({out / 'membership.parquet'})")
    return found


def _wrk_get_script(path: Path, paths: list[str], token: str) -> Path:
    quoted = ",\n".join(f'  "{p}"' for p in paths)
    path.write_text(
        textwrap.dedent(
            """\
            local paths = {
            %s
            }
            local headers = {["Authorization"] = "Bearer %s"}
            local n = 0
            request = function()
              n = n + 1
              return wrk.format("GET", paths[(n %% #paths) + 1], headers)
            end
            """
        )
        % (quoted, token)
        + STATUS_COUNTER_LUA
    )
    return path


def api_load(bench: Bench) -> dict[str, Any]:
    """Publish the segments (untimed), start recstack-serve, then wrk at c=``--connections`` on the endpoint."""
    import httpx

    from recstack.serving.api_keys import new_key, write_key_file

    a = bench.args
    out = bench.work / "segments-api"
    shutil.rmtree(out, ignore_errors=True)
    bench.pristine()
    setup = measure(bench.segments_argv(out, publish=True), bench.env, bench.logs / "api-setup.log")
    if setup["rc"] != 0:
        raise RuntimeError(f"publishing the segments for the API test failed:\n{setup['stderr_tail'][-1500:]}")
    users = _members(bench, out, a.api_users)
    token, entry = new_key("analyst", "bench-profiles")
    keys = bench.work / "api_keys.yaml"
    write_key_file(keys, [entry])
    bundle = find_bundle(a.bundle, bench.work)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [
        str(_script("recstack-serve")),
        f"bundle={bundle}",
        f"port={port}",
        *(f"{k}={v}" for k, v in bench.collector().items()),
        f"api_keys_file={keys}",
        "rate_limit_per_key=100000000/second",  # far above the load: its cost is measured, not a 429
        "rate_limit_per_ip=100000000/second",
        f"rate_limit_prefix={bench.prefix}:rl",
        f"redis_prefix={bench.prefix}:recent:",
        *a.serve_arg,
    ]
    rows = []
    with (bench.logs / "serve.out").open("w") as server_log:
        server = subprocess.Popen(argv, env=bench.env, cwd=REPO, stdout=server_log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"{base}/readyz", server)
        probe = httpx.get(f"{base}/users/{users[0]}/segments", headers={"authorization": f"Bearer {token}"}, timeout=10)
        if probe.status_code != 200 or "segments" not in probe.text:
            raise PartUnavailable(
                f"GET /users/{{id}}/segments answered {probe.status_code} {probe.text[:300]!r} for a member: the "
                "endpoint has not landed or is not mounted (serve.yaml segments_api)"
            )
        script = _wrk_get_script(bench.work / "segments.lua", [f"/users/{u}/segments" for u in users], token)
        run_wrk(f"{base}/users/{users[0]}/segments", script, 4, 3)  # warm-up
        for repeat in range(a.repeats):
            load = loadavg()
            cpu = tree_cpu_seconds(server.pid)
            row = run_wrk(f"{base}/users/{users[0]}/segments", script, a.connections, a.seconds)
            row.update(
                repeat=repeat,
                load_before=load,
                server_cpu_ms_per_request=1e3 * (tree_cpu_seconds(server.pid) - cpu) / max(row["requests"], 1),
            )
            print(json.dumps({"api": row}), flush=True)
            rows.append(row)
    finally:
        stop(server)
    return {
        "users": len(users),
        "bundle": str(bundle),
        "setup_publish_s": setup["wall_s"],
        "runs": rows,
        "p99_ms_median": statistics.median(r["p99_ms"] for r in rows),
        "rps_median": statistics.median(r["rps"] for r in rows),
        "errors": sum(r["errors"] for r in rows),
    }


# ---- main -----------------------------------------------------------------------------------------------------------


def _cleanup_redis(prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(os.environ.get("RECSTACK_REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=10_000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        return len(keys)
    except redis.ConnectionError:
        return 0
    finally:
        client.close()


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "available_gib": round(psutil.virtual_memory().available / 2**30, 1),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def verdicts(parts: Mapping[str, Any]) -> dict[str, Any]:
    """The issue's targets against what was measured (only for parts that ran)."""
    out: dict[str, Any] = {}
    build, segs, batch = parts.get("build"), parts.get("segments"), parts.get("batch")
    if isinstance(batch, dict) and "wall_s_median" in batch:  # one process, one load: the figure the target means
        total, rss = batch["wall_s_median"], batch["peak_tree_rss_mib_max"] / 1024
        out["batch_seconds"] = {"value": round(total, 1), "target": TARGETS["batch_seconds"], "ok": total <= 60}
        out["batch_peak_rss_gib"] = {"value": round(rss, 2), "target": TARGETS["batch_peak_rss_gib"], "ok": rss <= 4}
    elif isinstance(build, dict) and isinstance(segs, dict) and "wall_s_median" in build and "wall_s_median" in segs:
        total = build["wall_s_median"] + segs["wall_s_median"]
        rss = max(build["peak_tree_rss_mib_max"], segs["peak_tree_rss_mib_max"]) / 1024
        out["batch_seconds"] = {"value": round(total, 1), "target": TARGETS["batch_seconds"], "ok": total <= 60}
        out["batch_peak_rss_gib"] = {"value": round(rss, 2), "target": TARGETS["batch_peak_rss_gib"], "ok": rss <= 4}
    sustained = (parts.get("realtime") or {}).get("sustained") if isinstance(parts.get("realtime"), dict) else None
    if isinstance(sustained, dict) and "p99_ms" in sustained:
        rate = sustained.get("offered_events_per_s", 0)
        out["realtime_events_per_s"] = {
            "value": rate,
            "kept_up": sustained.get("kept_up"),
            "target": TARGETS["realtime_events_per_s"],
            "ok": bool(sustained.get("kept_up")) and rate >= TARGETS["realtime_events_per_s"],
        }
        p99 = sustained["p99_ms"]
        out["realtime_p99_ms"] = {"value": p99, "target": TARGETS["realtime_p99_ms"], "ok": p99 <= 5.0}
    api = parts.get("api")
    if isinstance(api, dict) and "p99_ms_median" in api:
        out["api_p99_ms"] = {"value": api["p99_ms_median"], "target": 5.0, "ok": api["p99_ms_median"] <= 5.0}
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "recstack-profiles-bench")
    parser.add_argument("--part", action="append", choices=PARTS, help="run only these parts (repeatable)")
    parser.add_argument("--events", type=int, default=LakeSpec.events)
    parser.add_argument("--users", type=int, default=LakeSpec.users)
    parser.add_argument("--items", type=int, default=LakeSpec.items)
    parser.add_argument("--days", type=int, default=LakeSpec.days)
    parser.add_argument("--seed", type=int, default=LakeSpec.seed)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-publish", action="store_true", help="batch parts write files only (no Redis load)")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads of both batch parts")
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory limit of both batch parts, e.g. 3GB")
    parser.add_argument("--build-arg", action="append", default=[], help="extra recstack-profiles override key=value")
    parser.add_argument("--segments-arg", action="append", default=[], help="extra recstack-segments override")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra recstack-serve override (api part)")
    parser.add_argument("--rt-events", type=int, default=200_000)
    parser.add_argument("--rt-rate", type=float, default=10_000.0)
    parser.add_argument("--rt-seconds", type=float, default=30.0)
    parser.add_argument("--bundle", type=Path, default=None, help="api part: the bundle recstack-serve loads")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=20, help="api part: wrk duration per run")
    parser.add_argument("--api-users", type=int, default=5000, help="api part: distinct members requested")
    parser.add_argument("--keep-redis", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    bench = Bench(args)
    parts = list(dict.fromkeys(args.part or PARTS))
    results: dict[str, Any] = {
        "command": command_line(),
        "started": started.isoformat(),
        "machine_before": machine(),
        "workdir": str(bench.work),
        "spec": asdict(bench.spec),
        "targets": TARGETS,
        "parts": {},
        "errors": {},
    }
    failed = False
    try:
        if any(p in ("batch", "build", "segments", "api") for p in parts):
            results["lake"] = bench.ensure_lake()
        for part in parts:
            print(f"== {part}", flush=True)
            try:
                results["parts"][part] = getattr(bench, part)()
            except PartUnavailable as exc:
                failed = True
                results["errors"][part] = f"not available: {exc}"
                print(f"{part}: NOT AVAILABLE: {exc}", file=sys.stderr, flush=True)
            except Exception as exc:  # one part failing must not lose the others' figures
                failed = True
                results["errors"][part] = f"{type(exc).__name__}: {exc}"
                print(f"{part}: FAILED: {exc}\n{traceback.format_exc()}", file=sys.stderr, flush=True)
    finally:
        if not args.keep_redis:
            results["redis_keys_deleted"] = _cleanup_redis(bench.prefix)
        results["machine_after"] = machine()
        results["verdicts"] = verdicts(results["parts"])
        path = results_path("profiles", started)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1, default=str) + "\n")
        print(json.dumps({"verdicts": results["verdicts"], "errors": results["errors"]}, indent=1))
        print(f"results: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
