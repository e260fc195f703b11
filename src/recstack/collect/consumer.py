"""The durable Redis Stream -> Parquet lake consumer (``recstack-collect consume``).

One member of a consumer group reads the collector's stream (recstack.collect.records) and stores every entry in the
lake (recstack.data.lake) exactly once:

* A flush writes the Parquet files first (atomic, named ``<first id>_<last id>_<consumer>``), THEN acknowledges the
  entries (XACK), THEN trims the stream (XTRIM MINID) below the oldest entry any group still needs. A crash before
  the acknowledgement leaves the entries pending; after it nothing is lost; the stream holds only what is not stored.
* Recovery: at start, and every ``claim_idle_s``, the consumer re-reads its own pending entries and takes over the
  entries another consumer left unacknowledged that long (it died). Their rows may be stored already, wholly or in
  part (one file per table and receive hour: a crash can fall between two files), so each recovered row is looked
  up in the ``stream_id`` column of the files of its own partition whose names' id range covers it, and only the
  rows not found are written.
* Duplicates: an event whose ``event_id`` was stored recently (a bounded in-memory set of ``dedupe_ids``) is dropped:
  a client that retried a batch whose answer it did not see. Older duplicates and those across a restart can still
  reach the lake; ``prepare data=lake`` deduplicates by ``event_id`` too.
* Erasure in flight: rows of a pseudonym in the tombstone set (records.tombstone_key) are dropped at flush.
* A malformed entry is kept as JSON under ``<lake>/_rejected/<entry id>.json`` and acknowledged: never lost, never
  blocking the stream.

Entries are parsed by Arrow's JSON reader against the declared schemas (about 3x faster than json + dicts); a chunk
it refuses is parsed again entry by entry with records.decode_entry and lake.conform, the reference rules.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq
import redis

from recstack.collect.records import ROWS_FIELD, TABLE_FIELD, StreamNames, decode_entry, tombstone_key
from recstack.collect.settings import CollectSettings
from recstack.data.lake import TABLES, LakeError, conform, partition_dir, split_by_hour, write_rows

log = logging.getLogger(__name__)

REJECTED_DIR = "_rejected"
SUBJECT_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("user_id",),
    "aliases": ("anonymous_id", "user_id"),
    "impressions": ("user_id",),
}
_PART_RANGE = re.compile(r"^part-(\d+)-(\d+)_(\d+)-(\d+)_")
_CHUNK = 10_000  # ids per XACK / SMISMEMBER
_STALE_TMP_S = 600  # a writer holds its temporary file for seconds; older ones are left by a killed process
_PARSE_ERRORS = (pa.ArrowException, LakeError, ValueError, TypeError, OverflowError, AttributeError, KeyError)

EntryId = tuple[int, int]


def parse_id(entry_id: str) -> EntryId:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def safe_name(consumer: str) -> str:
    """A consumer name as a file-name part: letters, digits, dots and dashes only."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", consumer) or "consumer"


# ---------------------------------------------------------------------------------------------- parsing entries ---
def _wire(type_: pa.DataType) -> pa.DataType:
    return pa.int64() if pa.types.is_timestamp(type_) else type_


_WIRE_SCHEMAS: dict[str, pa.Schema] = {
    table: pa.schema(
        [pa.field("r", pa.list_(pa.struct([pa.field(f.name, _wire(f.type)) for f in schema if f.name != "stream_id"])))]
    )
    for table, schema in TABLES.items()
}


def check_required(table: pa.Table, name: str) -> pa.Table:
    """``conform`` types columns; this refuses nulls in the columns a table declares required."""
    for f in TABLES[name]:
        if not f.nullable and table[f.name].null_count:
            raise LakeError(f"{name}: {f.name} is required but missing in {table[f.name].null_count} row(s)")
    return table


def _parse_fast(name: str, items: list[tuple[str, dict[bytes, bytes]]]) -> pa.Table:
    """Many entries of one table at once: each entry's rows become one JSON line ``{"r": [...]}``."""
    raws = [fields[ROWS_FIELD] for _, fields in items]
    buffer = b"".join(b'{"r":' + raw + b"}\n" for raw in raws)
    parsed = pajson.read_json(
        pa.BufferReader(buffer),
        read_options=pajson.ReadOptions(use_threads=False, block_size=max(1 << 20, 2 * max(map(len, raws)) + 64)),
        parse_options=pajson.ParseOptions(explicit_schema=_WIRE_SCHEMAS[name], unexpected_field_behavior="error"),
    )
    if parsed.num_rows != len(items):
        raise LakeError("entry count changed while parsing")
    lists = parsed["r"].combine_chunks()
    if lists.null_count:
        raise LakeError("an entry's rows are null")
    rows = pa.Table.from_struct_array(pc.list_flatten(lists))
    counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    ids = np.repeat(np.array([entry_id for entry_id, _ in items], dtype=object), counts)
    return check_required(conform(rows.append_column("stream_id", pa.array(ids, pa.string())), name), name)


