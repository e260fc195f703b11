"""Real-time segments benchmark: the follower (recstack.profiles.realtime) in its own process against synthetic events
XADDed to a stream of the benchmark's own, with 20 rules.

    .venv/bin/python benchmarks/profiles_realtime.py [--events 200000] [--users 20000] [--rate 10000] [--seconds 30]
        [--batch N (the follower's events per read and commit at most; default: the follower's, 500)]

Two runs:

* ``sustained``: events added at ``--rate`` events/s for ``--seconds`` (entries of ``--per-entry`` events, as a
  site's batched POST /events writes them) while the follower runs. Per-event latency is what a user of the segments
  API waits for: from the entry's XADD (the entry id's milliseconds, Redis's clock) to the follower's EXEC that
  committed the event's counters and membership change returning (the same host's clock), over every event. The
  run passes when the follower kept up (applied every event, lag bounded) and the p99 is at most 5 ms.
* ``drain``: ``--events`` added first, then the follower started and timed until it has applied them all: its
  ceiling in events/s.

Redis, the producer and the follower share the machine's cores, so every figure includes the others' share; the
machine load before and after, and the CPU seconds of the follower and of Redis, are recorded with the results
(benchmarks/results/profiles_realtime-<time>.json). ``realtime_benchmark()`` is what benchmarks/profiles.py imports.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recstack.collect.records import StreamNames, encode_entry
from recstack.profiles.realtime import SegmentFollower, follower_gc, realtime_memberships
from recstack.profiles.rules import parse_segments

URL = os.environ.get("RECSTACK_REDIS_URL", "redis://127.0.0.1:6379/0")
GENRES = ("Action", "Adventure", "Comedy", "Drama", "Sci-Fi", "Thriller", "Romance", "Horror", "Animation", "Crime")
EVENT_MIX = (("view", 0.55), ("click", 0.2), ("dwell", 0.1), ("rating", 0.06), ("add_to_cart", 0.05),
             ("purchase", 0.02), ("search", 0.015), ("profile", 0.005))  # fmt: skip
DEVICES = (("desktop", 0.5), ("mobile", 0.4), ("tablet", 0.08), ("bot", 0.02))


def rules(n: int = 20) -> dict[str, Any]:
    """``n`` segment rules of every kind (counts by type, category and device, sums, sessions, shares, attributes,
    all / any / not): the 20 of the issue's benchmark."""
    base: dict[str, Any] = {
        "engaged": {"sessions": {"within": "30d"}, "gte": 4},
        "new_users": {"all": [{"count": {"within": "7d"}, "gte": 1}, {"sessions": {"within": "90d"}, "lte": 2}]},
        "lapsed": {"all": [{"count": {"within": "90d"}, "gte": 1}, {"count": {"within": "30d"}, "eq": 0}]},
        "heavy_raters": {"count": {"event": "rating", "within": "30d"}, "gte": 20},
        "buyers": {"count": {"event": "purchase", "within": "30d"}, "gte": 1},
        "browsers_not_buyers": {
            "all": [
                {"count": {"event": ["view", "click"], "within": "30d"}, "gte": 10},
                {"count": {"event": "purchase", "within": "90d"}, "eq": 0},
            ]
        },
        "mobile_first": {"count": {"device": "mobile", "within": "30d"}, "gte": 5},
        "long_dwellers": {"sum": {"event": "dwell", "within": "7d"}, "gte": 300_000},
        "young": {"attribute": "age_band", "in": ["18-24", "25-34"]},
        "cart_abandoners": {
            "all": [
                {"count": {"event": "add_to_cart", "within": "7d"}, "gte": 1},
                {"not": {"count": {"event": "purchase", "within": "7d"}, "gte": 1}},
            ]
        },
    }
    for genre in GENRES:
        key = genre.lower().replace("-", "")
        base[f"{key}_fans"] = {"count": {"event": "view", "category": genre, "within": "7d"}, "gte": 5}
        base[f"{key}_share"] = {
            "any": [
                {"share": {"category": genre, "within": "30d"}, "gte": 0.4},
                {
                    "all": [
                        {"attribute": "country", "eq": "FR"},
                        {"count": {"category": genre, "within": "1d"}, "gte": 3},
                    ]
                },
            ]
        }
    return dict(list(base.items())[:n])


def catalogue(items: int = 2000, seed: int = 0) -> dict[str, frozenset[str]]:
    rng = random.Random(seed)
    return {f"i{i}": frozenset(rng.sample(GENRES, rng.randint(1, 3))) for i in range(items)}


