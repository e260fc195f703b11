"""The Redis Stream entry format between the collector (producer) and ``recstack-collect consume`` (consumer).

One accepted request is one stream entry (``XADD`` once per request, not once per event: a batch of 500 events costs
Redis one command). An entry has two fields:

* ``t``: the lake table its rows belong to (``events``, ``aliases``, ``audit``; recstack.data.lake.TABLES);
* ``r``: a JSON array of rows, each a dict of that table's columns with times as epoch milliseconds. Rows are already
  minimised (pseudonymised ids, no raw User-Agent, IP truncated or absent) before they are encoded: nothing personal
  that the lake must not hold ever reaches Redis either.

The consumer adds ``stream_id`` (the entry id) to every row it stores, which is what makes recovery after a crash
exact (recstack.collect.consumer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from recstack.data.lake import TABLES, LakeError

TABLE_FIELD = b"t"
ROWS_FIELD = b"r"


@dataclass(frozen=True)
class StreamNames:
    """Where the collector writes and the consumer reads: one stream, one consumer group."""

    stream: str = "recstack:collect"
    group: str = "lake"


def encode_entry(table: str, rows: list[dict]) -> dict[bytes, bytes]:
    """The fields of one ``XADD``."""
    if table not in TABLES:
        raise LakeError(f"unknown lake table {table!r}; the lake holds {sorted(TABLES)}")
    return {TABLE_FIELD: table.encode(), ROWS_FIELD: json.dumps(rows, separators=(",", ":")).encode()}


def decode_entry(fields: dict[bytes, bytes]) -> tuple[str, list[dict]]:
    """``(table, rows)`` of one stream entry as read by ``XREADGROUP``; a malformed entry raises LakeError."""
    try:
        table = fields[TABLE_FIELD].decode()
        rows = json.loads(fields[ROWS_FIELD])
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LakeError(f"malformed stream entry ({type(error).__name__}: {error})") from None
    if table not in TABLES or not isinstance(rows, list):
        raise LakeError(f"malformed stream entry: table {table!r}, rows of type {type(rows).__name__}")
    return table, rows


def tombstone_key(names: StreamNames) -> str:
    """The Redis set of erased subjects' pseudonyms. ``DELETE /users/{id}`` adds to it; the collector refuses new
    events for a member, the consumer drops rows of a member still in flight in the stream, and every server worker
    answers a member with popularity only."""
    return f"{names.stream}:erased"


# The online keys of profiles and segments (recstack.profiles writes them). Declared here, beside the tombstone set,
# because erasure (recstack.collect.producer) must delete every one of a subject's keys and sits below profiles.
def profile_key(names: StreamNames, subject: str) -> str:
    """The subject's profile hash (``recstack-profiles build`` loads it; ``GET /users/{id}/profile`` reads it)."""
    return f"{names.stream}:profile:{subject}"


def counters_key(names: StreamNames, subject: str) -> str:
    """The subject's real-time segment counters: a hash of ``<feature id>@<hour bucket>`` -> value, plus state."""
    return f"{names.stream}:counters:{subject}"


def visitors_key(names: StreamNames, subject: str) -> str:
    """The set of visitors whose counters the segment follower moved into the subject's (their hashes keep only a
    pointer to it): erasing the subject deletes those pointers too."""
    return f"{names.stream}:visitors:{subject}"


def memberships_key(names: StreamNames, subject: str) -> str:
    """The set of segment names the subject is in now (``GET /users/{id}/segments``)."""
    return f"{names.stream}:segments:of:{subject}"


def members_key(names: StreamNames, segment: str) -> str:
    """A segment's members: a sorted set, every score 0, so members page by cursor in name order (ZRANGE BYLEX)."""
    return f"{names.stream}:segments:members:{segment}"


def segments_key(names: StreamNames, what: str) -> str:
    """Segment-wide keys: ``rules`` (registry hash name -> JSON), ``meta`` (hash name -> JSON of the last batch run),
    ``applied`` (the real-time follower's last applied stream entry), ``active`` (zset subject -> last event ms)."""
    return f"{names.stream}:segments:{what}"
