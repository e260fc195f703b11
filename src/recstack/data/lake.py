"""The event lake: what it holds (one declared schema per table) and where each file lives.

Layout, hour-partitioned by the server's receive time (UTC), Hive style so DuckDB and Spark read it as is::

    <lake>/<table>/dt=YYYY-MM-DD/hour=HH/part-<name>.parquet

Tables:

* ``events``: every accepted event, already minimised at the door (recstack.collect): ids are keyed-HMAC pseudonyms,
  the IP is truncated or absent, the User-Agent is only its parsed classes, free text is length-capped.
* ``aliases``: ``POST /identify`` links, anonymous visitor pseudonym -> user pseudonym (applied by ``prepare``).
* ``audit``: append-only record of consent changes and erasures (who, when, what, policy version).
* ``impressions``: every ``/recommend`` answer (request_id, the items and scores shown, stage, bundle, A/B arm), written
  by the service through the same stream: what online CTR and MAP are measured on (``recstack-monitor``).

This file is the one declaration of those columns: the collector writes them, the consumer and the log importer store
them, ``prepare data=lake`` and the privacy notice read them. A file is written to a temporary name, fsynced and
renamed (:func:`write_part`), so a reader never sees half a file and a crash leaves at most an ignored ``.tmp``.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TS = pa.timestamp("ms", tz="UTC")


def _field(name: str, type_: pa.DataType, what: str, why: str, nullable: bool = True) -> pa.Field:
    """A lake column with what it holds and why it is collected: the privacy notice (GET /privacy) is rendered from
    these, so the notice and the lake cannot disagree."""
    return pa.field(name, type_, nullable=nullable, metadata={"what": what, "why": why})


_OPS = "operations: exactly-once storage and deduplication"
_REC = "personalisation: what recommendations are learned from"
_CTX = "personalisation and analytics: recommendations that fit the moment and device"

EVENTS_SCHEMA = pa.schema(
    [
        _field("event_id", pa.string(), "an id per event (client-supplied or generated)", _OPS, nullable=False),
        _field("user_id", pa.string(), "a keyed pseudonym of your account id or of the visitor cookie", _REC, False),
        _field("anonymous", pa.bool_(), "whether the id is a visitor cookie rather than an account", _REC, False),
        _field("item_id", pa.string(), "the product the event is about (none for page-level events)", _REC),
        _field(
            "event_type",
            pa.string(),
            "view, click, add_to_cart, purchase, dwell, scroll, search, rating, ...",
            _REC,
            False,
        ),
        _field("value", pa.float64(), "rating, dwell time (ms), scroll depth (0-1), preference score", _REC),
        _field("client_ts", TS, "when your browser or app says it happened", _REC),
        _field("received_ts", TS, "when our server received it (the storage partition)", _OPS, nullable=False),
        _field("source", pa.string(), "how it arrived: api, pixel or server log", _OPS, nullable=False),
        _field("category", pa.string(), "a category you scored (stated preference)", _REC),
        _field("question_id", pa.string(), "a survey question you answered", _REC),
        _field("answer", pa.string(), "your survey answer (at most 256 characters)", _REC),
        _field("query", pa.string(), "a search query (at most 256 characters)", _REC),
        _field("age_band", pa.string(), "age band you gave (e.g. 25-34), never a birth date", _REC),
        _field("gender", pa.string(), "gender you gave", _REC),
        _field("country", pa.string(), "country you gave (ISO code)", _REC),
        _field("language", pa.string(), "language you gave (ISO code)", _REC),
        _field(
            "identity_hash",
            pa.string(),
            "a keyed hash of the e-mail address you gave (the address itself is not kept)",
            _OPS,  # deduplication of accounts: two accounts of one person are merged into one profile
        ),
        _field("device_class", pa.string(), "desktop, mobile, tablet or bot (the User-Agent is not stored)", _CTX),
        _field("browser_family", pa.string(), "browser family, e.g. Firefox (no version)", _CTX),
        _field("os_family", pa.string(), "operating system family, e.g. Android", _CTX),
        _field("referrer_host", pa.string(), "the site that linked here (host only, no path)", _CTX),
        _field("local_hour", pa.int8(), "your local hour of day, from your time zone", _CTX),
        _field("geo_country", pa.string(), "country looked up from your IP address (when enabled)", _CTX),
        _field("geo_region", pa.string(), "region looked up from your IP address (when enabled)", _CTX),
        _field("ip", pa.string(), "your IP address truncated to its network (/24, /48), or nothing (default)", _OPS),
        _field(
            "request_id",
            pa.string(),
            "the recommendation list a click or purchase came from (the request_id of a /recommend answer)",
            "measurement: how well the recommendations we showed you worked",
        ),
        _field("stream_id", pa.string(), "the internal queue entry it came through", _OPS),
    ]
)

_MEASURE = "measurement: how well the recommendations we showed you worked"

IMPRESSIONS_SCHEMA = pa.schema(
    [
        _field("request_id", pa.string(), "an id per recommendation list we showed", _MEASURE, nullable=False),
        _field("user_id", pa.string(), "the keyed pseudonym the list was for (none for a first visit)", _MEASURE),
        _field("anonymous", pa.bool_(), "whether the id is a visitor cookie rather than an account", _MEASURE),
        _field("items", pa.list_(pa.string()), "the items shown, best first", _MEASURE, nullable=False),
        _field("scores", pa.list_(pa.float32()), "the score of each item shown", _MEASURE),
        _field("stage", pa.string(), "the stage that ordered them: rerank, retrieval or popularity", _MEASURE),
        _field("user_source", pa.string(), "trained, recent_activity, popularity or segment_popularity", _MEASURE),
        _field("personalised", pa.bool_(), "whether the list was personalised (consent given, not erased)", _MEASURE),
        _field("bundle", pa.string(), "the model bundle that served it (name@digest or model tag)", _MEASURE),
        _field("experiment", pa.string(), "the A/B experiment running, if any", _MEASURE),
        _field("arm", pa.string(), "the experiment arm the user is assigned to", _MEASURE),
        _field("received_ts", TS, "when the list was served (the storage partition)", _OPS, nullable=False),
        _field("stream_id", pa.string(), "the internal queue entry it came through", _OPS),
    ]
)
"""One row per ``/recommend`` answer (recstack.serving.impressions writes them, off the request path): what the
monitoring job (recstack.monitoring) joins later events to, for CTR and online MAP / NDCG per bundle and arm."""

ALIASES_SCHEMA = pa.schema(
    [
        pa.field("anonymous_id", pa.string(), nullable=False),  # pseudonym of the visitor id
        pa.field("user_id", pa.string(), nullable=False),  # pseudonym of the signed-in user id
        pa.field("received_ts", TS, nullable=False),
        pa.field("stream_id", pa.string()),
    ]
)

AUDIT_SCHEMA = pa.schema(
    [
        pa.field("action", pa.string(), nullable=False),  # consent | erasure | purge
        pa.field("subject", pa.string()),  # pseudonym (never a raw id)
        pa.field("purposes", pa.string()),  # consent: JSON object purpose -> bool
        pa.field("policy_version", pa.string()),
        pa.field("detail", pa.string()),  # erasure: partitions touched; purge: partitions deleted
        pa.field("received_ts", TS, nullable=False),
        pa.field("stream_id", pa.string()),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "events": EVENTS_SCHEMA,
    "aliases": ALIASES_SCHEMA,
    "audit": AUDIT_SCHEMA,
    "impressions": IMPRESSIONS_SCHEMA,
}
PARTITION_KEY = "received_ts"


class LakeError(ValueError):
    """A lake that cannot be read or written as asked: the message says which path and what to do."""


def schema_of(table: str) -> pa.Schema:
    try:
        return TABLES[table]
    except KeyError:
        raise LakeError(f"unknown lake table {table!r}; the lake holds {sorted(TABLES)}") from None


def partition_dir(lake: str | Path, table: str, when: datetime) -> Path:
    """``<lake>/<table>/dt=YYYY-MM-DD/hour=HH`` for a UTC time."""
    schema_of(table)
    when = when.astimezone(UTC)
    return Path(lake) / table / f"dt={when:%Y-%m-%d}" / f"hour={when:%H}"


def conform(rows: pa.Table | list[dict], table: str) -> pa.Table:
    """Rows (dicts with epoch-millisecond times, or a table) cast to the table's declared schema; columns the schema
    does not declare are an error, missing nullable ones are nulls."""
    schema = schema_of(table)
    if isinstance(rows, list):
        extra = {key for row in rows for key in row} - set(schema.names)
        if extra:
            raise LakeError(f"{table}: undeclared column(s) {sorted(extra)}; the schema is data/lake.py")
        columns = {name: [row.get(name) for row in rows] for name in schema.names}
        return pa.table({f.name: pa.array(columns[f.name], type=_wire_type(f.type)) for f in schema}).cast(schema)
    extra = set(rows.column_names) - set(schema.names)
    if extra:
        raise LakeError(f"{table}: undeclared column(s) {sorted(extra)}; the schema is data/lake.py")
    arrays = [
        rows[f.name].cast(f.type) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type) for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _wire_type(type_: pa.DataType) -> pa.DataType:
    return pa.int64() if pa.types.is_timestamp(type_) else type_


def split_by_hour(table: pa.Table) -> list[tuple[datetime, pa.Table]]:
    """The rows of one table grouped by the UTC hour of their receive time, oldest first."""
    if table.num_rows == 0:
        return []
    hours = pc.floor_temporal(table[PARTITION_KEY], unit="hour")
    out = []
    for hour in pc.unique(hours).to_pylist():
        mask = pc.equal(hours, pa.scalar(hour, type=hours.type))
        out.append((hour, table.filter(mask)))
    return sorted(out, key=lambda pair: pair[0])


def write_part(table: pa.Table, directory: Path, name: str | None = None) -> Path:
    """Write one Parquet file atomically: a temporary name, fsync, rename, fsync of the directory. Returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"part-{name or uuid.uuid4().hex}.parquet"
    temp = directory / f".{final.name}.tmp"
    with open(temp, "wb") as handle:
        pq.write_table(table, handle, compression="zstd")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, final)
    fsync_dir(directory)
    return final