class EventMaker:
    """Synthetic lake rows at the current time (what the collector's intake writes)."""

    def __init__(self, users: int, items: int, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.users = [f"u{i:07d}" for i in range(users)]
        self.items = [f"i{i}" for i in range(items)]
        self.types = [t for t, _ in EVENT_MIX]
        self.type_w = [w for _, w in EVENT_MIX]
        self.devices = [d for d, _ in DEVICES]
        self.device_w = [w for _, w in DEVICES]

    def rows(self, n: int, now_ms: int) -> list[dict]:
        rng = self.rng
        out = []
        types = rng.choices(self.types, self.type_w, k=n)
        devices = rng.choices(self.devices, self.device_w, k=n)
        for event_type, device in zip(types, devices, strict=True):
            row = {
                "event_id": uuid.uuid4().hex,
                "user_id": rng.choice(self.users),
                "anonymous": False,
                "item_id": None if event_type in ("search", "profile") else rng.choice(self.items),
                "event_type": event_type,
                "value": rng.uniform(1000, 120_000) if event_type == "dwell" else (
                    float(rng.randint(1, 5)) if event_type == "rating" else None),
                "client_ts": now_ms - rng.randint(0, 2000),
                "received_ts": now_ms,
                "source": "api",
                "device_class": device,
            }  # fmt: skip
            if event_type == "profile":
                row["age_band"] = rng.choice(["18-24", "25-34", "35-44", "45-54"])
                row["country"] = rng.choice(["FR", "DE", "GB", "US"])
            out.append(row)
        return out


def _follower_main(
    names: StreamNames, n_rules: int, items: int, target: int, ready, out, timeout_s: float, batch: int | None
) -> None:
    follower = SegmentFollower(
        URL,
        names,
        parse_segments(rules(n_rules)),
        catalogue(items),
        consumer="bench",
        sweep_interval_s=60.0,
        **({} if batch is None else {"batch": batch}),
    )
    follower.ensure_group()
    ready.set()
    started = time.monotonic()
    cpu0 = time.process_time()
    deadline = started + timeout_s
    first = None
    with follower_gc():  # as `recstack-segments follow` runs it
        while time.monotonic() < deadline:
            follower.step()
            if first is None and follower.stats.entries:
                first = time.monotonic()
            if follower.stats.events + follower.stats.bots + follower.stats.duplicates >= target:
                break
    follower._flush_ack()
    ended = time.monotonic()
    stats = follower.stats
    out.put(
        {
            **stats.summary(),
            "seconds_from_first_entry": round(ended - (first or ended), 3),
            "follower_cpu_s": round(time.process_time() - cpu0, 2),
        }
    )
    follower.close()


def _redis_cpu(client: redis.Redis) -> float:
    pid = int(client.info("server")["process_id"])
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _start(names: StreamNames, n_rules: int, items: int, target: int, timeout_s: float, batch: int | None):
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_follower_main, args=(names, n_rules, items, target, ready, out, timeout_s, batch))
    proc.start()
    if not ready.wait(120):
        proc.kill()
        raise RuntimeError("the follower process did not start")
    return proc, out


def _result(proc, out, timeout_s: float) -> dict:
    result = out.get(timeout=timeout_s + 120)
    proc.join(30)
    return result


