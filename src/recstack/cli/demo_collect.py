"""``make demo``'s collection step: real interactions replayed through the running service's collector, consumed
into the event lake, and prepared from the lake into the same split layout training reads.

site (replayed) --POST /events (batches), GET /pixel.gif--> collector --XADD--> Redis Stream
    --recstack-collect consume--> <out>/lake/events/dt=.../hour=.../part-*.parquet --recstack-data prepare data=lake-->
    prepared split (the same layout as MovieLens: every model, the evaluator and the exporter read it unchanged)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

REPLAY_USERS = 300
BATCH = 100
PIXEL_EVERY = 10  # one replayed event in ten arrives through the tracking pixel instead of the API
SPREAD_DAYS = 30  # replayed times are mapped onto the last 30 days, in their original order


@dataclass(frozen=True)
class CollectSummary:
    users: int
    api_events: int
    pixel_events: int
    seconds: float
    lake_files: int
    lake_rows: int
    prepared: str
    example_user: str = ""  # a replayed user (raw id), for the steps that follow


def demo_overrides(stream: str, lake: Path) -> list[str]:
    """What recstack-serve and recstack-collect consume need so the demo uses a stream and lake of its own."""
    return [f"collector.stream={stream}", f"collector.lake={lake}"]


def replay_frame(interactions: pd.DataFrame, users: int, seed: int, now_s: float) -> pd.DataFrame:
    """The interactions of ``users`` randomly chosen users, their times mapped onto the last SPREAD_DAYS days."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(
        interactions["user_id"].unique(), size=min(users, interactions["user_id"].nunique()), replace=False
    )
    frame = interactions[interactions["user_id"].isin(chosen)].sort_values("timestamp").reset_index(drop=True)
    t = frame["timestamp"].astype("float64")
    span = max(t.max() - t.min(), 1.0)
    frame["replay_ts"] = now_s - 3600 - SPREAD_DAYS * 86400 * (t.max() - t) / span
    return frame


def profile_events(users: pd.DataFrame, replayed: pd.Series, when_s: float) -> list[dict]:
    """One ``profile`` event per replayed user with the age and gender MovieLens knows (the collector bands the age
    at the door: the lake never holds it raw)."""
    known = users.assign(user_id=users["user_id"].astype(str)).set_index("user_id")
    out = []
    for user in replayed.astype(str).unique():
        if user not in known.index:
            continue
        row = known.loc[user]
        event: dict = {
            "event_id": f"demo-profile-{user}",
            "user_id": user,
            "event_type": "profile",
            "timestamp": when_s,
        }
        if pd.notna(row.get("age")):
            event["age_band"] = int(row["age"])
        if isinstance(row.get("gender"), str) and row["gender"]:
            event["gender"] = row["gender"]
        out.append(event)
    return out