def write_rows(lake: str | Path, table: str, rows: pa.Table | list[dict], name: str | None = None) -> list[Path]:
    """Conform ``rows`` to ``table``'s schema and write one file per receive hour (atomic each). ``name`` makes the
    file names deterministic (``part-<name>.parquet`` in each hour), so a retried write replaces instead of adding."""
    data = conform(rows, table)
    return [write_part(part, partition_dir(lake, table, hour), name) for hour, part in split_by_hour(data)]


def parts(lake: str | Path, table: str) -> list[Path]:
    """Every committed Parquet file of a table (temporary files excluded), in path order."""
    root = Path(lake) / table
    schema_of(table)
    return sorted(p for p in root.glob("dt=*/hour=*/part-*.parquet")) if root.is_dir() else []


def read_table(lake: str | Path, table: str) -> pa.Table:
    """A whole lake table in memory (tests, small lakes; ``prepare data=lake`` reads with DuckDB instead)."""
    files = parts(lake, table)
    if not files:
        return schema_of(table).empty_table()
    return pa.concat_tables([conform(pq.read_table(f, schema=schema_of(table)), table) for f in files])


def glob_pattern(lake: str | Path, table: str) -> str:
    """The DuckDB/Spark glob over a table's files (``read_parquet(..., hive_partitioning=true)``)."""
    schema_of(table)
    return str(Path(lake) / table / "dt=*" / "hour=*" / "part-*.parquet")


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (the directory entry itself is fsynced)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def utc_from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
