"""Typed columns from raw Arrow columns, and the three ``Dataset`` tables built from them.

Conversions are vectorised (Arrow casts). Only when a cast fails do we look for the first bad row, so the happy path
pays nothing for the line-numbered error messages. ``first_line`` is the file line of row 0 (2 below a header line),
so that ``first_line + row`` is what an editor shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recstack.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, DataError

ArrowColumn = pa.Array | pa.ChunkedArray


def _where(path: Path | str, first_line: int | None, row: int, column: str) -> str:
    if first_line is None:  # a binary format (Parquet) has rows, not lines
        return f"{path}: row {row + 1}, column {column!r}"
    return f"{path}: line {first_line + row}, column {column!r}"


def require_columns(present: Sequence[str], required: Sequence[str], path: Path | str, hint: str = "") -> None:
    """Fail naming the missing column(s), the file, and the columns it does have."""
    missing = [c for c in required if c not in present]
    if missing:
        raise DataError(
            f"{path}: line 1 (header): missing column(s) {missing}; the file has {list(present)}"
            + (f". {hint}" if hint else "")
        )


def _as_array(column: ArrowColumn) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _first_unparsable(column: ArrowColumn, parsed: pd.Series) -> int:
    bad = parsed.isna().to_numpy() & ~pc.is_null(_as_array(column)).to_numpy(zero_copy_only=False)
    return int(np.flatnonzero(bad)[0]) if bad.any() else int(np.flatnonzero(parsed.isna().to_numpy())[0])


def _finite(values: np.ndarray, path: Path | str, name: str, first_line: int | None) -> np.ndarray:
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{_where(path, first_line, row, name)}: {values[row]} is not a finite number")
    return values


def to_float(
    column: ArrowColumn, path: Path | str, name: str, first_line: int | None, *, dtype: type = np.float64
) -> np.ndarray:
    """A finite numeric column (float ``dtype``); an empty, non-numeric or NaN value fails naming its line."""
    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type) or pa.types.is_boolean(column.type):
        if column.null_count:
            row = int(np.flatnonzero(pc.is_null(_as_array(column)).to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{_where(path, first_line, row, name)}: the value is missing; a number is required")
        values = _as_array(column).cast(pa.float64()).to_numpy()
    else:
        try:
            values = pc.cast(column, pa.float64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            strings = pd.Series(_as_array(column).to_pandas())
            parsed = pd.to_numeric(strings, errors="coerce")
            if not parsed.isna().any():  # pandas is more lenient (e.g. surrounding spaces)
                return _finite(parsed.to_numpy(np.float64), path, name, first_line).astype(dtype, copy=False)
            row = _first_unparsable(column, parsed)
            raise DataError(
                f"{_where(path, first_line, row, name)}: {strings.iloc[row]!r} is not a number; fix or remove that row"
            ) from None
    return _finite(values, path, name, first_line).astype(dtype, copy=False)


# Unix seconds reach 1e11 in the year 5138; a larger number is a millisecond (or finer) time, not a far-future one.
_MAX_SECONDS = 1e11


def _unix_seconds(values: np.ndarray, path: Path | str, name: str, first_line: int | None) -> np.ndarray:
    _finite(values, path, name, first_line)
    large = np.abs(values) >= _MAX_SECONDS
    if large.any():
        row = int(np.flatnonzero(large)[0])
        raise DataError(
            f"{_where(path, first_line, row, name)}: {values[row]:.0f} is too large for Unix seconds (milliseconds?); "
            "convert the column to seconds (divide by 1000) or to ISO-8601 strings"
        )
    return np.floor(values).astype(np.int64)


def to_timestamp_seconds(column: ArrowColumn, path: Path | str, name: str, first_line: int | None) -> np.ndarray:
    """Unix seconds (int64) from numbers (Unix seconds), ISO-8601 strings (naive ones read as UTC) or Arrow times."""
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        if column.null_count:
            row = int(np.flatnonzero(pc.is_null(_as_array(column)).to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{_where(path, first_line, row, name)}: the time is missing")
        seconds = pc.cast(pc.cast(column, pa.timestamp("s"), safe=False), pa.int64(), safe=False)
        return _as_array(seconds).to_numpy()
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        return _unix_seconds(to_float(column, path, name, first_line), path, name, first_line)
    try:
        numbers = pc.cast(column, pa.float64()).to_numpy()
    except pa.ArrowInvalid:
        pass  # not all numbers: try ISO-8601 on the whole column
    else:
        return _unix_seconds(numbers, path, name, first_line)
    strings = pd.Series(_as_array(column).to_pandas())
    parsed = pd.to_datetime(strings, format="ISO8601", utc=True, errors="coerce")
    if parsed.isna().any():
        numeric = pd.to_numeric(strings, errors="coerce").notna().to_numpy()
        neither = parsed.isna().to_numpy() & ~numeric
        if neither.any():
            row = int(np.flatnonzero(neither)[0])
            problem = "is neither Unix seconds nor an ISO-8601 time (e.g. 1998-04-22T10:00:00Z)"
        else:  # every value is valid, but the column mixes the two forms
            row = int(np.flatnonzero(numeric != numeric[0])[0])
            problem = "mixes forms: earlier rows are " + ("Unix seconds" if numeric[0] else "ISO-8601 times")
        raise DataError(
            f"{_where(path, first_line, row, name)}: {strings.iloc[row]!r} {problem}; "
            "one column must use one of the two throughout"
        )
    return parsed.to_numpy(dtype="datetime64[s]").astype(np.int64)


def to_string(
    column: ArrowColumn, path: Path | str, name: str, first_line: int | None, *, required: bool
) -> ArrowColumn:
    """A large-string column (numbers are cast, so Parquet integer ids become their decimal text). Chunks are kept:
    combining them would copy the column once more.

    ``required``: an empty or missing value fails naming its line (ids must never be blank).
    """
    if pa.types.is_floating(column.type):  # ids stored as floats (1.0) mean the integer id
        column = pc.cast(column, pa.int64())
    if not pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.large_string())
    if required:
        blank = pc.or_kleene(pc.is_null(column), pc.equal(pc.binary_length(column), 0))
        if pc.any(blank).as_py():
            row = int(np.flatnonzero(_as_array(blank).to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{_where(path, first_line, row, name)}: the value is empty; every row needs one")
    return column


def str_series(values: ArrowColumn | Sequence[str] | np.ndarray) -> pd.Series:
    """A pandas ``str`` column backed by Arrow (no Python string objects, which cost ~50 bytes each)."""
    if isinstance(values, pa.ChunkedArray | pa.Array):
        array = values.cast(pa.large_string())
    else:
        array = pa.array(values, type=pa.large_string())
    return pd.Series(pd.array(array, dtype="str"))


def constant_str(value: str, n: int) -> pd.Series:
    return str_series(pa.repeat(pa.scalar(value, pa.large_string()), n))


def interactions_frame(
    user_id: ArrowColumn,
    item_id: ArrowColumn,
    timestamp: np.ndarray,
    value: np.ndarray | None = None,
    event_type: ArrowColumn | str = "rating",
) -> pd.DataFrame:
    """The interactions table with the schema's dtypes (str ids, int64 seconds, float32 value, str event type)."""
    n = len(timestamp)
    frame = pd.DataFrame(
        {
            "user_id": str_series(user_id),
            "item_id": str_series(item_id),
            "timestamp": np.asarray(timestamp, dtype=np.int64),
            "value": np.ones(n, dtype=np.float32) if value is None else np.asarray(value, dtype=np.float32),
            "event_type": constant_str(event_type, n) if isinstance(event_type, str) else str_series(event_type),
        },
        copy=False,
    )
    return frame[list(INTERACTION_COLUMNS)]


def items_frame(
    item_id: ArrowColumn | Sequence[str],
    title: ArrowColumn | Sequence[str],
    year: Sequence[int | None] | np.ndarray | pd.Series,
    categories: Sequence[list[str]],
    text: ArrowColumn | Sequence[str] | None = None,
) -> pd.DataFrame:
    """The items table: str id/title/text, nullable Int64 year, categories as Python lists of str."""
    n = len(item_id)
    frame = pd.DataFrame(
        {
            "item_id": str_series(item_id),
            "title": str_series(title),
            "year": pd.array(year, dtype="Int64"),
            "categories": pd.Series(list(categories), dtype=object),
            "text": constant_str("", n) if text is None else str_series(text),
        }
    )
    return frame[list(ITEM_COLUMNS)]


def users_frame(user_id: ArrowColumn | Sequence[str], **demographics: ArrowColumn | Sequence[str]) -> pd.DataFrame:
    """The users table: ``user_id`` and each demographic column as str (blank values become missing)."""
    columns = {"user_id": str_series(user_id)}
    for name, values in demographics.items():
        series = str_series(values)
        columns[name] = series.where(series.str.strip() != "")
    return pd.DataFrame(columns)
