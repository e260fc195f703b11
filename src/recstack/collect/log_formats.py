"""Web-server access logs read and parsed column-wise: a chunk of lines is one Arrow string column, and every field is
cut out of it with vectorised kernels (Arrow's RE2 for the text formats, DuckDB's JSON reader for ``json``), because
Python spends microseconds per line on interpreter overhead alone and a busy server writes millions of lines a day.

Formats:

* ``combined`` (Apache/Nginx default): ``ip ident user [time] "request" status bytes "referer" "user-agent"``; fields
  an Nginx ``log_format`` adds after the User-Agent are ignored.
* ``common``: the same without referrer and User-Agent (so no bot filter: nothing tells a bot apart).
* ``json``: one JSON object per line; the keys read are :data:`JSON_KEYS` (first present wins). ``time`` is ISO 8601
  (an offset or ``Z``; none means UTC), Apache's ``10/Oct/2026:13:55:36 +0100`` or epoch seconds (Nginx ``$msec``).
  ``request`` (``"GET /path HTTP/1.1"``) or ``method`` plus ``path``/``request_uri``/``uri``/``url``; ``status`` a
  number or a string; the signed-in user is ``user_id``, ``user`` or ``remote_user``. No time or no status: malformed.

Every parser returns :data:`PARSED_SCHEMA` row for row; a line that is not the format (cut off, noise, an unparsable
time, no status) has ``ok = false`` and is reported by its line number, never raised.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FORMATS: tuple[str, ...] = ("combined", "common", "json")
APACHE_TIME = "%d/%b/%Y:%H:%M:%S %z"
READ_BYTES = 8 << 20
HEAD_BYTES = 1 << 16

PARSED_SCHEMA = pa.schema(
    [
        ("ok", pa.bool_()),  # false: the line is not the format (malformed)
        ("time", pa.timestamp("ms", tz="UTC")),
        ("ip", pa.large_string()),
        ("remote_user", pa.large_string()),  # the authenticated user field; null for "-"
        ("method", pa.large_string()),
        ("target", pa.large_string()),  # the request target: path and query string, as logged
        ("status", pa.int32()),
        # referrer and user_agent as logged: "-" (none) needs no special case, it has no host and no classes
        ("referrer", pa.large_string()),
        ("user_agent", pa.large_string()),
    ]
)

JSON_KEYS: dict[str, tuple[str, ...]] = {
    "time": ("time", "timestamp", "@timestamp", "time_iso8601", "time_local", "ts", "msec"),
    "ip": ("remote_addr", "client_ip", "ip"),
    "remote_user": ("user_id", "user", "remote_user"),
    "request": ("request",),
    "method": ("method", "request_method"),
    "target": ("path", "request_uri", "uri", "url"),
    "status": ("status",),
    "referrer": ("http_referer", "referer", "referrer"),
    "user_agent": ("http_user_agent", "user_agent"),
}

_Q = r'(?:[^"\\]|\\.)*'  # a quoted field's text, with Apache's \" and \\ escapes
_PREFIX = r"^(?P<ip>\S+) \S+ (?P<remote_user>\S+) \[(?P<time>[^\]]*)\] "
_STATUS = r"(?P<status>\d{3}) (?:\d+|-)"
_REQUEST = r"^(?P<method>[A-Z]+) (?P<target>\S+)"
_FULL = {
    "common": _PREFIX + f'"(?P<request>{_Q})" ' + _STATUS,
    "combined": _PREFIX + f'"(?P<request>{_Q})" ' + _STATUS + f' "(?P<referrer>{_Q})" "(?P<user_agent>{_Q})"',
}


class LogError(ValueError):
    """A log that cannot be read at all (missing, not a file, unknown format); the message says which."""


def read_pieces(path: str | Path, problems: list[str]) -> Iterator[bytes]:
    """The file's bytes in pieces, gunzipped when it starts with the gzip magic (whatever its name; concatenated
    members too). A gzip stream that ends early or turns corrupt (a file still being compressed) adds a line to
    ``problems`` and ends the pieces: what came before it is kept."""
    path = Path(path)
    if not path.is_file():
        raise LogError(f"no such log file: {path}")
    with open(path, "rb") as raw:
        if raw.read(2) != b"\x1f\x8b":
            raw.seek(0)
            while piece := raw.read(READ_BYTES):
                yield piece
            return
        raw.seek(0)
        inflate, member_open, pending = zlib.decompressobj(wbits=31), False, b""
        while pending or (pending := raw.read(READ_BYTES // 8)):
            try:
                out = inflate.decompress(pending, READ_BYTES)  # bounded: a small file cannot fill the memory
            except zlib.error as error:
                problems.append(f"corrupt gzip data ({error}); the lines before it are imported")
                return
            member_open = not inflate.eof
            if inflate.eof:  # a member ends; what follows is the next member
                pending, inflate = inflate.unused_data, zlib.decompressobj(wbits=31)
            else:
                pending = inflate.unconsumed_tail
            if out:
                yield out
        if member_open:
            problems.append("the gzip stream ends early (still being written?); the lines before the cut are imported")


def head(path: str | Path, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of the log's (decompressed) content: what identifies a log whatever its name."""
    out = b""
    for piece in read_pieces(path, []):
        out += piece
        if len(out) >= size:
            break
    return out[:size]


