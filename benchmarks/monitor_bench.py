"""``recstack-monitor`` over 10M impressions (issue 15's target: at most 60 s, with the join to events).

    .venv/bin/python benchmarks/monitor_bench.py [--workdir DIR] [--impressions 10000000] [--users 200000]
        [--items 20000] [--days 14] [--list 10] [--repeats 3] [--threads N] [--generate-only]

The lake (``<workdir>/lake``, reused while ``lake.json`` matches the spec) is written by :func:`synthesise` with the
lake's own writer (recstack.data.lake.write_part: zstd Parquet, hour partitions), one part per generated day and hour:

* impressions: ``--impressions`` lists of ``--list`` distinct items over ``--days`` days, users uniform, items drawn
  by a Zipf law over popularity; an experiment ``bench`` with arms ``a`` (bundle ``mf@bench``) and ``b``
  (``lightgcn@bench``) by user parity; descending scores (arm b's a little higher and flatter); 32-hex request ids;
* clicks: 8% of arm a's lists and 9% of arm b's get a click, at a position drawn with a 1/rank bias, 1-30 min
  after the impression (70% carry the request_id, the rest rely on the window rule); 25% of clicks add to cart, 30%
  of those buy;
* later interactions: 5% of lists see one of their items rated 1-20 h later, and organic ratings (25% of the
  impression count) and views (20%) of Zipf items at uniform times give every user a history beyond the lists.

Each run is ``recstack-monitor lake=<lake> out=<fresh dir> day=<last day> days=<days>`` in a subprocess, measured for
wall time, peak RSS of its process tree and its own max RSS (benchmarks/profiles.py's ``measure``). Results:
benchmarks/results/monitor-<time>.json.
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from invocation import command_line, results_path

from recstack.data.lake import conform, partition_dir, write_part

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MINUTE_MS = 60_000
FORMAT = 1  # bump when the generator's output changes
TARGET_SECONDS = 60.0
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class MonitorLakeSpec:
    impressions: int = 10_000_000
    users: int = 200_000
    items: int = 20_000
    days: int = 14
    list_len: int = 10
    seed: int = 0
    end: str = "2026-12-01"  # the last day (UTC) holding impressions
    format: int = FORMAT

    @property
    def last_day(self) -> date:
        return date.fromisoformat(self.end)

    @property
    def first_day(self) -> date:
        return self.last_day - timedelta(days=self.days - 1)


def _strings(prefix: str, n: int) -> pa.Array:
    return pa.array([f"{prefix}{i}" for i in range(n)], pa.string())


def _hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    """``n`` random 32-hex-character ids without a Python loop (the shape of the service's uuid4 hex ids)."""
    raw = binascii.hexlify(rng.bytes(16 * n))
    offsets = np.arange(0, 32 * n + 1, 32, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(raw))


def _zipf_cdf(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return np.cumsum(weights) / weights.sum()


def _write_hours(lake: Path, table: str, frame: dict[str, Any], ts_column: str, name: str) -> int:
    """Write a day's rows (a dict of arrays) as one part per hour of ``ts_column`` (epoch ms)."""
    hours = np.asarray(frame[ts_column]) // HOUR_MS
    order = np.argsort(hours, kind="stable")
    hours = hours[order]
    cuts = np.flatnonzero(np.diff(hours)) + 1
    written = 0
    table_all = pa.table(
        {k: (v.take(pa.array(order)) if isinstance(v, pa.Array) else v[order]) for k, v in frame.items()}
    )
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(hours)]):
        part = conform(table_all.slice(int(lo), int(hi - lo)), table)
        when = datetime.fromtimestamp(int(hours[lo]) * 3600, UTC)
        write_part(part, partition_dir(lake, table, when), name)
        written += 1
    return written


