"""Survey answers for the profiles: the ``question_id`` / ``answer`` of the survey events already in ``events``.

``events`` (recstack.profiles.source) does not carry the two survey columns, so they are read from the lake for the
``survey`` events only (a filter DuckDB pushes into the Parquet scan) and joined by ``event_id``: the cleaning,
aliases, window and bot rule stay those of ``events``.
"""

from __future__ import annotations

from pathlib import Path

from recstack.profiles.source import hive_options, lake_days

__all__ = ["load_survey_answers"]


def load_survey_answers(con, lake_root: str | Path) -> int:
    """Create the temporary table ``survey_answers (event_id, question_id, answer)`` for the survey events in
    ``events``. Returns its row count."""
    root = Path(lake_root).expanduser()
    days = lake_days(root, "events") if root.is_dir() else []
    globs = [str(root / "events" / f"dt={day.isoformat()}" / "hour=*" / "part-*.parquet") for day in days]
    has_columns = bool(globs) and bool(
        con.execute(
            "SELECT count(*) FROM (SELECT DISTINCT name FROM parquet_schema($files) "
            "WHERE name IN ('question_id', 'answer')) HAVING count(*) = 2",
            {"files": globs},
        ).fetchall()
    )
    if not has_columns:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE survey_answers AS SELECT NULL::VARCHAR AS event_id, "
            "NULL::VARCHAR AS question_id, NULL::VARCHAR AS answer WHERE false"
        )
        return 0
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE survey_answers AS
            SELECT r.event_id, any_value(r.question_id) AS question_id, any_value(r.answer) AS answer
            FROM read_parquet($files, {hive_options()}) r
            SEMI JOIN (SELECT event_id FROM events WHERE event_type = 'survey') e USING (event_id)
            WHERE r.event_type = 'survey' AND r.question_id IS NOT NULL
            GROUP BY r.event_id""",
        {"files": globs},
    )
    return int(con.execute("SELECT count(*) FROM survey_answers").fetchall()[0][0])