def read_chunks(pieces: Iterable[bytes], lines_per_chunk: int) -> Iterator[tuple[memoryview, np.ndarray]]:
    """The pieces cut into chunks of exactly ``lines_per_chunk`` lines (the last may be shorter), so chunk ``i`` starts
    at line ``i * lines_per_chunk + 1`` and reading a file again cuts it the same way. Each chunk comes with the
    positions of its newlines (found once, here, for :func:`split_lines`)."""
    pending: list[bytes] = []
    pending_ends: list[np.ndarray] = []  # newline positions of the pending bytes, found piece by piece
    size = count = 0
    for piece in pieces:
        pending.append(piece)
        pending_ends.append(_newlines(piece) + size)
        size += len(piece)
        count += len(pending_ends[-1])
        if count >= lines_per_chunk:
            data = memoryview(b"".join(pending))  # slices of a memoryview are views: no copy per chunk
            ends = np.concatenate(pending_ends)
            start = used = 0
            while count - used >= lines_per_chunk:
                cut = int(ends[used + lines_per_chunk - 1]) + 1
                yield data[start:cut], ends[used : used + lines_per_chunk] - start
                start, used = cut, used + lines_per_chunk
            pending, pending_ends = [bytes(data[start:])], [ends[used:] - start]
            size, count = len(pending[0]), count - used
    tail = memoryview(b"".join(pending))
    if len(tail):
        yield tail, np.concatenate(pending_ends)


def _newlines(data: bytes | memoryview) -> np.ndarray:
    return np.flatnonzero(np.frombuffer(data, np.uint8) == 10)


def split_lines(data: bytes | memoryview, ends: np.ndarray | None = None) -> pa.LargeStringArray:
    """One string per line, each with its line ending (parsers ignore it; trimming would copy every byte). Bytes
    that are not UTF-8 become U+FFFD, so the line is still read. ``ends``: the newline positions, when known."""
    data = memoryview(data)
    ends = (_newlines(data) if ends is None else ends) + 1
    if len(data) and data[-1] != 10:
        ends = np.append(ends, len(data))
    offsets = pa.py_buffer(np.concatenate([[0], ends]).astype(np.int64))
    raw = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(ends), [None, offsets, pa.py_buffer(data)])
    try:
        return raw.cast(pa.large_string())
    except pa.ArrowInvalid:
        return split_lines(bytes(data).decode("utf-8", "replace").encode())


def parse(lines: pa.LargeStringArray, fmt: str) -> pa.Table:
    """:data:`PARSED_SCHEMA` for each line, in order."""
    if fmt == "json":
        return _parse_json(lines)
    if fmt not in _FULL:
        raise LogError(f"unknown log format {fmt!r}; use one of {list(FORMATS)}")
    return _parse_apache(lines, fmt)


def _parse_apache(lines: pa.LargeStringArray, fmt: str) -> pa.Table:
    # Fast path: split at the quotes and read each part with a short regex of at most 4 groups, which RE2 runs
    # one-pass (one regex with 8 groups is 4x slower). Part k of every line is taken from the split's flat values at
    # its list offset + k (null where the line has fewer parts), which copies less than list_element. Lines the split
    # does not fit (an escaped quote: a part ends in a backslash; a malformed line) take the full regex instead.
    split = pc.split_pattern(lines, '"')
    offsets = split.offsets.to_numpy()
    starts, counts = offsets[:-1], np.diff(offsets)
    part = [split.values.take(pa.array(starts + k, mask=counts <= k)) for k in range(6 if fmt == "combined" else 3)]
    prefix = pc.extract_regex(part[0], _PREFIX + "$")
    middle = pc.extract_regex(part[2], "^ " + _STATUS + (" $" if fmt == "combined" else ""))
    good = pc.and_(prefix.is_valid(), middle.is_valid())
    for i in (1, 3, 5) if fmt == "combined" else (1,):
        good = pc.and_(good, pc.invert(pc.ends_with(part[i], "\\")))
    if fmt == "combined":
        good = pc.and_(good, pc.equal(part[4], " "))
    good = good.fill_null(False)
    fields = {
        "ip": pc.struct_field(prefix, "ip"),
        "remote_user": pc.struct_field(prefix, "remote_user"),
        "time": pc.struct_field(prefix, "time"),
        "request": part[1],
        "status": pc.struct_field(middle, "status"),
    }
    if fmt == "combined":
        fields.update(referrer=part[3], user_agent=part[5])
    ok = good.to_numpy(zero_copy_only=False)
    slow_rows = np.flatnonzero(~ok)
    if len(slow_rows):
        slow = pc.extract_regex(lines.take(pa.array(slow_rows)), _FULL[fmt])
        ok[slow_rows] = slow.is_valid().to_numpy(zero_copy_only=False)
        if ok[slow_rows].any():  # else those rows are malformed and their fields are never read
            redo = pc.invert(good)
            fields = {name: pc.replace_with_mask(v, redo, pc.struct_field(slow, name)) for name, v in fields.items()}
    request = pc.extract_regex(fields["request"], _REQUEST)  # "-" (no request line): null method and target
    time = _apache_time(fields["time"])
    missing = pa.nulls(len(lines), pa.large_string())
    return pa.table(
        {
            "ok": pc.and_(pa.array(ok), time.is_valid()),
            "time": time,
            "ip": fields["ip"],
            "remote_user": _none_if_dash(fields["remote_user"]),
            "method": pc.struct_field(request, "method"),
            "target": pc.struct_field(request, "target"),
            "status": pc.cast(fields["status"], pa.int32()),
            "referrer": fields.get("referrer", missing),
            "user_agent": fields.get("user_agent", missing),
        },
        schema=PARSED_SCHEMA,
    )


