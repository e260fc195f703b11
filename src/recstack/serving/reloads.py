"""Hot-swap across workers and replicas: a small Redis stream of reload announcements.

``POST /admin/reload`` lands on one worker of one instance. That worker loads and checks the bundle
(recstack.serving.served_bundle), appends ``{arm, ref, digest}`` to this deployment's announcement stream, and swaps.
Every worker (its siblings, and the other instances sharing Redis) reads the stream every ``reload_poll_s`` and, for
an arm whose announced bundle differs from the one it serves, loads and checks it in a thread and swaps too. A worker
that starts (a restart, a respawned worker, a new replica) applies the latest announcement per arm before it reports
ready, so it serves what its siblings serve, not the bundle the command line named.

The stream is per deployment: its key holds a hash of the configured bundles and experiment
(:func:`deployment_key`), so a service started with other bundles does not inherit announcements meant for another.
The stream keeps its last ``MAXLEN`` entries (a history of what was served when, next to the lake's impressions).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recstack.collect.records import StreamNames

MAXLEN = 100


@dataclass(frozen=True)
class Announcement:
    id: str
    arm: str
    ref: str
    digest: str


def deployment_key(names: StreamNames, experiment: str | None, refs: Mapping[str, str]) -> str:
    """The announcement stream of one deployment: the collector's stream name, then a hash of what it was started
    with (experiment name and each arm's configured bundle)."""
    spec = json.dumps({"experiment": experiment, "arms": dict(sorted(refs.items()))}, sort_keys=True)
    return f"{names.stream}:serving:{hashlib.blake2b(spec.encode(), digest_size=6).hexdigest()}:reloads"


def encode(arm: str, ref: str, digest: str) -> dict[str, str]:
    return {"arm": arm, "ref": ref, "digest": digest}


def decode(entries: Any) -> list[Announcement]:
    """Stream entries (``XRANGE`` replies) as announcements, oldest first; malformed ones are skipped."""
    out = []
    for entry_id, fields in entries or ():
        f = {_text(k): _text(v) for k, v in fields.items()}
        if {"arm", "ref", "digest"} <= f.keys():
            out.append(Announcement(_text(entry_id), f["arm"], f["ref"], f["digest"]))
    return out


def latest_per_arm(announcements: list[Announcement]) -> dict[str, Announcement]:
    latest: dict[str, Announcement] = {}
    for a in announcements:
        latest[a.arm] = a
    return latest


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
