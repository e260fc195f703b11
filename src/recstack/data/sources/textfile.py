"""Reading one delimited text file into an Arrow table of strings, with errors that name the file, line and column.

Every column is read as a string; :mod:`recstack.data.sources.columns` converts them afterwards, so that a bad value
is reported with its line number instead of a bare Arrow message. Arrow's reader does the work (multi-threaded C++),
which keeps ML-100K well under a second and ML-20M within seconds.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from recstack.data.schema import DataError

# Stands in for a multi-character delimiter such as ML-1M's "::", which Arrow's reader does not support. The ASCII
# unit separator does not occur in any text data set we read.
_UNIT_SEPARATOR = "\x1f"
_CHUNK = 1 << 24


def _check_not_empty(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); expected a header line and rows of data")


def locate_bad_utf8(path: Path) -> tuple[int, int] | None:
    """Byte offset and 1-based line of the first byte sequence that is not UTF-8, or None when the file is clean."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    lines = 1
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                return offset + err.start, lines + chunk[: err.start].count(b"\n")
            offset += len(chunk)
            lines += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as err:  # a truncated multi-byte sequence at the very end
            return offset - len(decoder.getstate()[0]) + err.start, lines
    return None


def _first_line_with_wrong_width(
    data: bytes, delimiter: str, n_columns: int, *, encoding: str, quoting: bool
) -> tuple[int, str]:
    # Only on the error path: Python's csv module counts lines the way the file's author sees them.
    reader = csv.reader(
        io.StringIO(data.decode(encoding, errors="replace"), newline=""),
        delimiter=delimiter,
        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE,
    )
    for row in reader:
        if row and len(row) != n_columns:
            return reader.line_num, delimiter.join(row)[:80]
    return reader.line_num, ""


def read_header(path: Path, delimiter: str, encoding: str = "utf-8", *, quoting: bool = False) -> list[str]:
    """The names on the first line of a delimited file (whitespace around each name stripped).

    ``quoting``: the names may be double-quoted (CSV written with every field quoted).
    """
    _check_not_empty(path)
    with path.open("rb") as handle:
        first = handle.readline()
    try:
        text = first.decode(encoding).lstrip("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: line 1 (the header), byte offset {err.start}: not valid {encoding}; "
            f"re-save the file as {encoding}"
        ) from None
    names = next(csv.reader([text], delimiter=delimiter)) if quoting else text.split(delimiter)
    return [name.strip() for name in names]


def read_delimited(
    path: Path,
    delimiter: str,
    column_names: Sequence[str],
    *,
    header: bool,
    encoding: str = "utf-8",
    quoting: bool = True,
    numeric: Sequence[str] = (),
) -> pa.Table:
    """Read ``path`` into a table whose columns (``column_names``) are large strings, ``numeric`` ones float64.

    ``header``: the file's first line holds column names (skipped here; read them with :func:`read_header`).
    ``quoting``: honour double quotes (CSV); off for tab- or pipe-separated formats where a quote is plain text.
    Empty fields become empty strings, never nulls, so that a missing value is caught by the column checks.
    ``numeric``: columns Arrow parses as float64 straight away (8 bytes a row instead of a string); when one holds
    something else the file is read again all as strings, so the column checks can name the bad line.
    """
    _check_not_empty(path)
    names = list(column_names)
    multi_char = len(delimiter) > 1
    source: str | io.BytesIO = str(path)
    raw: bytes | None = None
    if multi_char:
        raw = path.read_bytes().replace(delimiter.encode(encoding), _UNIT_SEPARATOR.encode())
        source = io.BytesIO(raw)
    read_options = pacsv.ReadOptions(column_names=names, skip_rows=1 if header else 0, encoding=encoding)
    parse_options = pacsv.ParseOptions(
        delimiter=_UNIT_SEPARATOR if multi_char else delimiter, quote_char='"' if quoting else False
    )
    convert_options = pacsv.ConvertOptions(
        column_types={n: pa.float64() if n in numeric else pa.large_string() for n in names},
        quoted_strings_can_be_null=False,
    )
    try:
        table = pacsv.read_csv(
            source, read_options=read_options, parse_options=parse_options, convert_options=convert_options
        )
    except pa.ArrowInvalid as err:
        message = str(err)
        if numeric and "conversion error to double" in message:
            return read_delimited(path, delimiter, names, header=header, encoding=encoding, quoting=quoting)
        if "UTF8" in message or "UTF-8" in message:
            where = locate_bad_utf8(path) if encoding.lower().replace("-", "") == "utf8" else None
            if where is not None:
                offset, line = where
                raise DataError(
                    f"{path}: line {line}, byte offset {offset}: not valid UTF-8; re-save the file as UTF-8 "
                    "(or, for a known Latin-1 format, use its loader)"
                ) from None
        if "Expected" in message and "columns" in message:
            data = raw if raw is not None else path.read_bytes()
            line, text = _first_line_with_wrong_width(
                data, parse_options.delimiter, len(names), encoding=encoding, quoting=quoting
            )
            raise DataError(
                f"{path}: line {line}: expected {len(names)} fields {names} separated by {delimiter!r}, found {text.replace(_UNIT_SEPARATOR, delimiter)!r}"
            ) from None
        raise DataError(f"{path}: could not be parsed as {delimiter!r}-separated text: {message}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows of data" + (" below the header" if header else "") + "; the file is empty")
    return table
