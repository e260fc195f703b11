"""Server access logs into the event lake (``recstack-data ingest-logs``): the requests the rules name become ``events``
rows (``source = "log"``), minimised exactly as the API door minimises them (recstack.collect.intake):

* the user: the rule's ``user`` group, else the log's remote-user field, as a keyed pseudonym
  (``Pseudonymiser.user``); without one, a visitor pseudonym of ``ip + "|" + User-Agent``
  (``Pseudonymiser.visitor``). A log has no cookie, so this visitor is a per-client-address proxy: people behind one
  NAT with the same browser are one visitor, one person on two networks is two;
* the IP: ``minimise_ip(ip, ip_mode)`` (dropped by default); the User-Agent: its device class, browser and OS
  families only (bots are dropped); the referrer: its host only. ``local_hour`` stays empty (a log's time zone is the
  server's, not the visitor's), and so do the GeoIP columns.

``received_ts`` and ``client_ts`` are the line's time, so the lake's hour partitions follow the log. Idempotent: the
lines are cut into chunks of :data:`CHUNK_LINES`, chunk ``i`` is written as ``part-log-<file>-<i>`` in each hour it
touches, and ``event_id`` is a keyed hash of (file, line number, line). ``<file>`` is a keyed hash of the log's first
64 KiB, not of its name: a re-import of the same log (renamed by logrotate, gzipped, or grown past 64 KiB since)
replaces its files, and two servers' ``access.log`` never overwrite each other. Files of an earlier import of the
same log that this one did not rewrite are removed at the end, so a re-import with changed rules leaves exactly the
new result. An import that fails half-way leaves the chunks it wrote; running it again completes it.

Speed: everything is column-wise per chunk (recstack.collect.log_formats); Python runs once per distinct
User-Agent, user, visitor, IP and referrer, never once per line.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recstack.collect.log_formats import FORMATS, LogError, head, parse, read_chunks, read_pieces, split_lines
from recstack.collect.log_rules import LogRule, apply_rules
from recstack.collect.network import minimise_ip, referrer_host
from recstack.collect.pseudonymise import Pseudonymiser
from recstack.collect.settings import CollectSettings
from recstack.collect.user_agent import UserAgentClass, classify
from recstack.data.lake import parts, write_rows

CHUNK_LINES = 1 << 18  # changing it changes the part names: a re-import would then add instead of replace
MALFORMED_SHOWN = 20
_MISSING = object()
_CACHE_MAX = 1_000_000  # distinct values remembered across chunks (users, visitors, IPs) before starting afresh


@dataclass(frozen=True)
class ImportSummary:
    """What one import did with every line of the log."""

    path: Path
    fmt: str
    lake: Path
    lines: int
    events: int
    by_type: dict[str, int]
    skipped: dict[str, int]  # malformed | bot | unmatched | status
    malformed_lines: tuple[int, ...]  # the first MALFORMED_SHOWN line numbers (1-based)
    files: tuple[Path, ...]
    removed: int  # files of an earlier import of this log that this one did not rewrite
    problems: tuple[str, ...]
    seconds: float

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        """What ``recstack-data ingest-logs`` prints."""
        s = self.skipped
        types = ", ".join(f"{name} {count:,}" for name, count in sorted(self.by_type.items())) or "none"
        shown = ", ".join(map(str, self.malformed_lines))
        more = f" (first {MALFORMED_SHOWN} of {s['malformed']:,})" if s["malformed"] > len(self.malformed_lines) else ""
        out = [
            f"{self.path} ({self.fmt}): {self.lines:,} lines read, {self.events:,} events written",
            f"  events by type: {types}",
            f"  skipped: {s['unmatched']:,} unmatched by any rule, {s['bot']:,} bots, "
            f"{s['status']:,} with a status the rule does not accept (default: only 2xx), {s['malformed']:,} malformed, "
            f"{s.get('erased', 0):,} of erased people, {s.get('no_consent', 0):,} without analytics consent",
        ]
        if s["malformed"]:
            out.append(f"  malformed lines: {shown}{more}")
        out.append(
            f"  files written: {len(self.files)} under {self.lake / 'events'} "
            f"(earlier files of this log removed: {self.removed})"
        )
        out += [f"  warning: {problem}" for problem in self.problems]
        out.append(f"  {self.seconds:.2f} s, {self.lines_per_s:,.0f} lines/s")
        return "\n".join(out)


@dataclass
class _Tally:
    """What happened to the lines of one chunk, or of the file so far."""

    lines: int = 0
    skipped: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("malformed", "bot", "unmatched", "status", "erased", "no_consent"), 0)
    )
    malformed_lines: list[int] = field(default_factory=list)
    by_type: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def add(self, chunk: _Tally) -> None:
        self.lines += chunk.lines
        for counts, more in ((self.skipped, chunk.skipped), (self.by_type, chunk.by_type)):
            for key, count in more.items():
                counts[key] = counts.get(key, 0) + count
        self.malformed_lines = (self.malformed_lines + chunk.malformed_lines)[:MALFORMED_SHOWN]
        self.files += chunk.files


def import_log(
    path: str | Path,
    fmt: str,
    rules: tuple[LogRule, ...],
    settings: CollectSettings,
    *,
    lines_per_chunk: int = CHUNK_LINES,
    workers: int | None = None,
    erased: frozenset[str] = frozenset(),
    consented: Callable[[list[str]], set[str]] | None = None,
) -> ImportSummary:
    """Read ``path`` (plain or gzip), write its events to ``settings.lake`` and say what happened to every line.

    ``workers`` chunks are processed at once (default: the CPU count, at most 4) while the next one is read: the Arrow
    and DuckDB kernels release the GIL, so threads use every core; Python's share (User-Agent parsing, HMACs) does not
    parallelise and is kept small by running once per distinct value. ``erased``: pseudonyms of erased people (the
    tombstone set); their lines are skipped, so re-importing an old log never brings an erased person back.
    ``consented``: when consent is required, which of a chunk's subjects gave analytics consent (the same records
    the collector reads); the others' lines are skipped and counted, as the collector drops their events."""
    if fmt not in FORMATS:
        raise LogError(f"unknown log format {fmt!r}; use one of {list(FORMATS)}")
    if not rules:
        raise LogError("no rules: nothing would be imported (give a rules file, e.g. configs/log_rules/demo.yaml)")
    started = time.perf_counter()
    key = settings.hmac_key()
    door = _Minimiser(Pseudonymiser(key), settings.ip_mode)
    workers = workers or min(4, os.cpu_count() or 1)
    first = head(path)  # also: a missing file fails here, before anything is written
    name = hmac.digest(key, b"recstack-log-file:" + first, "sha256").hex()[:16]
    salt = hmac.digest(key, b"recstack-log-event:" + first, "sha256").hex()
    total, problems = _Tally(), []
    with ThreadPoolExecutor(workers, thread_name_prefix="ingest-logs") as pool:
        running: deque[Future[_Tally]] = deque()
        for index, (data, ends) in enumerate(read_chunks(read_pieces(path, problems), lines_per_chunk)):
            chunk = _Chunk(data, ends, index * lines_per_chunk + 1, f"log-{name}-{index:05d}", salt)
            running.append(pool.submit(_import_chunk, chunk, fmt, rules, door, settings.lake, erased, consented))
            while len(running) > workers:
                total.add(running.popleft().result())
        while running:
            total.add(running.popleft().result())
    removed = _remove_stale(settings.lake, name, set(total.files))
    return ImportSummary(
        path=Path(path),
        fmt=fmt,
        lake=Path(settings.lake),
        lines=total.lines,
        events=sum(total.by_type.values()),
        by_type=total.by_type,
        skipped=total.skipped,
        malformed_lines=tuple(total.malformed_lines),
        files=tuple(total.files),
        removed=removed,
        problems=tuple(problems),
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class _Chunk:
    data: memoryview
    ends: np.ndarray  # the position of each newline in data
    first_line: int  # the line number of its first line (1-based)
    name: str  # its part name in every hour it touches
    salt: str  # the file's event-id key


def _import_chunk(
    chunk: _Chunk,
    fmt: str,
    rules: tuple[LogRule, ...],
    door: _Minimiser,
    lake: str,
    erased: frozenset[str],
    consented: Callable[[list[str]], set[str]] | None,
) -> _Tally:
    tally = _Tally()
    lines = split_lines(chunk.data, chunk.ends)
    rows = _events(lines, parse(lines, fmt), chunk.first_line, rules, door, chunk.salt, tally)
    if erased and rows.num_rows:
        gone = pc.is_in(rows["user_id"], value_set=pa.array(sorted(erased), pa.string()))
        if pc.any(gone).as_py():
            for counted in pc.value_counts(rows["event_type"].filter(gone)).to_pylist():
                tally.by_type[counted["values"]] -= counted["counts"]
            tally.skipped["erased"] = int(pc.sum(gone).as_py())
            rows = rows.filter(pc.invert(gone))
    if consented is not None and rows.num_rows:
        subjects = pc.unique(rows["user_id"]).to_pylist()
        allowed = consented(subjects)
        refused = pc.invert(pc.is_in(rows["user_id"], value_set=pa.array(sorted(allowed), pa.string())))
        if pc.any(refused).as_py():
            for counted in pc.value_counts(rows["event_type"].filter(refused)).to_pylist():
                tally.by_type[counted["values"]] -= counted["counts"]
            tally.skipped["no_consent"] = int(pc.sum(refused).as_py())
            rows = rows.filter(pc.invert(refused))
    tally.lines = len(lines)
    tally.files = write_rows(lake, "events", rows, name=chunk.name)
    return tally


def _events(
    lines: pa.Array,
    parsed: pa.Table,
    first_line: int,
    rules: tuple[LogRule, ...],
    door: _Minimiser,
    salt: str,
    tally: _Tally,
) -> pa.Table:
    """The events rows of one chunk; what was skipped and why goes to ``tally``. The filters (malformed, bot, rules,
    status) narrow ``row`` (the chunk rows still in play); the columns are taken once, at the rows that remain."""
    column = {name: parsed[name].combine_chunks() for name in parsed.column_names}
    ok = column["ok"].to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~ok)
    tally.skipped["malformed"] += len(bad)
    room = MALFORMED_SHOWN - len(tally.malformed_lines)
    tally.malformed_lines += (bad[:room] + first_line).tolist() if room > 0 else []
    row = np.flatnonzero(ok)

    agents, classes, class_of = door.user_agents(column["user_agent"].take(pa.array(row)))
    bot = np.array([c.is_bot for c in classes], bool)[class_of]
    tally.skipped["bot"] += int(bot.sum())
    row, class_of = row[~bot], class_of[~bot]

    at = pa.array(row)
    match = apply_rules(rules, column["method"].take(at), column["target"].take(at), column["status"].take(at))
    tally.skipped["unmatched"] += len(row) - len(match.rows)
    tally.skipped["status"] += int((~match.status_ok).sum())
    keep = match.rows[match.status_ok]
    row, class_of = row[keep], class_of[keep]
    at = pa.array(row)
    ok_match = pa.array(match.status_ok)
    event_type = pa.array([rule.event_type for rule in rules], pa.string()).take(
        pa.array(match.rule[match.status_ok].astype(np.int32))
    )
    for counted in pc.value_counts(event_type).to_pylist():
        tally.by_type[counted["values"]] = tally.by_type.get(counted["values"], 0) + counted["counts"]

    ip, when = column["ip"].take(at), column["time"].take(at)
    user = pc.coalesce(match.user.filter(ok_match), column["remote_user"].take(at).cast(pa.string()))
    anonymous = user.is_null()
    return pa.table(
        {
            "event_id": _event_ids(lines.take(at), row + first_line, salt),
            "user_id": pc.coalesce(door.users(user), door.visitors(ip, agents, class_of, anonymous)),
            "anonymous": anonymous,
            "item_id": match.item.filter(ok_match),
            "event_type": event_type,
            "client_ts": when,
            "received_ts": when,
            "source": pa.array(["log"]).take(pa.array(np.zeros(len(row), np.int32))),
            **{
                name: pa.array([getattr(c, name) for c in classes], pa.string()).take(pa.array(class_of))
                for name in ("device_class", "browser_family", "os_family")
            },
            "referrer_host": door.referrers(column["referrer"].take(at)),
            "ip": door.ips(ip),
        }
    )


