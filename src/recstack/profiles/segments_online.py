"""Segments in Redis: the rule registry every process reads, and a batch run published for the API and the follower.

* Registry (``segments_key(names, "rules")``, a hash name -> JSON ``{"rule", "source", "saved_at"}``): the rules of
  ``configs/segments/*.yaml`` (source ``yaml``, synced by ``recstack-segments run`` and ``follow``) and the rules saved
  through ``POST /segments`` (source ``api``). A YAML rule wins over an API rule of the same name. A version counter
  (``segments_key(names, "rules_version")``) changes on every write, so the real-time follower reloads when it does.
* Published run: each segment's members zset is replaced by the run's (built under a temporary key, renamed in one
  step), the users' membership sets get the difference (SADD entered / SREM left), and ``segments_key(names, "meta")``
  holds the run's summary per segment (rule, size, last run, sizes, top items and categories, overlap). Subjects in
  the erasure tombstone set are never published.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from recstack.collect.records import StreamNames, members_key, memberships_key, segments_key, tombstone_key
from recstack.profiles.rules import DEFAULT_HORIZON_H, RuleError, Segment, parse_rule
from recstack.profiles.segments_batch import SegmentRun

CHUNK = 5000


def rules_version(client: redis.Redis, names: StreamNames) -> int:
    value = client.get(segments_key(names, "rules_version"))
    return int(value) if value else 0


def registry(client: redis.Redis, names: StreamNames, horizon_h: int = DEFAULT_HORIZON_H) -> dict[str, Segment]:
    """Every registered rule, parsed (a stored rule that no longer parses is skipped with its error logged)."""
    import logging

    out: dict[str, Segment] = {}
    for raw_name, raw in sorted(client.hgetall(segments_key(names, "rules")).items()):
        name = raw_name.decode()
        entry = json.loads(raw)
        try:
            out[name] = parse_rule(name, entry["rule"], horizon_h, source=entry.get("source", "api"))
        except RuleError as error:
            logging.getLogger(__name__).warning("registered segment %s no longer parses: %s", name, error)
    return out


def save_rule(client: redis.Redis, names: StreamNames, segment: Segment, source: str, overwrite: bool = False) -> bool:
    """Register one rule; False when the name exists and ``overwrite`` is off (nothing changed)."""
    entry = json.dumps(
        {"rule": segment.rule, "source": source, "saved_at": datetime.now(UTC).isoformat(timespec="seconds")}
    )
    key = segments_key(names, "rules")
    written = client.hset(key, segment.name, entry) if overwrite else client.hsetnx(key, segment.name, entry)
    if overwrite or written:
        client.incr(segments_key(names, "rules_version"))
        return True
    return False


def sync_yaml(client: redis.Redis, names: StreamNames, segments: Mapping[str, Segment]) -> None:
    """Put the YAML-declared rules into the registry (they win over API rules of the same name)."""
    key = segments_key(names, "rules")
    current = {k.decode(): json.loads(v) for k, v in client.hgetall(key).items()}
    for name, segment in segments.items():
        known = current.get(name)
        if known is None or known.get("rule") != segment.rule or known.get("source") != "yaml":
            save_rule(client, names, segment, "yaml", overwrite=True)


def _chunks(values: list[str], size: int = CHUNK):
    for start in range(0, len(values), size):
        yield values[start : start + size]


def publish(client: redis.Redis, names: StreamNames, run: SegmentRun) -> dict[str, int]:
    """Replace each segment's members with the run's; returns members published per segment."""
    tombstones = tombstone_key(names)
    by_segment: dict[str, list[str]] = {name: [] for name in run.summary}
    for segment, user in zip(run.membership["segment"].to_pylist(), run.membership["user_id"].to_pylist(), strict=True):
        by_segment.setdefault(segment, []).append(user)
    published: dict[str, int] = {}
    for name, users in by_segment.items():
        erased: set[str] = set()
        for chunk in _chunks(users):
            flags = client.smismember(tombstones, chunk)
            erased.update(u for u, gone in zip(chunk, flags, strict=True) if gone)
        users = [u for u in users if u not in erased]
        key = members_key(names, name)
        staged = f"{key}:next"
        client.delete(staged)
        for chunk in _chunks(users):
            client.zadd(staged, dict.fromkeys(chunk, 0))
        left = (
            [m.decode() for m in client.zdiff([key, staged])]
            if users
            else [m.decode() for m in client.zrange(key, 0, -1)]
        )
        entered = [m.decode() for m in client.zdiff([staged, key])] if users else []
        for chunk in _chunks(left):
            pipe = client.pipeline(transaction=False)
            for user in chunk:
                pipe.srem(memberships_key(names, user), name)
            pipe.execute()
        for chunk in _chunks(entered):
            pipe = client.pipeline(transaction=False)
            for user in chunk:
                pipe.sadd(memberships_key(names, user), name)
            pipe.execute()
        pipe = client.pipeline(transaction=True)
        if users:
            pipe.rename(staged, key)
        else:
            pipe.delete(key, staged)
        meta: dict[str, Any] = dict(run.summary[name])
        meta["size"] = len(users)
        pipe.hset(segments_key(names, "meta"), name, json.dumps(meta))
        pipe.execute()
        published[name] = len(users)
    return published