def synthesise(lake: Path, spec: MonitorLakeSpec) -> dict[str, Any]:
    """Write the lake (module docstring); returns counts. Deterministic in the spec."""
    started = time.perf_counter()
    if lake.exists():
        shutil.rmtree(lake)
    lake.mkdir(parents=True)
    rng = np.random.default_rng(spec.seed)
    user_ids = _strings("user-", spec.users)
    item_ids = _strings("item-", spec.items)
    popularity = rng.permutation(spec.items)  # rank -> item index
    cdf = {"a": _zipf_cdf(spec.items, 1.1), "b": _zipf_cdf(spec.items, 1.0)}
    stride = 997  # coprime with the catalogue size used here, so a list's items are distinct
    per_day = spec.impressions // spec.days
    counts = {"impressions": 0, "events": 0, "files": 0}
    for d in range(spec.days):
        n = per_day + (spec.impressions - per_day * spec.days if d == spec.days - 1 else 0)
        day_ms = (spec.first_day - date(1970, 1, 1)).days * DAY_MS + d * DAY_MS
        ts = np.sort(day_ms + rng.integers(0, DAY_MS, n))
        users = rng.integers(0, spec.users, n)
        arm_b = users % 2 == 1
        ranks = np.where(
            arm_b,
            np.searchsorted(cdf["b"], rng.random(n)),
            np.searchsorted(cdf["a"], rng.random(n)),
        )
        slots = (ranks[:, None] + stride * np.arange(spec.list_len)) % spec.items
        items = popularity[slots]  # (n, L) item indices
        base = rng.normal(2.0, 0.5, n) + 0.3 * arm_b
        scores = (base[:, None] - np.where(arm_b, 0.15, 0.2)[:, None] * np.arange(spec.list_len)).astype(np.float32)
        scores += rng.normal(0, 0.02, scores.shape).astype(np.float32)
        scores = -np.sort(-scores, axis=1)
        flat_items = item_ids.take(pa.array(items.ravel()))
        offsets = pa.array(np.arange(0, n * spec.list_len + 1, spec.list_len, dtype=np.int32))
        request_ids = _hex_ids(rng, n)
        impressions = {
            "request_id": request_ids,
            "user_id": user_ids.take(pa.array(users)),
            "anonymous": np.zeros(n, bool),
            "items": pa.ListArray.from_arrays(offsets, flat_items),
            "scores": pa.ListArray.from_arrays(offsets, pa.array(scores.ravel())),
            "stage": pa.array(np.full(n, "rerank", object), pa.string()),
            "user_source": pa.array(np.full(n, "trained", object), pa.string()),
            "personalised": np.ones(n, bool),
            "bundle": pa.array(np.where(arm_b, "lightgcn@bench", "mf@bench").astype(object), pa.string()),
            "experiment": pa.array(np.full(n, "bench", object), pa.string()),
            "arm": pa.array(np.where(arm_b, "b", "a").astype(object), pa.string()),
            "received_ts": ts,
        }
        counts["files"] += _write_hours(lake, "impressions", impressions, "received_ts", f"gen{d:02d}")
        counts["impressions"] += n

        # events that follow lists: clicks, carts, purchases, later ratings of a shown item
        bias = 1.0 / np.arange(1, spec.list_len + 1)
        bias /= bias.sum()
        clicked = np.flatnonzero(rng.random(n) < np.where(arm_b, 0.09, 0.08))
        click_pos = rng.choice(spec.list_len, size=clicked.size, p=bias)
        click_ts = ts[clicked] + rng.integers(MINUTE_MS, 30 * MINUTE_MS, clicked.size)
        carts = clicked[rng.random(clicked.size) < 0.25]
        cart_sel = np.isin(clicked, carts)
        buys_sel = cart_sel & (rng.random(clicked.size) < 0.30)
        rated = np.flatnonzero(rng.random(n) < 0.05)
        rated_pos = rng.choice(spec.list_len, size=rated.size, p=bias)
        parts_imp = [clicked, clicked[cart_sel], clicked[buys_sel], rated]
        parts_pos = [click_pos, click_pos[cart_sel], click_pos[buys_sel], rated_pos]
        parts_ts = [
            click_ts,
            click_ts[cart_sel] + 2 * MINUTE_MS,
            click_ts[buys_sel] + 5 * MINUTE_MS,
            ts[rated] + rng.integers(HOUR_MS, 20 * HOUR_MS, rated.size),
        ]
        parts_type = ["click", "add_to_cart", "purchase", "rating"]
        imp_idx = np.concatenate(parts_imp)
        follow_ts = np.concatenate(parts_ts)
        follow_items = items[imp_idx, np.concatenate(parts_pos)]
        follow_type = np.concatenate([np.full(p.size, t, object) for p, t in zip(parts_imp, parts_type)])
        carries = np.concatenate(
            [
                rng.random(parts_imp[0].size) < 0.7,
                *(rng.random(p.size) < 0.7 for p in parts_imp[1:3]),
                np.zeros(rated.size, bool),
            ]
        )
        follow_rid = request_ids.take(pa.array(imp_idx))
        follow_rid = pa.array(
            np.where(carries, np.asarray(follow_rid.to_numpy(zero_copy_only=False), object), None), pa.string()
        )
        # organic behaviour: ratings and views of Zipf items by random users at random times of the day
        n_org = int(0.45 * n)
        org_users = rng.integers(0, spec.users, n_org)
        org_items = popularity[np.searchsorted(cdf["a"], rng.random(n_org))]
        org_ts = day_ms + rng.integers(0, DAY_MS, n_org)
        org_type = np.where(rng.random(n_org) < 0.55, "rating", "view").astype(object)
        all_users = np.concatenate([users[imp_idx], org_users])
        m = all_users.size
        ev_ts = np.concatenate([follow_ts, org_ts])
        events = {
            "event_id": _hex_ids(rng, m),
            "user_id": user_ids.take(pa.array(all_users)),
            "anonymous": np.zeros(m, bool),
            "item_id": item_ids.take(pa.array(np.concatenate([follow_items, org_items]))),
            "event_type": pa.array(np.concatenate([follow_type, org_type]), pa.string()),
            "value": np.ones(m),
            "client_ts": ev_ts - rng.integers(50, 2000, m),
            "received_ts": ev_ts,
            "source": pa.array(np.full(m, "api", object), pa.string()),
            "request_id": pa.concat_arrays([follow_rid, pa.nulls(n_org, pa.string())]),
        }
        counts["files"] += _write_hours(lake, "events", events, "received_ts", f"gen{d:02d}")
        counts["events"] += m
        print(f"  day {d + 1}/{spec.days}: {n:,} impressions, {m:,} events", flush=True)
    counts["seconds"] = round(time.perf_counter() - started, 1)
    (lake / "lake.json").write_text(json.dumps({"spec": asdict(spec), "counts": counts}, indent=1))
    return counts


