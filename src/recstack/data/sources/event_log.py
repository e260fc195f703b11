"""An event log: one CSV or Parquet file with ``user_id, item_id, timestamp[, event_type, value]`` per row.

Timestamps are Unix seconds or ISO-8601 strings (naive times are read as UTC); a Parquet timestamp column works too.
Ids are kept as text, so "007" stays "007". A missing ``event_type`` becomes ``interaction``, a missing ``value`` 1.0.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recstack.data.schema import DataError, Dataset, empty_items, empty_users
from recstack.data.sources.columns import (
    interactions_frame,
    require_columns,
    to_float,
    to_string,
    to_timestamp_seconds,
)
from recstack.data.sources.textfile import read_delimited, read_header

EVENT_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "timestamp")
OPTIONAL_EVENT_COLUMNS: tuple[str, ...] = ("event_type", "value")
EVENT_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".parquet", ".pq")
_HINT = "an event log needs user_id,item_id,timestamp and may add event_type,value"


def _read_parquet(path: Path) -> pa.Table:
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); expected a Parquet file")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err}); write it with pandas.to_parquet") from None
    require_columns(schema.names, EVENT_COLUMNS, path, _HINT)
    columns = [c for c in (*EVENT_COLUMNS, *OPTIONAL_EVENT_COLUMNS) if c in schema.names]
    table = pq.read_table(path, columns=columns)
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows; expected at least one event")
    return table


def _read_text(path: Path) -> pa.Table:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    header = read_header(path, delimiter, quoting=True)
    require_columns(header, EVENT_COLUMNS, path, _HINT)
    return read_delimited(path, delimiter, header, header=True, numeric=_numeric_columns(path, delimiter, header))


def _numeric_columns(path: Path, delimiter: str, header: list[str]) -> tuple[str, ...]:
    """``value``, and ``timestamp`` when the first row holds a number there (not an ISO-8601 string)."""
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        rows = csv.reader(handle, delimiter=delimiter)
        next(rows, None)
        first = next(rows, [])
    numeric = ["value"]
    if len(first) == len(header):
        try:
            float(first[header.index("timestamp")])
            numeric.append("timestamp")
        except ValueError:
            pass
    return tuple(numeric)


def load_event_log(path: str | Path, name: str | None = None) -> Dataset:
    """Load one event-log file (``.csv``, ``.tsv``, ``.parquet``) into a ``Dataset`` without item or user metadata."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such event log file; pass path= a CSV or Parquet file ({_HINT})")
    suffix = path.suffix.lower()
    if suffix not in EVENT_SUFFIXES:
        raise DataError(f"{path}: unknown event log format {suffix!r}; use one of {list(EVENT_SUFFIXES)}")
    parquet = suffix in (".parquet", ".pq")
    table = _read_parquet(path) if parquet else _read_text(path)
    first_line = None if parquet else 2
    columns = table.column_names
    event = (
        to_string(table["event_type"], path, "event_type", first_line, required=True)
        if "event_type" in columns
        else "interaction"
    )
    value = to_float(table["value"], path, "value", first_line, dtype=np.float32) if "value" in columns else None
    interactions = interactions_frame(
        to_string(table["user_id"], path, "user_id", first_line, required=True),
        to_string(table["item_id"], path, "item_id", first_line, required=True),
        to_timestamp_seconds(table["timestamp"], path, "timestamp", first_line),
        value,
        event,
    )
    return Dataset(name or path.stem, interactions, empty_items(), empty_users(), source=f"event-log:{path}")
