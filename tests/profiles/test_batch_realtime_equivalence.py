"""One event log, replayed both ways: into the lake for ``recstack-segments run`` (DuckDB) and through the Redis
Stream for the real-time follower. At the end both hold exactly the same members of every segment: the shipped
rules (configs/segments/) and rules that exercise every measure, at the log's end and after windows have slid."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from recstack.collect.records import StreamNames, encode_entry, segments_key
from recstack.config import config_dir
from recstack.data import lake
from recstack.profiles.realtime import SegmentFollower, load_categories, realtime_memberships
from recstack.profiles.rules import HOUR_MS, load_segments, parse_segments
from recstack.profiles.segments_batch import run_segments

pytestmark = pytest.mark.redis
URL = "redis://127.0.0.1:6379/0"
DAY = 24 * HOUR_MS
START = 1_780_000_000_000 // HOUR_MS * HOUR_MS - 45 * DAY
GENRES = ["Action", "Drama", "Sci-Fi", "Comedy", "Horror", "Adventure"]
EXTRA_RULES = {
    "dwellers": {"sum": {"event": "dwell", "within": "2d"}, "gte": 90_000},
    "raters_this_week": {"count": {"event": "rating", "within": "7d"}, "gte": 3},
    "mobile_scifi": {"count": {"category": "Sci-Fi", "device": "mobile", "within": "3d"}, "gte": 2},
    "drama_share": {"share": {"category": "Drama", "event": ["view", "click"], "within": "14d"}, "gte": 0.34},
    "stated_comedy": {"count": {"event": "preference", "category": "Comedy", "within": "30d"}, "gte": 1},
    "busy_today": {"sessions": {"within": "1d"}, "gte": 2},
    "not_f_or_active": {"any": [{"attribute": "gender", "ne": "F"}, {"count": {"within": "12h"}, "gte": 1}]},
    "odd_hour_window": {"count": {"event": "click", "within": "5h"}, "gte": 1},
}


def event_log(seed: int = 7, users: int = 120, items: int = 30) -> tuple[list[dict], pd.DataFrame]:
    """Sessions of events per user over 45 days, in time order: every type the rules read, several devices, bots."""
    rng = np.random.default_rng(seed)
    catalogue = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(items)],
            "title": [f"Item {i}" for i in range(items)],
            "categories": ["|".join(rng.choice(GENRES, size=rng.integers(1, 3), replace=False)) for _ in range(items)],
        }
    )
    rows: list[dict] = []
    for u in range(users):
        user = f"u{u:03d}"
        device = ["desktop", "mobile", "tablet", "bot"][u % 4 if u % 9 else 3]
        t = START + int(rng.integers(0, 42 * DAY))
        if u % 3 == 0:
            age = str(rng.choice(["18-24", "25-34", "35-44"]))
            rows.append({"user_id": user, "event_type": "profile", "ts": t, "age_band": age, "gender": "MF"[u % 2]})
        for _ in range(int(rng.integers(1, 12))):  # sessions
            for _ in range(int(rng.integers(1, 9))):  # events in a session, minutes apart
                kind = str(rng.choice(["view", "view", "click", "rating", "dwell", "purchase", "preference"]))
                row: dict = {"user_id": user, "event_type": kind, "ts": t, "device_class": device}
                if kind == "preference":
                    row.update(category=str(rng.choice(GENRES)), value=1.0)
                else:
                    row["item_id"] = f"i{int(rng.zipf(1.5)) % items}"
                if kind == "rating":
                    row["value"] = float(rng.integers(1, 6))
                if kind == "dwell":
                    row["value"] = float(rng.integers(1, 120) * 1000)
                rows.append(row)
                t += int(rng.integers(1, 25)) * 60_000  # within the 30-minute gap, sometimes at its edge
            t += int(rng.choice([31 * 60_000, 3 * HOUR_MS, DAY, 2 * DAY]))
    rows.sort(key=lambda r: (r["ts"], r["user_id"]))
    for n, row in enumerate(rows):
        ts = row.pop("ts")
        row.update(event_id=f"e{n}", anonymous=False, client_ts=ts, received_ts=ts, source="api")
    return rows, catalogue


def as_sets(run) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {name: set() for name in run.summary}
    for segment, user in zip(run.membership["segment"].to_pylist(), run.membership["user_id"].to_pylist(), strict=True):
        out[segment].add(user)
    return out


def test_batch_and_real_time_agree_on_every_segment(tmp_path: Path, names: StreamNames) -> None:
    rows, catalogue = event_log()
    items = tmp_path / "items.csv"
    catalogue.to_csv(items, index=False)
    segments = {**load_segments(config_dir() / "segments"), **parse_segments(EXTRA_RULES)}
    end = max(r["received_ts"] for r in rows)

    # way 1: the lake, as the consumer would have stored it
    lake.write_rows(tmp_path / "lake", "events", rows)
    # way 2: the stream, entry by entry as the collector adds them, applied by the follower while it runs; at each
    # checkpoint the follower has applied what happened until then, sweeps, and is compared with a batch run then
    client = redis.Redis.from_url(URL)
    follower = SegmentFollower(
        URL, names, segments, load_categories(items), consumer="eq", sweep_interval_s=None, block_ms=50
    )
    follower.ensure_group()
    # the sweep a follower runs hourly, here at each checkpoint, from its own connection (a follower is one thread)
    sweeper = SegmentFollower(
        URL, names, segments, load_categories(items), consumer="sweeper", sweep_interval_s=None, block_ms=50
    )
    stop = threading.Event()
    thread = threading.Thread(target=follower.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    times = sorted(r["received_ts"] for r in rows)
    checkpoints = [times[int(len(times) * q)] for q in (0.5, 0.75, 0.9)]
    checkpoints += [end, end + 3 * HOUR_MS + 7 * 60_000, end + 10 * DAY]
    sent = 0
    checked = 0
    nonempty: set[str] = set()
    try:
        for as_of in checkpoints:
            upto = sent
            while upto < len(rows) and rows[upto]["received_ts"] <= as_of:
                upto += 1
            last = None
            for first in range(sent, upto, 25):
                last = client.xadd(names.stream, encode_entry("events", rows[first : min(first + 25, upto)])).decode()
            sent = upto
            if last is not None:
                started = time.monotonic()
                while (client.get(segments_key(names, "applied")) or b"").decode() != last:
                    assert time.monotonic() - started < 120, "the follower did not apply the log in time"
                    stop.wait(0.02)
            sweeper.sweep(as_of)
            realtime = realtime_memberships(client, names)
            batch = as_sets(run_segments(tmp_path / "lake", items, segments, tmp_path / "out", as_of_ms=as_of))
            for name in segments:
                assert realtime.get(name, set()) == batch[name], f"{name} at {as_of}: real time != batch"
                checked += len(batch[name])
                nonempty |= {name} if batch[name] else set()
    finally:
        stop.set()
        thread.join(timeout=30)
        follower.close()
        sweeper.close()
    client.close()
    assert checked > 100, "the log should put many users into segments"
    missing = set(EXTRA_RULES) - nonempty
    assert not missing, f"rules no user ever entered (the log does not exercise them): {sorted(missing)}"