def _event_ids(lines: pa.Array, numbers: np.ndarray, salt: str) -> pa.Array:
    """``sha256(salt, line number, line)`` in DuckDB (vectorised), 32 hex characters like the other ids.
    Keyed by the salt, so nobody holding the lake can test a guessed line (and its raw IP) against an id."""
    import duckdb

    with duckdb.connect(config={"threads": 1}) as con:  # parallel by chunk: more threads only contend
        con.register("ev", pa.table({"n": pa.array(numbers, pa.int64()), "line": lines}))
        out = con.sql(
            "SELECT left(sha256($salt || n::VARCHAR || chr(31) || line), 32) AS id FROM ev", params={"salt": salt}
        )
        return out.to_arrow_table()["id"].combine_chunks().cast(pa.string())


class _Minimiser:
    """Per-value minimisation, run once per distinct value of a chunk and remembered across chunks."""

    def __init__(self, pseudonymiser: Pseudonymiser, ip_mode: str) -> None:
        self._pseudonymiser = pseudonymiser
        self._ip_mode = ip_mode
        self._caches: dict[str, dict] = {"ua": {}, "user": {}, "visitor": {}, "ip": {}, "referrer": {}}
        # One chunk at a time per cache: a second chunk waits for the values the first is computing instead of
        # computing them again (the loops hold the GIL anyway, so waiting costs nothing)
        self._locks = {name: threading.Lock() for name in self._caches}

    def _map(self, values: list, cache_name: str, fn: Callable) -> list:
        """``fn`` of each value, from the cache when seen before."""
        cache = self._caches[cache_name]
        with self._locks[cache_name]:
            if len(cache) > _CACHE_MAX:
                cache.clear()
            mapped = []
            for value in values:
                got = cache.get(value, _MISSING)
                if got is _MISSING:
                    got = cache[value] = fn(value)
                mapped.append(got)
            return mapped

    def _strings(self, values: pa.Array, cache_name: str, fn: Callable[[str], str | None]) -> pa.Array:
        """``fn`` once per distinct value of ``values``, spread back to the rows (null stays null)."""
        encoded = pc.dictionary_encode(values)
        mapped = self._map(encoded.dictionary.to_pylist(), cache_name, fn)
        return pa.array(mapped, pa.string()).take(encoded.indices)

    def user_agents(self, values: pa.Array) -> tuple[list[str], list[UserAgentClass], np.ndarray]:
        """The distinct strings, their classes and each row's index into them; classify runs once per string."""
        encoded = pc.dictionary_encode(values.fill_null(""))
        agents = encoded.dictionary.to_pylist()
        return agents, self._map(agents, "ua", classify), encoded.indices.to_numpy(zero_copy_only=False)

    def users(self, values: pa.Array) -> pa.Array:
        return self._strings(values, "user", self._pseudonymiser.user)

    def visitors(self, ip: pa.Array, agents: list[str], agent_of: np.ndarray, anonymous: pa.Array) -> pa.Array:
        """``Pseudonymiser.visitor(ip + "|" + user_agent)`` where ``anonymous``, else null. Rows are grouped by (IP
        index, User-Agent index) pairs, so no "ip|ua" string is built or hashed per row."""
        encoded = pc.dictionary_encode(ip.fill_null(""))
        ips = encoded.dictionary.to_pylist()
        pair = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64) * len(agents) + agent_of
        pair = np.where(anonymous.to_numpy(zero_copy_only=False), pair, -1)
        distinct, index = np.unique(pair, return_inverse=True)
        clients = [f"{ips[k // len(agents)]}|{agents[k % len(agents)]}" if k >= 0 else None for k in distinct]
        ids = self._map(clients, "visitor", self._visitor)
        return pa.array(ids, pa.string()).take(pa.array(index.reshape(-1)))

    def _visitor(self, client: str | None) -> str | None:
        return None if client is None else self._pseudonymiser.visitor(client)

    def ips(self, values: pa.Array) -> pa.Array:
        if self._ip_mode == "drop":
            return pa.nulls(len(values), pa.string())
        return self._strings(values, "ip", lambda ip: minimise_ip(ip, self._ip_mode))  # type: ignore[arg-type]

    def referrers(self, values: pa.Array) -> pa.Array:
        return self._strings(values, "referrer", referrer_host)


def _remove_stale(lake: str | Path, name: str, written: set[Path]) -> int:
    """Delete this log's files from an earlier import that this import did not rewrite."""
    stale = [p for p in parts(lake, "events") if p.name.startswith(f"part-log-{name}-") and p not in written]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