def _parse_one(entry_id: str, fields: dict[bytes, bytes]) -> tuple[str, pa.Table]:
    """The reference path for one entry: records.decode_entry then lake.conform; raises on anything malformed."""
    name, rows = decode_entry(fields)
    if not all(isinstance(row, dict) for row in rows):
        raise LakeError("a row is not a JSON object")
    for row in rows:
        row["stream_id"] = entry_id
    try:
        return name, check_required(conform(rows, name), name)
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as error:
        if isinstance(error, LakeError):
            raise
        for f in TABLES[name]:  # Arrow's message does not name the column: find it
            try:
                pa.array([row.get(f.name) for row in rows], type=_wire(f.type))
            except (pa.ArrowException, ValueError, TypeError, OverflowError) as column_error:
                raise LakeError(f"{name}.{f.name}: {column_error}") from None
        raise


@dataclass
class Parsed:
    tables: dict[str, list[pa.Table]] = field(default_factory=dict)
    rejected: list[tuple[str, dict[bytes, bytes], str]] = field(default_factory=list)  # (id, fields, why)
    rows: int = 0

    def add(self, name: str, table: pa.Table) -> None:
        if table.num_rows:
            self.tables.setdefault(name, []).append(table)
            self.rows += table.num_rows


def parse_entries(entries: Iterable[tuple[str, dict[bytes, bytes]]]) -> Parsed:
    """Conformed rows (``stream_id`` added) per lake table, and the entries that cannot be stored with the reason."""
    out = Parsed()
    by_table: dict[str, list[tuple[str, dict[bytes, bytes]]]] = {}
    slow: list[tuple[str, dict[bytes, bytes]]] = []
    for entry_id, fields in entries:
        name = fields.get(TABLE_FIELD, b"").decode("utf-8", "replace")
        raw = fields.get(ROWS_FIELD)
        # A line break would split an entry into two JSON lines: the reference path judges such entries.
        if name in TABLES and isinstance(raw, bytes) and raw and b"\n" not in raw and b"\r" not in raw:
            by_table.setdefault(name, []).append((entry_id, fields))
        else:
            slow.append((entry_id, fields))
    for name, items in by_table.items():
        try:
            out.add(name, _parse_fast(name, items))
        except _PARSE_ERRORS:
            slow.extend(items)  # one bad entry must not cost the others: judge each alone
    for entry_id, fields in slow:
        try:
            out.add(*_parse_one(entry_id, fields))
        except _PARSE_ERRORS as error:
            out.rejected.append((entry_id, fields, f"{type(error).__name__}: {error}"))
    return out


def write_rejected(lake: str | Path, entry_id: str, fields: dict[bytes, bytes], why: str) -> Path:
    """Keep a malformed entry as ``<lake>/_rejected/<entry id>.json`` (atomic; the same entry twice is one file)."""
    directory = Path(lake) / REJECTED_DIR
    directory.mkdir(parents=True, exist_ok=True)
    decoded: dict[str, object] = {}
    for key, value in fields.items():
        try:
            decoded[key.decode()] = value.decode()
        except UnicodeDecodeError:
            decoded[key.decode("utf-8", "backslashreplace")] = {"base64": base64.b64encode(value).decode()}
    final = directory / f"{entry_id}.json"
    temp = directory / f".{final.name}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump({"stream_id": entry_id, "error": why, "fields": decoded}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