def write_items(items: pd.DataFrame, path: Path) -> Path:
    """The catalogue's categories as an item metadata file (``item_id,title,categories``), which segment rules read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "item_id": items["item_id"].astype(str),
            "title": items["title"].astype(str),
            "categories": ["|".join(c) for c in items["categories"]],
        }
    ).to_csv(path, index=False)
    return path


def replay(
    base_url: str, frame: pd.DataFrame, api_key: str | None = None, users: pd.DataFrame | None = None
) -> tuple[int, int]:
    """Consent for every replayed user, their profiles (when ``users`` is given), then their events: batches on
    /events, every PIXEL_EVERY-th by the pixel."""
    api = pixel = 0
    headers = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"  # a site's backend: a collect (here admin) key
    with httpx.Client(base_url=base_url, timeout=30, headers=headers) as http:
        for user in frame["user_id"].astype(str).unique():
            answer = http.post(
                "/consent", json={"user_id": user, "purposes": {"analytics": True, "personalisation": True}}
            )
            answer.raise_for_status()
        if users is not None:
            profiles = profile_events(users, frame["user_id"], float(frame["replay_ts"].min()))
            for start in range(0, len(profiles), BATCH):
                _post(http, profiles[start : start + BATCH])
            api += len(profiles)
        batch: list[dict] = []
        for n, row in enumerate(frame.itertuples(index=False)):
            event = {
                "event_id": f"demo-{row.user_id}-{row.item_id}-{int(row.timestamp)}",
                "user_id": str(row.user_id),
                "item_id": str(row.item_id),
                "event_type": "rating" if 0 <= float(row.value) <= 10 else "view",
                "timestamp": float(row.replay_ts),
            }
            if event["event_type"] == "rating":
                event["value"] = float(row.value)
            if n % PIXEL_EVERY == 0:
                params = {"e": "view", "i": event["item_id"], "u": event["user_id"], "t": str(event["timestamp"])}
                http.get("/pixel.gif", params=params).raise_for_status()
                pixel += 1
                continue
            batch.append(event)
            if len(batch) == BATCH:
                _post(http, batch)
                api += len(batch)
                batch = []
        if batch:
            _post(http, batch)
            api += len(batch)
    return api, pixel


def _post(http: httpx.Client, batch: list[dict]) -> None:
    for _ in range(20):  # a 503 (backlog, Redis busy) says when to retry: nothing is dropped
        answer = http.post("/events", json={"events": batch})
        if answer.status_code != 503:
            answer.raise_for_status()
            return
        time.sleep(float(answer.headers.get("retry-after", "1")))
    answer.raise_for_status()


def run_collection(
    base_url: str,
    interactions: pd.DataFrame,
    out: Path,
    stream: str,
    seed: int = 0,
    api_key: str | None = None,
    users: pd.DataFrame | None = None,
) -> CollectSummary:
    """Replay, consume, prepare from the lake; prints what each step did."""
    import redis

    from recstack.collect.consumer import stream_end, wait_until_stored
    from recstack.config import collect_settings, compose, prepare_from_config
    from recstack.data import lake as lake_layout

    lake = out / "lake"
    settings = collect_settings([o.removeprefix("collector.") for o in demo_overrides(stream, lake)])
    consumer_bin = Path(sys.executable).with_name("recstack-collect")
    argv = [
        str(consumer_bin),
        "consume",
        "consumer=demo",
        *demo_overrides(stream, lake),
        "collector.flush_interval_s=0.5",
    ]
    print(f"  {' '.join(argv)}  (log: {out / 'consume.log'})", flush=True)
    with (out / "consume.log").open("w") as log:
        consumer = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    started = time.perf_counter()
    try:
        frame = replay_frame(interactions, REPLAY_USERS, seed, time.time())
        api, pixel = replay(base_url, frame, api_key, users)
        seconds = time.perf_counter() - started
        print(
            f"  replayed {api + pixel:,} interactions of {frame['user_id'].nunique()} users in {seconds:.1f} s: "
            f"{api:,} through POST /events (batches of {BATCH}), {pixel:,} through GET /pixel.gif",
            flush=True,
        )
        client = redis.Redis.from_url(settings.redis_url)
        last = stream_end(client, settings.names)
        if last is None or not wait_until_stored(client, settings.names, last, timeout_s=120):
            raise RuntimeError(f"the consumer did not store the replay in 120 s; see {out / 'consume.log'}")
    finally:
        os.killpg(consumer.pid, signal.SIGTERM)
        consumer.wait(timeout=30)
    files = lake_layout.parts(lake, "events")
    rows = lake_layout.read_table(lake, "events").num_rows
    print(f"  lake: {rows:,} events in {len(files)} Parquet files under {lake}/events/dt=*/hour=*/", flush=True)
    split = prepare_from_config(
        compose("prepare", ["data=lake", f"data.source.path={lake}", "data.source.window_days=90"])
    )
    print(f"  recstack-data prepare data=lake data.source.path={lake}\n  {split!r}", flush=True)
    busiest = str(frame["user_id"].value_counts().index[0])
    return CollectSummary(frame["user_id"].nunique(), api, pixel, seconds, len(files), rows, repr(split), busiest)


def fresh(lake: Path, stream: str, redis_url: str) -> None:
    """A demo run starts from an empty lake and stream of its own."""
    import redis

    shutil.rmtree(lake, ignore_errors=True)
    client = redis.Redis.from_url(redis_url)
    client.delete(stream)
