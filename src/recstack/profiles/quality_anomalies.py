"""Anomaly flags for review, over the ``events`` table (recstack.profiles.source; declared bots already dropped), in
the last ``recent_days`` before ``as_of``. One table (:data:`ANOMALY_SCHEMA`), one row per finding:

* ``bot_rate`` (per user, period ``minute``): more than ``max_events_per_minute`` events in one minute, the signature
  of a script that does not say it is one. ``value``: the busiest minute's events; ``baseline``: the threshold;
  ``score``: their ratio; ``detail``: how many minutes were over it.
* ``user_activity`` (per user, period ``day``): a day's events far above the user's own baseline, a robust z-score
  ``(n - median) / scale`` against their previous active days in ``user_baseline_days`` (at least ``user_min_days``
  of them). Only highs are flagged: a quiet day is no anomaly for a person, and the day of ``as_of`` is partial.
* ``site_rate`` (per event type, period ``hour``): the site's events of one type in one complete hour far above or
  below the trailing ``site_baseline_hours`` hours of that type (missing hours count as 0, so an outage is a drop).

Robust scale: ``max(1.4826 * MAD, sqrt(median), 1)``: the MAD of a steady count can be 0, and a count's own Poisson
noise (sqrt of its mean) is the least variation worth calling normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from recstack.profiles.rules import HOUR_MS

DAY_MS = 24 * HOUR_MS
MINUTE_MS = 60_000

ANOMALY_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),  # bot_rate | user_activity | site_rate
        pa.field("user_id", pa.string()),  # null for site-wide findings
        pa.field("event_type", pa.string()),  # null for all types together
        pa.field("period", pa.string(), nullable=False),  # minute | day | hour: what start_ts starts
        pa.field("start_ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("baseline", pa.float64()),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("detail", pa.string()),  # JSON
    ]
)

__all__ = ["ANOMALY_SCHEMA", "AnomalySpec", "find_anomalies"]


@dataclass(frozen=True)
class AnomalySpec:
    """Thresholds (``configs/profiles.yaml``: anomalies)."""

    recent_days: int = 2
    max_events_per_minute: int = 60
    user_z: float = 6.0
    user_baseline_days: int = 28
    user_min_days: int = 7
    user_min_events: int = 20
    site_z: float = 6.0
    site_baseline_hours: int = 168
    site_min_hours: int = 24
    site_min_count: int = 10

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"anomalies.{name}={value!r}: give a positive number")


def _scale(med: str, mad: str) -> str:
    return f"greatest(1.4826 * {mad}, sqrt(greatest({med}, 0)), 1.0)"


def find_anomalies(con, as_of_ms: int, spec: AnomalySpec | None = None) -> pa.Table:
    """The findings (module docstring), ordered by kind, time and score."""
    s = spec or AnomalySpec()
    as_of = int(as_of_ms)
    recent_lo = as_of - int(s.recent_days) * DAY_MS
    today = as_of // DAY_MS
    first_day = today - int(s.recent_days) + 1
    last_hour = as_of // HOUR_MS - 1  # complete hours only
    first_hour = last_hour - int(s.recent_days) * 24 + 1
    hist_lo = first_hour - int(s.site_baseline_hours)
    sql = f"""
    WITH bot_minutes AS (
        SELECT uid, ts_ms // {MINUTE_MS} AS minute, count(*) AS n FROM events
        WHERE ts_ms > {recent_lo} AND ts_ms <= {as_of} GROUP BY ALL HAVING count(*) > {int(s.max_events_per_minute)}),
    bots AS (
        SELECT 'bot_rate' AS kind, uid, NULL::VARCHAR AS event_type, 'minute' AS period,
               arg_max(minute, (n, -minute)) * {MINUTE_MS} AS start_ms, max(n)::DOUBLE AS value,
               {float(s.max_events_per_minute)} AS baseline, max(n) / {float(s.max_events_per_minute)} AS score,
               json_object('minutes_over', count(*), 'threshold_per_minute', {int(s.max_events_per_minute)}) AS detail
        FROM bot_minutes GROUP BY uid),
    daily AS (
        SELECT uid, ts_ms // {DAY_MS} AS day, count(*)::DOUBLE AS n FROM events
        WHERE ts_ms <= {as_of} AND ts_ms >= {(first_day - int(s.user_baseline_days)) * DAY_MS} GROUP BY ALL),
    user_days AS (
        SELECT t.uid, t.day, t.n, median(p.n) AS med, mad(p.n) AS mad, count(*) AS k
        FROM (SELECT * FROM daily WHERE day >= {first_day} AND n >= {int(s.user_min_events)}) t
        JOIN daily p ON p.uid = t.uid AND p.day BETWEEN t.day - {int(s.user_baseline_days)} AND t.day - 1
        GROUP BY ALL HAVING count(*) >= {int(s.user_min_days)}),
    users AS (
        SELECT 'user_activity' AS kind, uid, NULL::VARCHAR AS event_type, 'day' AS period,
               day * {DAY_MS} AS start_ms, n AS value, med AS baseline, (n - med) / {_scale("med", "mad")} AS score,
               json_object('mad', mad, 'baseline_days', k) AS detail
        FROM user_days WHERE (n - med) / {_scale("med", "mad")} >= {float(s.user_z)}),
    hourly AS (
        SELECT event_type, bucket, count(*)::DOUBLE AS n FROM events
        WHERE bucket BETWEEN {hist_lo} AND {last_hour} GROUP BY ALL),
    grid AS (  -- every hour of every type since the first event of the history, so a silent hour counts as 0
        SELECT t.event_type, h.range AS bucket
        FROM (SELECT DISTINCT event_type FROM hourly) t,
             range(greatest({hist_lo}, (SELECT coalesce(min(bucket), {last_hour + 1}) FROM events)),
                   {last_hour + 1}) h),
    scored AS (
        SELECT g.event_type, g.bucket, coalesce(h.n, 0) AS n,
               median(coalesce(h.n, 0)) OVER w AS med, mad(coalesce(h.n, 0)) OVER w AS mad, count(*) OVER w AS k
        FROM grid g LEFT JOIN hourly h USING (event_type, bucket)
        WINDOW w AS (PARTITION BY g.event_type ORDER BY g.bucket
                     ROWS BETWEEN {int(s.site_baseline_hours)} PRECEDING AND 1 PRECEDING)),
    site AS (
        SELECT 'site_rate' AS kind, NULL::INTEGER AS uid, event_type::VARCHAR AS event_type, 'hour' AS period,
               bucket::BIGINT * {HOUR_MS} AS start_ms, n AS value, med AS baseline,
               (n - med) / {_scale("med", "mad")} AS score,
               json_object('direction', CASE WHEN n > med THEN 'spike' ELSE 'drop' END, 'mad', mad,
                           'baseline_hours', k) AS detail
        FROM scored
        WHERE bucket >= {first_hour} AND k >= {int(s.site_min_hours)}
          AND greatest(n, med) >= {int(s.site_min_count)}
          AND abs(n - med) / {_scale("med", "mad")} >= {float(s.site_z)})
    SELECT kind, k.user_id, event_type, period, make_timestamp(start_ms * 1000) AS start_ts, value, baseline, score,
           detail::VARCHAR AS detail
    FROM (SELECT * FROM bots UNION ALL SELECT * FROM users UNION ALL SELECT * FROM site)
    LEFT JOIN user_keys k USING (uid)  -- findings are per key (recstack.profiles.source); reported by pseudonym
    ORDER BY kind, start_ts, score DESC, user_id, event_type"""
    return con.sql(sql).to_arrow_table().cast(ANOMALY_SCHEMA)
