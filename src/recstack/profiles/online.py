"""The online copy of the profiles: one Redis hash per user at recstack.collect.records.profile_key, for
``GET /users/{id}/profile``.

Fields are flat strings: numbers as their decimal text, booleans ``true``/``false``, strings as they are, maps and
lists as JSON; a null is an absent field. Each load replaces a user's hash (DEL + HSET in one pipeline chunk, no
stale fields from an older schema) and sets its TTL, so a user who left the profiles expires. :func:`read_profile`
decodes a hash back to typed values by the profile schema (recstack.profiles.build.profile_schema plus the
``<column>_imputed`` flags).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from recstack.collect.records import StreamNames, profile_key, tombstone_key
from recstack.profiles.build import DEMOGRAPHICS, profile_schema

__all__ = ["decode_profile", "encode_profile", "load_profiles", "read_profile", "read_profile_async"]


def _encode(value: Any, type_: pa.DataType) -> str:
    if pa.types.is_map(type_):
        return json.dumps(dict(value), separators=(",", ":"), sort_keys=True)
    if pa.types.is_list(type_):
        return json.dumps(list(value), separators=(",", ":"))
    if pa.types.is_boolean(type_):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json.dumps(value)
    return str(value)


def encode_profile(row: dict[str, Any], schema: pa.Schema) -> dict[str, str]:
    """One profile row (as ``Table.to_pylist`` gives it) as hash fields; nulls are left out."""
    return {name: _encode(row[name], schema.field(name).type) for name in schema.names if row[name] is not None}


def _decoders() -> dict[str, Callable[[str], Any]]:
    out: dict[str, Callable[[str], Any]] = {}
    for f in profile_schema():
        t = f.type
        if pa.types.is_map(t) or pa.types.is_list(t):
            out[f.name] = json.loads
        elif pa.types.is_integer(t):
            out[f.name] = int
        elif pa.types.is_floating(t):
            out[f.name] = float
        else:
            out[f.name] = str
    for column in DEMOGRAPHICS:
        out[f"{column}_imputed"] = lambda text: text == "true"
    return out


_DECODERS = _decoders()


def decode_profile(fields: dict[bytes | str, bytes | str]) -> dict[str, Any]:
    """Hash fields back to typed values; fields the schema does not know stay strings."""
    out = {}
    for key, raw in fields.items():
        name = key.decode() if isinstance(key, bytes) else key
        text = raw.decode() if isinstance(raw, bytes) else raw
        out[name] = _DECODERS.get(name, str)(text)
    return out


def _chunks(table: pa.Table, size: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, size):
        yield table.slice(start, size)


def load_profiles(client, names: StreamNames, profiles: pa.Table, ttl_s: int | None, chunk: int = 1000) -> int:
    """Write every profile (sync ``redis.Redis``), ``chunk`` users per pipeline round trip, except those of erased
    users (the tombstone set, read per chunk): a build from a lake not yet rewritten by ``recstack-collect erase``
    must not bring an erased profile back. Returns users written."""
    if ttl_s is not None and ttl_s <= 0:
        raise ValueError(f"ttl_s={ttl_s!r}: give a positive number of seconds, or null for no expiry")
    schema = profiles.schema
    written = 0
    tombstones = tombstone_key(names)
    for part in _chunks(profiles, chunk):
        rows = part.to_pylist()
        erased = client.smismember(tombstones, [row["user_id"] for row in rows]) if rows else []
        pipe = client.pipeline(transaction=False)
        for row, gone in zip(rows, erased, strict=True):
            if gone:
                continue
            written += 1
            key = profile_key(names, row["user_id"])
            pipe.delete(key)
            pipe.hset(key, mapping=encode_profile(row, schema))
            if ttl_s is not None:
                pipe.expire(key, int(ttl_s))
        pipe.execute()
    return written


def read_profile(client, names: StreamNames, subject: str) -> dict[str, Any] | None:
    """The profile of a pseudonymised subject, or None when it has none (sync ``redis.Redis``)."""
    fields = client.hgetall(profile_key(names, subject))
    return decode_profile(fields) if fields else None


async def read_profile_async(client, names: StreamNames, subject: str) -> dict[str, Any] | None:
    """:func:`read_profile` for ``redis.asyncio.Redis``."""
    fields = await client.hgetall(profile_key(names, subject))
    return decode_profile(fields) if fields else None
