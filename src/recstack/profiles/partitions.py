"""Per-user batch work in ranges of user keys, so that its memory is bounded whatever the number of events.

Every profile column and every segment feature is a function of one user's events, so the users can be split into
ranges of their integer keys (``uid`` of recstack.profiles.source) and each range computed on its own: the sorts of
the session windows and the (user, item) and (user, type, window) aggregates then hold one range's rows at a time,
and a segment's top items and categories are summed over the ranges.

The size of a range is a trade: each range scans the whole ``events`` table again (with its filter), while a
larger one holds more at once. Measured on the benchmark's 20M-event lake (200k users, 2 cores; the build with the
segments in one process, 2026-12-07): one range peaked at 3.6 GiB, two at 2.7 GiB, four at 2.65 GiB; against one
range, two cost 3 s more CPU for the profiles and the segments together, four 12 s more.

:func:`user_ranges` chooses the ranges; :func:`in_range` is the SQL filter of one. One range (small loads, the tests)
reads every event with no filter at all.
"""

from __future__ import annotations

import math

__all__ = ["EVENTS_PER_RANGE", "in_range", "user_ranges"]

EVENTS_PER_RANGE = 10_000_000  # events per range of users (see the module docstring)


def user_ranges(con, events_per_range: int | None = None) -> list[tuple[int, int] | None]:
    """``[lo, hi)`` key ranges of about ``events_per_range`` events each over the tables ``events`` and ``user_keys``
    (keys follow the pseudonyms, which are uniform hashes, so equal key ranges hold about equal numbers of events);
    ``[None]`` when one range holds them all."""
    per_range = int(events_per_range or EVENTS_PER_RANGE)
    n_events, n_keys = con.execute(
        "SELECT (SELECT count(*) FROM events), (SELECT coalesce(max(uid) + 1, 0) FROM user_keys)"
    ).fetchall()[0]
    parts = max(1, min(math.ceil(n_events / per_range), n_keys))
    if parts == 1:
        return [None]
    bounds = [n_keys * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def in_range(keys: tuple[int, int] | None, column: str = "uid") -> str:
    """The SQL condition of one range of :func:`user_ranges` on a key column (``true`` for the single range)."""
    if keys is None:
        return "true"
    lo, hi = keys
    return f"({column} >= {int(lo)} AND {column} < {int(hi)})"
