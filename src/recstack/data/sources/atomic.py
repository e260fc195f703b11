"""RecBole's atomic files: ``<name>.inter`` with optional ``<name>.item`` and ``<name>.user``.

Each file is tab-separated with a typed header ``field:type`` (``token``, ``token_seq``, ``float``, ``float_seq``;
sequences are space-separated). See RecBole's "Atomic Files" documentation. Columns map onto the schema by name:
the first of several common spellings wins (``rating``, ``label``, ``click``, ... become ``value``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from recstack.data.schema import DataError, Dataset, empty_items, empty_users
from recstack.data.sources.columns import (
    interactions_frame,
    items_frame,
    to_float,
    to_string,
    to_timestamp_seconds,
    users_frame,
)
from recstack.data.sources.textfile import read_delimited, read_header

ATOMIC_TYPES: tuple[str, ...] = ("token", "token_seq", "float", "float_seq")
USER_FIELDS: tuple[str, ...] = ("user_id", "uid", "session_id")
ITEM_FIELDS: tuple[str, ...] = ("item_id", "iid", "movie_id", "business_id", "book_id", "artist_id", "track_id")
VALUE_FIELDS: tuple[str, ...] = ("rating", "label", "click", "value", "score", "weight", "count", "play_count")
TIME_FIELDS: tuple[str, ...] = ("timestamp", "time", "ts")
EVENT_FIELDS: tuple[str, ...] = ("event_type", "behavior_type", "action")
TITLE_FIELDS: tuple[str, ...] = ("movie_title", "title", "name", "item_name")
YEAR_FIELDS: tuple[str, ...] = ("release_year", "year")
CATEGORY_FIELDS: tuple[str, ...] = ("class", "genre", "genres", "categories", "category")


@dataclass(frozen=True)
class AtomicFile:
    """One atomic file: its path, its field names and types (in header order), and all columns as strings."""

    path: Path
    fields: dict[str, str]
    table: pa.Table

    def first(self, candidates: tuple[str, ...]) -> str | None:
        return next((c for c in candidates if c in self.fields), None)


def parse_atomic_header(path: Path) -> dict[str, str]:
    """``{"user_id": "token", ...}`` from the first line; an untyped or unknown-typed field fails naming it."""
    fields: dict[str, str] = {}
    for column, entry in enumerate(read_header(path, "\t"), start=1):
        name, sep, kind = entry.partition(":")
        if not sep or kind not in ATOMIC_TYPES:
            raise DataError(
                f"{path}: line 1 (header), column {column} {entry!r}: atomic headers are name:type with type one of "
                f"{list(ATOMIC_TYPES)} (e.g. 'user_id:token')"
            )
        fields[name] = kind
    return fields


def read_atomic(path: Path, numeric: tuple[str, ...] = ()) -> AtomicFile:
    """Read one atomic file; ``numeric`` fields of type float are parsed as numbers, the rest kept as text."""
    fields = parse_atomic_header(path)
    floats = tuple(f for f in numeric if fields.get(f) == "float")
    # Tab-separated, never quoted: a '"' in a title is a plain character.
    table = read_delimited(path, "\t", list(fields), header=True, quoting=False, numeric=floats)
    return AtomicFile(path, fields, table)


def _missing(path: Path, what: str, candidates: tuple[str, ...], fields: dict[str, str]) -> DataError:
    return DataError(
        f"{path}: line 1 (header): no {what} column (looked for {list(candidates)}); "
        f"the header has {[f'{n}:{t}' for n, t in fields.items()]}"
    )


def _interactions(inter: AtomicFile) -> tuple[pd.DataFrame, str]:
    path = inter.path
    user, item = inter.first(USER_FIELDS), inter.first(ITEM_FIELDS)
    if user is None:
        raise _missing(path, "user", USER_FIELDS, inter.fields)
    if item is None:
        raise _missing(path, "item", ITEM_FIELDS, inter.fields)
    time_field, value_field, event_field = (
        inter.first(TIME_FIELDS),
        inter.first(VALUE_FIELDS),
        inter.first(EVENT_FIELDS),
    )
    n = inter.table.num_rows
    note = ""
    if time_field is None:
        # Some atomic sets (e.g. lastfm) have no times; file order is the only order there is, and the source says so.
        timestamp = np.arange(n, dtype=np.int64)
        note = ";timestamp=row-order"
    else:
        timestamp = to_timestamp_seconds(inter.table[time_field], path, time_field, 2)
    value = None if value_field is None else to_float(inter.table[value_field], path, value_field, 2, dtype=np.float32)
    if event_field is not None:
        event = to_string(inter.table[event_field], path, event_field, 2, required=True)
    else:
        event = "rating" if value_field == "rating" else "interaction"
    frame = interactions_frame(
        to_string(inter.table[user], path, user, 2, required=True),
        to_string(inter.table[item], path, item, 2, required=True),
        timestamp,
        value,
        event,
    )
    return frame, note


def _items(item: AtomicFile) -> pd.DataFrame:
    path, table = item.path, item.table
    key = item.first(ITEM_FIELDS)
    if key is None:
        raise _missing(path, "item", ITEM_FIELDS, item.fields)
    title_field, year_field, category_field = (
        item.first(TITLE_FIELDS),
        item.first(YEAR_FIELDS),
        item.first(CATEGORY_FIELDS),
    )
    n = table.num_rows
    title = table[title_field].to_pandas() if title_field else pd.Series([""] * n, dtype="str")
    year = (
        pd.to_numeric(table[year_field].to_pandas(), errors="coerce").round().astype("Int64")
        if year_field
        else pd.Series([pd.NA] * n, dtype="Int64")
    )  # "unknown" and blank years become <NA>: a year is optional metadata, not worth failing a load over
    if category_field:
        raw = table[category_field].to_pandas().fillna("")
        if item.fields[category_field] == "token_seq":
            categories = [value.split() for value in raw]
        else:
            categories = [[value] if value.strip() else [] for value in raw]
    else:
        categories = [[] for _ in range(n)]
    used = {key, title_field, year_field, category_field}
    text_fields = [f for f, kind in item.fields.items() if f not in used and kind in ("token", "token_seq")]
    text = None
    if text_fields:
        parts = pd.DataFrame({f: table[f].to_pandas().fillna("") for f in text_fields})
        text = parts.agg(" ".join, axis=1).str.split().str.join(" ")
    return items_frame(to_string(table[key], path, key, 2, required=True), title, year, categories, text)


def _users(user: AtomicFile) -> pd.DataFrame:
    key = user.first(USER_FIELDS)
    if key is None:
        raise _missing(user.path, "user", USER_FIELDS, user.fields)
    demographics = {f: user.table[f] for f in user.fields if f != key}
    return users_frame(to_string(user.table[key], user.path, key, 2, required=True), **demographics)


def load_atomic(root: str | Path, name: str) -> Dataset:
    """Load ``<root>/<name>.inter`` (required) and ``<name>.item`` / ``<name>.user`` (when present)."""
    root = Path(root)
    inter_path = root / f"{name}.inter"
    if not inter_path.is_file():
        found = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise DataError(f"{root}: no RecBole atomic file {inter_path.name}; the folder has {found}")
    interactions, note = _interactions(read_atomic(inter_path, numeric=VALUE_FIELDS + TIME_FIELDS))
    item_path, user_path = root / f"{name}.item", root / f"{name}.user"
    items = _items(read_atomic(item_path)) if item_path.is_file() else empty_items()
    users = _users(read_atomic(user_path)) if user_path.is_file() else empty_users()
    return Dataset(name, interactions, items, users, source=f"atomic:{inter_path}{note}")