def _apache_time(text: pa.Array) -> pa.Array:
    """``10/Oct/2026:13:55:36 +0100`` -> UTC ms; parsed once per distinct second (a log repeats them)."""
    encoded = pc.dictionary_encode(text)
    parsed = pc.strptime(encoded.dictionary, format=APACHE_TIME, unit="ms", error_is_null=True)
    return parsed.take(encoded.indices).cast(pa.timestamp("ms", tz="UTC"))


def _none_if_dash(text: pa.Array) -> pa.Array:
    """Servers write ``-`` (or nothing) for a field they do not have."""
    return pc.if_else(pc.is_in(text, pa.array(["-", ""], pa.large_string())), pa.scalar(None, text.type), text)


def _parse_json(lines: pa.LargeStringArray) -> pa.Table:
    import duckdb

    # One parse per line into a struct of every accepted key (json_transform), then the first key present wins.
    keys = sorted({key for aliases in JSON_KEYS.values() for key in aliases})
    shape = json.dumps(dict.fromkeys(keys, "VARCHAR")).replace("'", "''")
    picks = {
        name: "coalesce(" + ", ".join(f's."{key}"' for key in aliases) + ")" for name, aliases in JSON_KEYS.items()
    }
    request = f"regexp_extract({picks['request']}, '{_REQUEST}', ['method', 'target'])"
    time = picks["time"]
    con = duckdb.connect(config={"threads": 1})  # parallel by chunk (log_import): more threads only contend
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("src", pa.table({"line": lines}))
        sql = f"""
            WITH j AS (
                SELECT CASE WHEN json_valid(line) AND starts_with(ltrim(line), '{{')
                            THEN json_transform(line, '{shape}') END AS s
                FROM src
            ), f AS (
                SELECT s, {request} AS req, {time} AS t FROM j
            )
            SELECT
                epoch_ms(coalesce(try_cast(t AS TIMESTAMPTZ), try_strptime(t, '{APACHE_TIME}'),
                                  CASE WHEN regexp_full_match(t, '[0-9]{{9,10}}(\\.[0-9]+)?')
                                       THEN to_timestamp(t::DOUBLE) END)) AS time,
                {picks["ip"]} AS ip,
                {picks["remote_user"]} AS remote_user,
                coalesce({picks["method"]}, nullif(req.method, '')) AS method,
                coalesce({picks["target"]}, nullif(req.target, '')) AS target,
                try_cast({picks["status"]} AS INTEGER) AS status,
                {picks["referrer"]} AS referrer,
                {picks["user_agent"]} AS user_agent
            FROM f
        """
        out = con.sql(sql).to_arrow_table().combine_chunks()
    finally:
        con.close()
    status = out["status"].cast(pa.int32())
    in_range = pc.and_(pc.greater_equal(status, 100), pc.less(status, 600)).fill_null(False)
    columns = {"ok": pc.and_(out["time"].is_valid(), in_range), "status": status}
    columns["time"] = out["time"].cast(pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    for name in ("ip", "method", "target", "referrer", "user_agent"):
        columns[name] = out[name].cast(pa.large_string())
    columns["remote_user"] = _none_if_dash(out["remote_user"].cast(pa.large_string()))
    return pa.table({field.name: columns[field.name] for field in PARSED_SCHEMA}, schema=PARSED_SCHEMA)
