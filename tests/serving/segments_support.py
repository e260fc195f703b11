"""Segments as a batch run leaves them, for the serving tests: a small lake of pseudonymised events over the tiny
bundle's items, ``recstack-segments run`` twice (two points of sizes over time) and its Redis publish, plus API keys
of every role and a server with keys on."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import redis
from serving_support import TEST_HMAC_KEY, Server, start_server

from recstack.collect.pseudonymise import Pseudonymiser
from recstack.collect.records import StreamNames, counters_key, profile_key
from recstack.data import lake
from recstack.profiles.rules import HOUR_MS, parse_segments
from recstack.profiles.segments_batch import run_segments
from recstack.profiles.segments_online import publish, sync_yaml
from recstack.serving.api_keys import new_key, write_key_file

PSEUDO = Pseudonymiser(TEST_HMAC_KEY.encode())
RULES = {
    "drama_fans": {"count": {"category": "Drama", "within": "7d"}, "gte": 3},
    "action_fans": {"count": {"category": "Action", "within": "7d"}, "gte": 3},
    "active": {"count": {"within": "30d"}, "gte": 1},
}
DRAMA = ("i2", "i6", "i10")  # the tiny bundle's items i % 4 == 2 are Drama, i % 4 == 0 Action
ACTION = ("i4", "i8")


def names_of(prefix: str) -> StreamNames:
    """The stream names a server started by serving_support.start_server uses (collector.stream=<prefix>collect)."""
    return StreamNames(stream=f"{prefix}collect")


@dataclass(frozen=True)
class Seeded:
    lake: Path
    items: Path
    keys: dict[str, str]
    key_file: Path


def _event(n: int, user: str, kind: str, ts: int, item: str) -> dict:
    return {
        "event_id": f"e{n}",
        "user_id": PSEUDO.user(user),
        "anonymous": False,
        "event_type": kind,
        "received_ts": ts,
        "client_ts": ts,
        "source": "api",
        "item_id": item,
    }


def write_inputs(root: Path) -> Seeded:
    """The lake (carol: 4 drama views, dan: 3 drama + 3 action views, erin: one view) and the items file."""
    now = int(time.time() * 1000)
    rows = []
    plan = [("carol", [*DRAMA, "i14"]), ("dan", [*DRAMA, *ACTION, "i12"]), ("erin", ["i1"])]
    for user, items in plan:
        for j, item in enumerate(items):
            rows.append(_event(len(rows), user, "view", now - 2 * HOUR_MS + j * 60_000, item))
    lake.write_rows(root / "lake", "events", rows)
    genres = ["Action", "Comedy", "Drama", "Horror"]
    items = root / "items.csv"
    pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(48)],
            "title": [f"{genres[i % 4]} movie {i}" for i in range(48)],
            "categories": [genres[i % 4] for i in range(48)],
        }
    ).to_csv(items, index=False)
    made = {role: new_key(role, f"{role}-seg") for role in ("admin", "analyst", "recommend")}
    key_file = root / "api_keys.yaml"
    write_key_file(key_file, [entry for _, entry in made.values()])
    return Seeded(root / "lake", items, {role: token for role, (token, _) in made.items()}, key_file)


def publish_runs(seeded: Seeded, prefix: str, out: Path) -> None:
    """Two batch runs an hour apart (sizes over time), published to Redis as `recstack-segments run` does."""
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    names = names_of(prefix)
    segments = parse_segments(RULES, source="configs/segments/test.yaml")
    sync_yaml(client, names, segments)
    now = int(time.time() * 1000)
    for as_of in (now - HOUR_MS, now):
        run = run_segments(seeded.lake, seeded.items, segments, out, as_of_ms=as_of)
        publish(client, names, run)
    # a profile for carol as recstack-profiles build loads it; counters only for frank (real time, no profile yet)
    client.hset(profile_key(names, PSEUDO.user("carol")), mapping={"n_events_7d": "4", "age_band": "25-34"})
    client.hset(counters_key(names, PSEUDO.user("frank")), mapping={"count:any@1": "1"})
    client.close()


def start(tiny_bundle: Path, seeded: Seeded, prefix: str, log: Path, *extra: str) -> Server:
    return start_server(
        tiny_bundle,
        log,
        redis_url="redis://127.0.0.1:6379/0",
        redis_prefix=prefix,
        overrides=[
            "redis_timeout_s=1.0",
            "auth=true",
            f"api_keys_file={seeded.key_file}",
            f"segments_lake={seeded.lake}",
            f"segments_items_path={seeded.items}",
            *extra,
        ],
    )
