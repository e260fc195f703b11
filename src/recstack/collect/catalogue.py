"""Items added or changed live (``POST /items``): the record, its two Redis keys and how they are written and read.

Every upsert is written once, atomically (one server-side script), to

* ``<stream>:items`` (:func:`items_key`): a hash ``item_id -> record``, the latest record of each item: what a
  starting server applies on top of its bundle and what ``recstack-export`` folds into the next bundle;
* ``<stream>:items:log`` (:func:`items_log_key`): a stream of the same records in upsert order (trimmed to about
  :data:`LOG_MAXLEN` entries), which every server worker follows to apply other workers' upserts within a poll
  interval.

A record's ``version`` is its log entry id (``<ms>-<seq>``, increasing on one Redis), so a record is newer than another
by version, and newer than a bundle row when its milliseconds exceed the row's ``updated_ms``. The record carries the
text vector its writer encoded and the sha256 of the encoder that made it (the bundle's ``text_encoder.onnx``), so a
worker of the same bundle reuses it and one of another bundle encodes the text again. Item metadata is not personal
data: nothing here is pseudonymised.

For durability across a Redis restart, run Redis with the append-only file, as for the collector's stream.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from recstack.collect.records import StreamNames
from recstack.data.item_text import item_text

LOG_MAXLEN = 100_000
"""About this many upserts stay in the log; a worker further behind than that reloads the whole hash."""

UPSERT_SCRIPT = """
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'i', ARGV[1], 'r', ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], id .. ' ' .. ARGV[2])
return id
"""
"""KEYS: the hash, the log; ARGV: item id, record JSON, log length. Returns the version (the log entry id)."""


def items_key(names: StreamNames) -> str:
    """The hash ``item_id -> '<version> <record JSON>'`` of every item upserted through ``POST /items``."""
    return f"{names.stream}:items"


def items_log_key(names: StreamNames) -> str:
    """The stream of upserts (fields ``i``: item id, ``r``: record JSON) that server workers follow."""
    return f"{names.stream}:items:log"


def parse_version(version: str) -> tuple[int, int]:
    """``'<ms>-<seq>'`` -> ``(ms, seq)``; ``(0, 0)`` for ``''`` (the bundle's own rows)."""
    if not version:
        return (0, 0)
    ms, _, seq = version.partition("-")
    return (int(ms), int(seq or 0))


@dataclass(frozen=True)
class ItemUpsert:
    """One item as ``POST /items`` described it, with the vector its writer encoded (``None``: encode it)."""

    item_id: str
    title: str = ""
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    description: str = ""
    year: int | None = None
    version: str = ""
    encoder: str = ""
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def text(self) -> str:
        """What the text encoder reads (:func:`recstack.data.item_text.item_text`, the catalogue's function)."""
        return item_text(
            {
                "title": self.title,
                "categories": list(self.categories),
                "tags": list(self.tags),
                "description": self.description,
                "year": self.year,
            }
        )

    @property
    def updated_ms(self) -> int:
        return parse_version(self.version)[0]

    def to_json(self) -> str:
        out: dict[str, Any] = {
            "item_id": self.item_id,
            "title": self.title,
            "categories": list(self.categories),
            "tags": list(self.tags),
            "description": self.description,
            "year": self.year,
            "encoder": self.encoder,
        }
        if self.vector is not None:
            out["vector"] = base64.b64encode(np.asarray(self.vector, dtype="<f4").tobytes()).decode()
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes, version: str = "") -> ItemUpsert:
        """A record as stored; ``ValueError`` for one that is not (a foreign or corrupt entry)."""
        try:
            data = json.loads(raw)
            vector = data.get("vector")
            return cls(
                item_id=str(data["item_id"]),
                title=str(data.get("title", "")),
                categories=tuple(str(c) for c in data.get("categories", ())),
                tags=tuple(str(t) for t in data.get("tags", ())),
                description=str(data.get("description", "")),
                year=None if data.get("year") is None else int(data["year"]),
                version=version,
                encoder=str(data.get("encoder", "")),
                vector=None if vector is None else np.frombuffer(base64.b64decode(vector), dtype="<f4").copy(),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"malformed item record ({type(error).__name__}: {error})") from None

    @classmethod
    def from_stored(cls, raw: str | bytes) -> ItemUpsert:
        """A value of the :func:`items_key` hash: ``'<version> <record JSON>'``."""
        text = raw.decode() if isinstance(raw, bytes) else raw
        version, _, record = text.partition(" ")
        return cls.from_json(record, version)

    def with_version(self, version: str) -> ItemUpsert:
        return replace(self, version=version)


def decode_hash(raw: Mapping[bytes, bytes]) -> list[ItemUpsert]:
    """Every readable record of the :func:`items_key` hash, oldest version first (malformed ones are skipped)."""
    out = []
    for value in raw.values():
        try:
            out.append(ItemUpsert.from_stored(value))
        except ValueError:
            continue
    return sorted(out, key=lambda r: parse_version(r.version))


def decode_log(entries: list[tuple[bytes, Mapping[bytes, bytes]]]) -> list[ItemUpsert]:
    """Records of log entries as ``XRANGE`` returns them, in log order (malformed ones are skipped)."""
    out = []
    for entry_id, fields in entries:
        try:
            out.append(ItemUpsert.from_json(fields[b"r"], entry_id.decode()))
        except (KeyError, ValueError):
            continue
    return out


def read_upserts(redis_url: str, names: StreamNames, *, timeout_s: float = 5.0) -> list[ItemUpsert]:
    """Every item upserted on the Redis at ``redis_url`` (what the exporter folds into the next bundle)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return decode_hash(client.hgetall(items_key(names)))  # type: ignore[arg-type]
    finally:
        client.close()