def realtime_benchmark(
    n_events: int = 200_000,
    users: int = 20_000,
    segments: int = 20,
    rate: float = 10_000.0,
    seconds: float = 30.0,
    per_entry: int = 10,
    items: int = 2000,
    batch: int | None = None,
) -> dict[str, Any]:
    """Both runs (module docstring) on a fresh stream; returns their figures."""
    client = redis.Redis.from_url(URL)
    results: dict[str, Any] = {
        "segments": segments,
        "users": users,
        "per_entry": per_entry,
        "batch": batch,  # events per read and commit at most (None: the follower's default)
        "load_before": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }
    maker = EventMaker(users, items)
    # -- sustained -------------------------------------------------------------------------------------------------
    names = StreamNames(stream=f"bench:{uuid.uuid4().hex[:8]}:collect")
    total = int(rate * seconds) // per_entry * per_entry
    try:
        proc, out = _start(names, segments, items, total, seconds + 120, batch)
        redis_cpu0 = _redis_cpu(client)
        tick = 0.005
        per_tick = max(1, round(rate * tick / per_entry))  # entries per tick
        tick = per_tick * per_entry / rate
        sent = 0
        started = time.monotonic()
        producer_cpu0 = time.process_time()
        k = 0
        while sent < total:
            due = started + k * tick
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now_ms = int(time.time() * 1000)
            pipe = client.pipeline(transaction=False)
            for _ in range(per_tick):
                if sent >= total:
                    break
                pipe.xadd(names.stream, encode_entry("events", maker.rows(per_entry, now_ms)))
                sent += per_entry
            pipe.execute()
            k += 1
        produce_s = time.monotonic() - started
        producer_cpu = time.process_time() - producer_cpu0
        follower = _result(proc, out, seconds + 120)
        redis_cpu = _redis_cpu(client) - redis_cpu0
        wall = time.monotonic() - started
        applied = follower["events"] + follower["bots"] + follower["duplicates"]
        results["sustained"] = {
            "target_events_per_s": rate,
            "offered_events_per_s": round(sent / produce_s),
            "events": sent,
            "applied": applied,
            "kept_up": applied == sent and wall - produce_s < 2.0,
            "drain_after_last_xadd_s": round(wall - produce_s, 3),
            "p50_ms": follower["p50_ms"],
            "p99_ms": follower["p99_ms"],
            "p99_9_ms": follower["p99_9_ms"],
            "max_ms": follower["max_ms"],
            # the follower's own share: a batch's read -> commit time, weighted by its events
            "apply_p50_ms": follower["apply_p50_ms"],
            "apply_p99_ms": follower["apply_p99_ms"],
            "batches": follower["batches"],
            "events_per_batch": round(applied / max(follower["batches"], 1), 1),
            "entered": follower["entered"],
            "left": follower["left"],
            "follower_cpu_s": follower["follower_cpu_s"],
            "follower_cpu_us_per_event": round(1e6 * follower["follower_cpu_s"] / max(applied, 1), 1),
            "redis_cpu_s": round(redis_cpu, 2),
            "producer_cpu_s": round(producer_cpu, 2),
            "members": sum(len(v) for v in realtime_memberships(client, names).values()),
        }
    finally:
        _cleanup(client, names)
    # -- drain -----------------------------------------------------------------------------------------------------
    names = StreamNames(stream=f"bench:{uuid.uuid4().hex[:8]}:collect")
    try:
        if n_events <= 0:
            raise _Skip
        client.xgroup_create(names.stream, "segments", id="0", mkstream=True)
        now_ms = int(time.time() * 1000)
        pipe = client.pipeline(transaction=False)
        for start in range(0, n_events, per_entry):
            pipe.xadd(names.stream, encode_entry("events", maker.rows(min(per_entry, n_events - start), now_ms)))
            if len(pipe) >= 1000:
                pipe.execute()
        pipe.execute()
        redis_cpu0 = _redis_cpu(client)
        proc, out = _start(names, segments, items, n_events, 600, batch)
        follower = _result(proc, out, 600)
        applied = follower["events"] + follower["bots"] + follower["duplicates"]
        results["drain"] = {
            "events": n_events,
            "applied": applied,
            "seconds": follower["seconds_from_first_entry"],
            "events_per_s": round(applied / max(follower["seconds_from_first_entry"], 1e-9)),
            "follower_cpu_s": follower["follower_cpu_s"],
            "follower_cpu_us_per_event": round(1e6 * follower["follower_cpu_s"] / max(applied, 1), 1),
            "redis_cpu_s": round(_redis_cpu(client) - redis_cpu0, 2),
            "batches": follower["batches"],
            "members": sum(len(v) for v in realtime_memberships(client, names).values()),
        }
    except _Skip:
        pass
    finally:
        _cleanup(client, names)
    results["load_after"] = os.getloadavg()[0]
    client.close()
    return results


class _Skip(Exception):
    """The drain run is not asked for (``n_events=0``)."""


def _cleanup(client: redis.Redis, names: StreamNames) -> None:
    keys = list(client.scan_iter(match=names.stream + "*", count=10_000))
    for start in range(0, len(keys), 10_000):
        client.delete(*keys[start : start + 10_000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events", type=int, default=200_000, help="drain run: events in the backlog (0: no drain run)"
    )
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--rate", type=float, default=10_000.0, help="sustained run: events/s offered")
    parser.add_argument("--seconds", type=float, default=30.0, help="sustained run: how long")
    parser.add_argument("--per-entry", type=int, default=10, help="events per stream entry (a client's batch)")
    parser.add_argument("--batch", type=int, default=None, help="the follower's events per read and commit at most")
    args = parser.parse_args()
    started = datetime.now(UTC)
    result = realtime_benchmark(
        args.events, args.users, args.segments, args.rate, args.seconds, args.per_entry, batch=args.batch
    )
    try:
        from invocation import command_line, results_path

        result = {"command": command_line(), "started": started.isoformat(), **result}
        path = results_path("profiles_realtime", started)
        path.write_text(json.dumps(result, indent=1) + "\n")
        result["results_file"] = str(path)
    except ImportError:
        pass
    print(json.dumps(result))


if __name__ == "__main__":
    main()