def ensure_lake(lake: Path, spec: MonitorLakeSpec) -> dict[str, Any]:
    manifest = lake / "lake.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        if data.get("spec") == asdict(spec):
            return {**data["counts"], "reused": True}
    return {**synthesise(lake, spec), "reused": False}


def machine() -> dict[str, Any]:
    import psutil

    memory = psutil.virtual_memory()
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(memory.total / 2**30, 1),
        "available_gib": round(memory.available / 2**30, 1),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recstack-monitor-bench"))
    parser.add_argument("--impressions", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--list", type=int, default=10, dest="list_len")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="extra recstack-monitor override key=value")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from profiles import measure  # the same subprocess measurement as the profiles benchmark

    args = parse_args(argv)
    started = datetime.now(UTC)
    spec = MonitorLakeSpec(args.impressions, args.users, args.items, args.days, args.list_len, args.seed)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    lake = work / "lake"
    print(f"lake: {lake}", flush=True)
    lake_info = ensure_lake(lake, spec)
    print(json.dumps({"lake": lake_info}), flush=True)
    results: dict[str, Any] = {
        "command": command_line(),
        "started": started.isoformat(),
        "machine_before": machine(),
        "spec": asdict(spec),
        "lake": lake_info,
        "target_seconds": TARGET_SECONDS,
        "runs": [],
    }
    if args.generate_only:
        return 0
    script = BIN / "recstack-monitor"
    if not script.is_file():
        raise SystemExit(f"{script} is missing: `.venv/bin/pip install -e . --no-deps -q` after the pyproject change")
    env = {**os.environ}
    for repeat in range(args.repeats):
        out = work / f"out-{repeat}"
        if out.exists():
            shutil.rmtree(out)
        argv = [
            str(script),
            f"lake={lake}",
            f"out={out}",
            f"day={spec.last_day.isoformat()}",
            f"days={spec.days}",
            f"catalogue_size={spec.items}",
            *([f"threads={args.threads}"] if args.threads else []),
            *args.set,
        ]
        row = measure(argv, env, work / f"run-{repeat}.log")
        row["repeat"] = repeat
        summary_file = out / "summary.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            row["seconds_by_step"] = summary.get("seconds")
            row["loaded"] = summary.get("loaded")
        row.pop("summary", None)
        results["runs"].append(row)
        print(
            json.dumps({k: row[k] for k in ("repeat", "rc", "wall_s", "peak_tree_rss_mib", "max_rss_mib")}), flush=True
        )
    walls = [r["wall_s"] for r in results["runs"] if r["rc"] in (0, 3)]
    results["wall_s"] = {
        "min": min(walls, default=None),
        "median": statistics.median(walls) if walls else None,
        "max": max(walls, default=None),
    }
    results["peak_tree_rss_mib_max"] = max((r["peak_tree_rss_mib"] for r in results["runs"]), default=None)
    results["within_target"] = bool(walls) and max(walls) <= TARGET_SECONDS
    results["machine_after"] = machine()
    path = results_path("monitor", started)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(json.dumps({"wall_s": results["wall_s"], "within_target": results["within_target"]}))
    print(f"results: {path}")
    return 0 if results["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
