"""Privacy operations on the lake: erase a subject's rows (``recstack-collect erase``) and purge expired partitions
(``recstack-collect purge``). Both leave an audit row (recstack.data.lake AUDIT_SCHEMA).

Every change is atomic per file: a rewritten file replaces the old one under the same name (temporary, fsync,
rename), a file left empty is deleted, and a partition is renamed out of the glob before it is removed, so a reader
(DuckDB, ``prepare data=lake``, the consumer's recovery) sees the old file or the new one, never a half.

Erasure here is the lake's half; ``recstack-collect erase`` first adds the pseudonyms to the tombstone set
(records.tombstone_key) and waits until the consumer has stored what was in flight (consumer.wait_until_stored),
so no row of the subject reaches the lake after the rewrite.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recstack.collect.consumer import REJECTED_DIR, SUBJECT_COLUMNS, parse_id
from recstack.data.lake import TABLES, fsync_dir, parts, write_part, write_rows

PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")
_DT = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class ErasureReport:
    subjects: list[str]
    rows_removed: int = 0
    files_rewritten: int = 0
    files_deleted: int = 0
    rejected_deleted: int = 0  # malformed entries under _rejected/ that mentioned a subject
    partitions: dict[str, list[str]] = field(default_factory=dict)  # subject -> partitions touched

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class PurgeReport:
    cutoff: str  # partitions of days before this date were deleted
    partitions: list[str]
    rejected_deleted: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def linked_visitors(lake: str | Path, pseudonyms: set[str]) -> set[str]:
    """Pseudonyms the aliases table links to any of these: visitors ``POST /identify`` linked to them (the same
    person's events from before they signed in) and duplicate accounts ``recstack-profiles`` merged into them, followed
    to the end (the visitors of a merged duplicate account too)."""
    files = [str(p) for p in parts(lake, "aliases")]
    if not files or not pseudonyms:
        return set()
    found = set(pseudonyms)
    frontier = set(pseudonyms)
    with duckdb.connect() as con:
        while frontier:
            con.register("subjects", pa.table({"id": sorted(frontier)}))
            rows = con.execute(
                "SELECT DISTINCT anonymous_id FROM read_parquet(?) WHERE user_id IN (SELECT id FROM subjects)", [files]
            ).fetchall()
            con.unregister("subjects")
            frontier = {row[0] for row in rows} - found
            found |= frontier
    return found - pseudonyms


def _holders(lake: str | Path, table: str, pseudonyms: set[str]) -> dict[Path, set[str]]:
    """The files of ``table`` holding rows of these pseudonyms, and whose. Only the subject columns are read."""
    files = [str(p) for p in parts(lake, table)]
    if not files:
        return {}
    selects = " UNION ".join(
        f"SELECT filename, {col} AS subject FROM read_parquet($files, filename=true) "
        f"WHERE {col} IN (SELECT id FROM subjects)"
        for col in SUBJECT_COLUMNS[table]
    )
    with duckdb.connect() as con:
        con.register("subjects", pa.table({"id": sorted(pseudonyms)}))
        rows = con.execute(selects, {"files": files}).fetchall()
    out: dict[Path, set[str]] = {}
    for filename, subject in rows:
        out.setdefault(Path(filename), set()).add(subject)
    return out


def _partition(lake: Path, path: Path) -> str:
    return path.parent.relative_to(lake).as_posix()


def _rewrite_without(path: Path, table: str, value_set: pa.Array) -> tuple[int, bool]:
    """Rewrite one file without the subjects' rows, atomically under the same name. ``(rows removed, deleted)``."""
    data = pq.ParquetFile(path).read()
    hit = pc.is_in(data[SUBJECT_COLUMNS[table][0]], value_set=value_set)
    for col in SUBJECT_COLUMNS[table][1:]:
        hit = pc.or_(hit, pc.is_in(data[col], value_set=value_set))
    kept = data.filter(pc.invert(hit))
    removed = data.num_rows - kept.num_rows
    if removed == 0:
        return 0, False
    if kept.num_rows == 0:
        path.unlink()
        fsync_dir(path.parent)
        return removed, True
    write_part(kept, path.parent, name=path.name.removeprefix("part-").removesuffix(".parquet"))
    return removed, False


def erase(lake: str | Path, pseudonyms: set[str], audit: bool = True, now: datetime | None = None) -> ErasureReport:
    """Remove every events, aliases and impressions row of these pseudonyms (events.user_id, impressions.user_id;
    aliases.anonymous_id or user_id)
    and the malformed entries kept under ``_rejected/`` that mention them; one audit row per subject lists the
    partitions touched. Pass the visitor pseudonyms too (:func:`linked_visitors`) to erase a person's anonymous
    history."""
    lake = Path(lake)
    bad = sorted(p for p in pseudonyms if not PSEUDONYM.match(p))
    if bad:
        raise ValueError(f"not pseudonyms (32 lowercase hex characters): {bad}")
    subjects = sorted(pseudonyms)
    touched: dict[str, set[str]] = {s: set() for s in subjects}
    removed = rewritten = deleted = 0
    value_set = pa.array(subjects, pa.string())
    for table in SUBJECT_COLUMNS:
        for path, holders in _holders(lake, table, set(subjects)).items():
            n, gone = _rewrite_without(path, table, value_set)
            removed += n
            deleted += gone
            rewritten += not gone and n > 0
            for subject in holders:
                touched[subject].add(_partition(lake, path))
    rejected = 0
    rejected_dir = lake / REJECTED_DIR
    if rejected_dir.is_dir():
        needles = [s.encode() for s in subjects]
        for path in rejected_dir.glob("*.json"):
            if any(needle in path.read_bytes() for needle in needles):
                path.unlink()
                rejected += 1
    partitions = {s: sorted(p) for s, p in touched.items()}
    if audit and subjects:
        received = _ms(now)
        rows = [
            {"action": "erasure", "subject": s, "detail": json.dumps(partitions[s]), "received_ts": received}
            for s in subjects
        ]
        write_rows(lake, "audit", rows)
    return ErasureReport(subjects, removed, rewritten, deleted, rejected, partitions)


def purge(lake: str | Path, older_than_days: int, now: datetime | None = None) -> PurgeReport:
    """Delete the whole ``dt=`` partitions (every table but audit) of days before ``now - older_than_days`` and the
    malformed entries kept that long; one "purge" audit row lists the partitions when any were deleted."""
    if older_than_days < 1:
        raise ValueError(f"older_than must be at least 1 day, got {older_than_days}")
    lake = Path(lake)
    now = now or datetime.now(UTC)
    cutoff: date = (now - timedelta(days=older_than_days)).astimezone(UTC).date()
    gone: list[str] = []
    for table in TABLES:
        root = lake / table
        if table == "audit" or not root.is_dir():
            continue
        for directory in sorted(root.iterdir()):
            match = _DT.match(directory.name)
            if not match or date.fromisoformat(match[1]) >= cutoff:
                continue
            # Renamed first (one atomic step) so no reader globs a partition that is half removed.
            doomed = root / f".purging-{directory.name}-{uuid.uuid4().hex[:8]}"
            os.replace(directory, doomed)
            shutil.rmtree(doomed)
            gone.append(f"{table}/{directory.name}")
    cutoff_ms = int(datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC).timestamp() * 1000)
    rejected = 0
    rejected_dir = lake / REJECTED_DIR
    if rejected_dir.is_dir():
        for path in rejected_dir.glob("*.json"):
            try:
                old = parse_id(path.stem)[0] < cutoff_ms
            except ValueError:
                continue
            if old:
                path.unlink()
                rejected += 1
    if gone:
        row = {"action": "purge", "detail": json.dumps(gone), "received_ts": _ms(now)}
        write_rows(lake, "audit", [row])
    return PurgeReport(cutoff.isoformat(), gone, rejected)


def _ms(now: datetime | None) -> int:
    return int((now or datetime.now(UTC)).timestamp() * 1000)
