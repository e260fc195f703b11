"""Duplicate accounts: signed-in users whose ``profile`` events carry the same ``identity_hash`` (a keyed hash of a
normalised e-mail address, recstack.collect.intake) are one person. Each duplicate is merged into the canonical
account, the one first seen earliest (ties: the smaller pseudonym), by an ``aliases`` row in the lake (``stream_id``
= recstack.data.sources.lake.MERGE_STREAM_ID); every later read of the lake (profiles, segments, ``prepare``) then
counts the duplicate's events as the canonical account's.

Identities come from profile events of all history up to ``as_of`` with the aliases already written applied, so a
merged pair no longer shows as a duplicate: running the check again writes nothing new.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from recstack.data import lake
from recstack.data.sources.lake import CLIENT_MAX_DELAY, EVENT_TIME_SQL, MERGE_STREAM_ID, clean_events_sql
from recstack.profiles.source import lake_days, loaded_history

__all__ = ["find_duplicates", "write_merges"]

_PAIRS = pa.schema([pa.field("duplicate", pa.string()), pa.field("canonical", pa.string())])


def _globs(root: Path, table: str, days: list) -> list[str]:
    return [str(root / table / f"dt={day.isoformat()}" / "hour=*" / "part-*.parquet") for day in days]


def _has_identity_column(con, globs: list[str]) -> bool:
    """Lakes written before identity_hash was declared have no such column in any file."""
    names = con.execute(
        "SELECT name FROM parquet_schema($files) WHERE name = 'identity_hash' LIMIT 1", {"files": globs}
    ).fetchall()
    return bool(names)


def find_duplicates(con, lake_root: str | Path, as_of_ms: int, profiles: pa.Table | None = None) -> pa.Table:
    """``(duplicate, canonical)`` pairs to merge. ``profiles`` (user_id, first_seen_ms) adds first-seen times from
    behaviour; without it the first profile event carrying the hash decides. The profile events come from the
    connection's ``event_profiles`` when recstack.profiles.source loaded all history up to ``as_of_ms``
    (source.loaded_history), else from the lake's files."""
    root = Path(lake_root).expanduser()
    params: dict = {"hi": int(as_of_ms)}
    if loaded_history(con, root, as_of_ms):  # the same cleaned profile events, already in memory
        ids = """SELECT k.user_id, e.identity_hash, min(e.ts_ms) AS first_ms FROM event_profiles e
                 JOIN user_keys k USING (uid)
                 WHERE e.identity_hash IS NOT NULL AND NOT e.anonymous AND NOT e.bot AND e.ts_ms <= $hi GROUP BY ALL"""
    else:
        as_of = datetime.fromtimestamp(as_of_ms / 1000, UTC)
        last_day = (as_of + CLIENT_MAX_DELAY + timedelta(days=1)).date()
        days = [day for day in lake_days(root, "events") if day <= last_day] if root.is_dir() else []
        globs = _globs(root, "events", days)
        if not days or not _has_identity_column(con, globs):
            return _PAIRS.empty_table()
        alias_days = [day for day in lake_days(root, "aliases") if day <= last_day]
        params.update(
            {
                "events": globs,
                "end": last_day,
                "end_ts": datetime.combine(last_day + timedelta(days=1), datetime.min.time(), UTC),
            }
        )
        if alias_days:
            params["aliases"] = _globs(root, "aliases", alias_days)
        ids = f"""WITH cleaned AS ({clean_events_sql(profiles_only=True, has_aliases=bool(alias_days))})
                 SELECT user_id, identity_hash, min({EVENT_TIME_SQL}) AS first_ms FROM cleaned e
                 WHERE identity_hash IS NOT NULL AND NOT anonymous AND NOT bot GROUP BY ALL HAVING first_ms <= $hi"""
    seen = pa.table(
        {
            "user_id": profiles["user_id"] if profiles is not None else pa.array([], pa.string()),
            "first_seen_ms": profiles["first_seen_ms"] if profiles is not None else pa.array([], pa.int64()),
        }
    )
    con.register("_dup_seen", seen)
    try:
        return (
            con.sql(
                f"""WITH ids AS ({ids}),
                ranked AS (
                    SELECT i.user_id, i.identity_hash,
                           first_value(i.user_id) OVER (
                               PARTITION BY i.identity_hash
                               ORDER BY least(i.first_ms, coalesce(s.first_seen_ms, i.first_ms)), i.user_id)
                               AS canonical,
                           least(i.first_ms, coalesce(s.first_seen_ms, i.first_ms)) AS first_ms
                    FROM ids i LEFT JOIN _dup_seen s USING (user_id))
                SELECT r.user_id AS duplicate, arg_min(r.canonical, (c.first_ms, r.canonical)) AS canonical
                FROM ranked r JOIN ranked c ON c.user_id = r.canonical AND c.identity_hash = r.identity_hash
                WHERE r.user_id <> r.canonical GROUP BY r.user_id ORDER BY duplicate""",
                params=params,
            )
            .to_arrow_table()
            .cast(_PAIRS)
        )
    finally:
        con.unregister("_dup_seen")


def write_merges(lake_root: str | Path, pairs: pa.Table, as_of_ms: int) -> Path | None:
    """Write the merges as ``aliases`` rows received at ``as_of`` (so a rebuild at the same ``as_of`` applies them).
    The file name is a digest of the pairs: writing the same merges again replaces the file instead of adding one."""
    if pairs.num_rows == 0:
        return None
    duplicates, canonicals = pairs["duplicate"].to_pylist(), pairs["canonical"].to_pylist()
    digest = hashlib.sha256("\n".join(f"{d}\t{c}" for d, c in zip(duplicates, canonicals, strict=True)).encode())
    rows = pa.table(
        {
            "anonymous_id": pa.array(duplicates, pa.string()),
            "user_id": pa.array(canonicals, pa.string()),
            "received_ts": pa.array([int(as_of_ms)] * pairs.num_rows, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "stream_id": pa.array([MERGE_STREAM_ID] * pairs.num_rows, pa.string()),
        }
    )
    (path,) = lake.write_rows(lake_root, "aliases", rows, name=f"merge-{digest.hexdigest()[:16]}")
    return path