# ---------------------------------------------------------------------------------------------------- the batch ---
@dataclass
class Batch:
    """Entries read but not yet stored and acknowledged. ``recovered``: read again after a crash, so some of their
    rows may be stored already."""

    consumer: str
    recovered: bool = False
    tables: dict[str, list[pa.Table]] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    rows: int = 0
    rejected: int = 0
    started: float | None = None
    prepared: bool = False
    written: list[Path] = field(default_factory=list)
    retry_token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def add(self, entry_ids: list[str], parsed: Parsed) -> None:
        if self.started is None:
            self.started = time.monotonic()
        self.ids.extend(entry_ids)
        for name, tables in parsed.tables.items():
            self.tables.setdefault(name, []).extend(tables)
        self.rows += parsed.rows
        self.rejected += len(parsed.rejected)

    @property
    def name(self) -> str:
        """Deterministic, so a flush retried after an error replaces its own files. Recovered batches get a token:
        their ids need not be the same set as an earlier batch with the same first and last id."""
        ordered = sorted(self.ids, key=parse_id)
        base = f"{ordered[0]}_{ordered[-1]}_{safe_name(self.consumer)}"
        return f"{base}-r{self.retry_token}" if self.recovered else base


class RecentIds:
    """The event ids stored recently: two generations of sets, so the newest ``size // 2`` to ``size`` ids (plus at
    most one batch) are remembered, at O(1) per id."""

    def __init__(self, size: int) -> None:
        self._half = max(1, size // 2)
        self._current: set[str] = set()
        self._previous: set[str] = set()

    def keep_new(self, ids: list[str]) -> list[bool] | None:
        """Which ids to keep (first sight); None when all are new (the common case, checked with set operations in C
        instead of a Python loop per id)."""
        distinct = dict.fromkeys(ids)
        if len(distinct) == len(ids) and self._current.isdisjoint(distinct) and self._previous.isdisjoint(distinct):
            if len(self._current) + len(ids) > self._half:
                self._previous, self._current = self._current, set()
            self._current.update(distinct)
            return None
        keep = []
        current, previous = self._current, self._previous
        for event_id in ids:
            if event_id in current or event_id in previous:
                keep.append(False)
                continue
            keep.append(True)
            current.add(event_id)
            if len(current) >= self._half:
                self._previous, self._current = current, set()
                current, previous = self._current, self._previous
        return keep


@dataclass
class ConsumerStats:
    stored: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    files: int = 0
    flushes: int = 0
    duplicates: int = 0  # events dropped: event_id stored recently
    erased: int = 0  # rows dropped: the subject is in the tombstone set
    rejected: int = 0  # malformed entries kept under _rejected/
    recovered: int = 0  # entries read again after a crash (own pending or taken over)
    already_stored: int = 0  # rows of recovered entries found in the lake
    deleted: int = 0  # pending entries deleted from the stream by someone else before they were stored


# ------------------------------------------------------------------------------------------------- the consumer ---
class LakeConsumer:
    """``run()`` until ``stop()`` (or ``max_seconds``); see the module docstring for the guarantees."""

    def __init__(
        self,
        settings: CollectSettings,
        consumer: str,
        *,
        claim_idle_s: float = 60.0,
        max_buffer_rows: int = 200_000,
        dedupe_ids: int = 1_000_000,
    ) -> None:
        if claim_idle_s <= settings.flush_interval_s:
            raise ValueError(
                f"claim_idle_s={claim_idle_s} must exceed flush_interval_s={settings.flush_interval_s}: a live "
                "consumer's entries would be taken over before it could store them"
            )
        self.settings = settings
        self.consumer = consumer
        self.names: StreamNames = settings.names
        self.lake = settings.lake_path
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.max_buffer_rows = max_buffer_rows
        self.stats = ConsumerStats()
        self._recent = RecentIds(dedupe_ids)
        self._stop = threading.Event()
        self._batch = Batch(consumer)
        self._last_report = time.monotonic()
        self._last_lag: int | None = None
        self.client = redis.Redis.from_url(
            settings.redis_url,
            protocol=2,
            socket_connect_timeout=5,
            socket_timeout=settings.consume_block_ms / 1000 + 10,
        )
        # Raw replies: redis-py's parser fails on a pending entry that was deleted from the stream (nil fields).
        self.client.set_response_callback("XREADGROUP", lambda response, **_: response)
        self.client.set_response_callback("XAUTOCLAIM", lambda response, **_: response)

    def stop(self) -> None:
        """Ask ``run`` to flush, acknowledge and return (safe from a signal handler)."""
        self._stop.set()

    # -- the loop ---------------------------------------------------------------------------------------------------
    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.names.stream, self.names.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def run(self, max_seconds: float | None = None) -> ConsumerStats:
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.ensure_group()  # a Redis that cannot be reached at start is the caller's error to report
        log.info(
            "consumer %s reading %s (group %s) into %s", self.consumer, self.names.stream, self.names.group, self.lake
        )
        next_claim = 0.0  # recover at once
        backoff = 0.0
        while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                if self._batch.prepared:  # a flush failed half-way: finish it (same file names) before reading more
                    self.flush()
                if time.monotonic() >= next_claim:
                    self.flush()  # first: our own pending entries must not come back to us as "recovered"
                    self.recover()
                    next_claim = time.monotonic() + self.claim_idle_ms / 1000
                entries = self._read(">", block=True)
                if entries:
                    self._take(entries)
                if self._due():
                    self.flush()
                if backoff:
                    log.info("Redis is back; consuming again")
                backoff = 0.0
            except (redis.ConnectionError, redis.TimeoutError) as error:
                backoff = min(5.0, backoff * 2 or 0.1)
                log.warning("Redis unavailable (%s); retrying in %.1f s, nothing is lost", error, backoff)
                self._stop.wait(backoff)
            except redis.ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                log.warning("the stream or group was removed (Redis restarted without data?); creating it again")
                self.ensure_group()
        try:
            self.flush()
        except (redis.ConnectionError, redis.TimeoutError) as error:
            log.warning(
                "stopping with %d entries not acknowledged (Redis: %s); they stay pending and the next start stores "
                "what is missing, exactly once",
                len(self._batch.ids),
                error,
            )
        log.info("consumer %s stopped: %s", self.consumer, self.stats)
        return self.stats

    def _due(self) -> bool:
        batch = self._batch
        if not batch.ids:
            return False
        expired = time.monotonic() - (batch.started or 0) >= self.settings.flush_interval_s
        return expired or batch.rows >= self.max_buffer_rows or self._stop.is_set()

    def _read(self, from_id: str, block: bool) -> list[tuple[str, dict[bytes, bytes] | None]]:
        args: list[object] = ["GROUP", self.names.group, self.consumer, "COUNT", self.settings.consume_batch]
        if block:
            args += ["BLOCK", self.settings.consume_block_ms]
        reply = self.client.execute_command("XREADGROUP", *args, "STREAMS", self.names.stream, from_id)
        if not reply:
            return []
        return [(_text(entry_id), _fields(raw)) for entry_id, raw in reply[0][1]]

    def _take(self, entries: list[tuple[str, dict[bytes, bytes] | None]], batch: Batch | None = None) -> None:
        batch = self._batch if batch is None else batch
        live: list[tuple[str, dict[bytes, bytes]]] = []
        for entry_id, fields in entries:
            if fields is None:
                self.stats.deleted += 1
                log.warning("pending entry %s was deleted from the stream before it was stored", entry_id)
            else:
                live.append((entry_id, fields))
        parsed = parse_entries(live)
        for entry_id, fields, why in parsed.rejected:
            path = write_rejected(self.lake, entry_id, fields, why)
            log.warning("rejected stream entry %s (%s); kept in %s", entry_id, why, path)
        batch.add([entry_id for entry_id, _ in entries], parsed)

    # -- recovery ---------------------------------------------------------------------------------------------------
    def recover(self) -> None:
        """Store what this consumer read but did not acknowledge before it stopped, then what dead consumers left."""
        last = "0"
        while entries := self._read(last, block=False):
            self._store_recovered(entries)
            last = entries[-1][0]
        cursor = "0-0"
        while True:
            reply = self.client.execute_command(
                "XAUTOCLAIM",
                self.names.stream,
                self.names.group,
                self.consumer,
                self.claim_idle_ms,
                cursor,
                "COUNT",
                self.settings.consume_batch,
            )
            cursor = _text(reply[0])
            entries = [(_text(entry_id), _fields(raw)) for entry_id, raw in reply[1] if entry_id is not None]
            if entries:
                log.info("took over %d entries left unacknowledged by another consumer", len(entries))
                self._store_recovered(entries)
            if len(reply) > 2 and reply[2]:
                self.stats.deleted += len(reply[2])
                log.warning("%d pending entries were deleted from the stream before they were stored", len(reply[2]))
            if cursor == "0-0":
                break
        self._forget_idle_consumers()

    def _store_recovered(self, entries: list[tuple[str, dict[bytes, bytes] | None]]) -> None:
        batch = Batch(self.consumer, recovered=True)
        self._take(entries, batch)
        self.stats.recovered += len(entries)
        self.flush(batch)

    def _forget_idle_consumers(self) -> None:
        """Consumers named ``<host>-<pid>`` pile up in the group as processes restart; drop the idle, empty ones."""
        for info in self.client.xinfo_consumers(self.names.stream, self.names.group):
            name = _text(info["name"])
            if name != self.consumer and int(info["pending"]) == 0 and int(info["idle"]) > self.claim_idle_ms:
                self.client.xgroup_delconsumer(self.names.stream, self.names.group, name)

    def _drop_stored(self, name: str, table: pa.Table, ids: list[str]) -> pa.Table:
        """Rows of recovered entries not yet in the lake: per receive-hour partition, because a batch is one file
        per hour and a crash may have come between two of them."""
        low, high = min(map(parse_id, ids)), max(map(parse_id, ids))
        kept = []
        for hour, part in split_by_hour(table):
            stored = self._stored_ids(partition_dir(self.lake, name, hour), low, high)
            if stored:
                found = pc.is_in(part["stream_id"], value_set=pa.array(sorted(stored), pa.string()))
                self.stats.already_stored += pc.sum(found).as_py() or 0
                part = part.filter(pc.invert(found))
            kept.append(part)
        return pa.concat_tables(kept) if kept else table.slice(0, 0)

    @staticmethod
    def _stored_ids(directory: Path, low: EntryId, high: EntryId) -> set[str]:
        stored: set[str] = set()
        if not directory.is_dir():
            return stored
        for path in directory.iterdir():
            if path.name.startswith(".part-") and path.name.endswith(".tmp"):
                if time.time() - path.stat().st_mtime > _STALE_TMP_S:
                    path.unlink(missing_ok=True)  # left by a writer killed mid-file
                continue
            if not (path.name.startswith("part-") and path.name.endswith(".parquet")):
                continue
            match = _PART_RANGE.match(path.name)
            if match:  # names of other writers (or compacted files) are read whatever their range
                first = (int(match[1]), int(match[2]))
                last = (int(match[3]), int(match[4]))
                if last < low or first > high:
                    continue
            stored.update(pq.read_table(path, columns=["stream_id"])["stream_id"].to_pylist())
        return stored

    # -- flushing ---------------------------------------------------------------------------------------------------
    def flush(self, batch: Batch | None = None) -> None:
        """Write, THEN acknowledge, THEN trim. Retried after an error, it rewrites the same file names."""
        own = batch is None
        batch = self._batch if batch is None else batch
        if not batch.ids:
            return
        if not batch.prepared:  # once per batch: the recent-ids set must not see a retried batch as duplicates
            for name in list(batch.tables):
                table = pa.concat_tables(batch.tables[name])
                if batch.recovered:
                    table = self._drop_stored(name, table, batch.ids)
                if name == "events":
                    keep = self._recent.keep_new(table["event_id"].to_pylist())
                    if keep is not None:
                        self.stats.duplicates += keep.count(False)
                        table = table.filter(pa.array(keep, pa.bool_()))
                batch.tables[name] = [table]
            batch.prepared = True
        stored = dict.fromkeys(TABLES, 0)
        erased = 0
        written: list[Path] = []
        for name, (table,) in batch.tables.items():
            kept = self._drop_erased(name, table)
            erased += table.num_rows - kept.num_rows
            written += write_rows(self.lake, name, kept, name=batch.name)
            stored[name] = kept.num_rows
        for stale in set(batch.written) - set(written):  # a retry that now writes fewer hours (more erased)
            stale.unlink(missing_ok=True)
        batch.written = written
        self._ack(batch.ids)
        if own:
            self._batch = Batch(self.consumer)
        try:
            self._trim()  # an error here costs nothing: the next flush trims
        finally:
            self._count(batch, stored, erased, len(written))

    def _drop_erased(self, name: str, table: pa.Table) -> pa.Table:
        columns = SUBJECT_COLUMNS.get(name, ())
        if not columns or table.num_rows == 0:
            return table
        key = tombstone_key(self.names)
        n_erased = self.client.scard(key)
        if not n_erased:
            return table
        subjects = pc.unique(pa.chunked_array([c for col in columns for c in table[col].chunks]))
        if n_erased <= len(subjects):  # fewer erased subjects than ids to ask about: fetch them, compare here
            erased = [_text(s) for s in self.client.smembers(key)]
        else:
            erased = []
            ids = subjects.to_pylist()
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                erased += [s for s, member in zip(chunk, self.client.smismember(key, chunk), strict=True) if member]
        if not erased:
            return table
        value_set = pa.array(erased, pa.string())
        hit = pc.is_in(table[columns[0]], value_set=value_set)
        for col in columns[1:]:
            hit = pc.or_(hit, pc.is_in(table[col], value_set=value_set))
        return table.filter(pc.invert(hit))

    def _ack(self, ids: list[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(ids), _CHUNK):
            pipe.xack(self.names.stream, self.names.group, *ids[start : start + _CHUNK])
        pipe.execute()

    def _trim(self) -> None:
        """Drop the entries every group has stored: below each group's oldest pending entry, or past its last
        delivered one when nothing is pending. Never an entry some group has not acknowledged."""
        bounds = []
        try:
            groups = self.client.xinfo_groups(self.names.stream)
        except redis.ResponseError:  # the stream is gone (Redis restarted empty): nothing to trim
            return
        for info in groups:
            group = _text(info["name"])
            if group == self.names.group:
                self._last_lag = info.get("lag")
            if int(info["pending"]):
                oldest = self.client.xpending(self.names.stream, group)["min"]
                if oldest is None:
                    return
                bounds.append(parse_id(_text(oldest)))
            else:
                ms, seq = parse_id(_text(info["last-delivered-id"]))
                bounds.append((ms, seq + 1))
        if bounds:
            ms, seq = min(bounds)
            self.client.xtrim(self.names.stream, minid=f"{ms}-{seq}", approximate=False)

    def _count(self, batch: Batch, stored: dict[str, int], erased: int, files: int) -> None:
        stats = self.stats
        for name, n in stored.items():
            stats.stored[name] += n
        stats.files += files
        stats.flushes += 1
        stats.erased += erased
        stats.rejected += batch.rejected
        now = time.monotonic()
        rate = stored["events"] / max(now - self._last_report, 1e-6)
        self._last_report = now
        lag = "?" if self._last_lag is None else self._last_lag
        extra = []
        if batch.recovered:
            extra.append(f"recovered {len(batch.ids)} entries ({stats.already_stored} rows already stored in all)")
        for label, n in (("duplicates", stats.duplicates), ("erased", stats.erased), ("rejected", stats.rejected)):
            if n:
                extra.append(f"{n} {label} in all")
        log.info(
            "stored %d events, %d aliases, %d audit in %d files; lag %s entries; %.0f events/s%s",
            stored["events"],
            stored["aliases"],
            stored["audit"],
            files,
            lag,
            rate,
            "".join(f"; {part}" for part in extra),
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fields(raw: list[bytes] | None) -> dict[bytes, bytes] | None:
    if raw is None:
        return None
    return dict(zip(raw[::2], raw[1::2], strict=True))


# ------------------------------------------------------------------------------------------- erasure's waiting ---
def stream_end(client: redis.Redis, names: StreamNames) -> str | None:
    """The id of the newest entry ever added to the stream (None: no stream)."""
    try:
        info = client.xinfo_stream(names.stream)
    except redis.ResponseError:
        return None
    return _text(info["last-generated-id"])


def stored_up_to(client: redis.Redis, names: StreamNames, entry_id: str) -> bool:
    """Whether the lake group has stored (acknowledged) every entry up to ``entry_id``."""
    try:
        groups = client.xinfo_groups(names.stream)
    except redis.ResponseError:
        return True  # no stream: nothing in flight
    target = parse_id(entry_id)
    for info in groups:
        if _text(info["name"]) != names.group:
            continue
        if parse_id(_text(info["last-delivered-id"])) < target:
            return False
        if int(info["pending"]) == 0:
            return True
        oldest = client.xpending(names.stream, names.group)["min"]
        return oldest is None or parse_id(_text(oldest)) > target
    return False


def wait_until_stored(client: redis.Redis, names: StreamNames, entry_id: str, timeout_s: float) -> bool:
    """Wait (polling) until everything up to ``entry_id`` is stored; False after ``timeout_s``. Erasure uses it: once
    the tombstone is set, entries added later are dropped at flush, so after this wait the lake holds every row of
    the subject that will ever reach it, and rewriting the files then removes them all."""
    deadline = time.monotonic() + timeout_s
    while not stored_up_to(client, names, entry_id):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True
