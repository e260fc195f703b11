"""Which impression an event is attributed to, and what counts as an impression's outcome: real Parquet, real DuckDB."""

from __future__ import annotations

import duckdb
from monitor_support import MIN, LakeBuilder, loaded

from recstack.monitoring.attribution import attribute, outcome_pairs
from recstack.monitoring.spec import HOUR_MS, MetricSpec

SPEC = MetricSpec()


def _names(con: duckdb.DuckDBPyConnection, *texts: str) -> dict[int, str]:
    return {con.execute("SELECT hash(?::VARCHAR)", [t]).fetchall()[0][0]: t for t in texts}


def attributions(con: duckdb.DuckDBPyConnection, request_ids: list[str], items: list[str]) -> set[tuple]:
    """``{(request_id, item, event_type, position, by_request)}`` of the ``attributed`` table."""
    rid, item = _names(con, *request_ids), _names(con, *items)
    rows = con.execute("""
        SELECT i.rid, e.item, a.event_type, a.pos, a.by_request
        FROM attributed a JOIN imp i ON i.rowid = a.imp_row JOIN ev e ON e.rowid = a.ev_row
    """).fetchall()
    return {(rid[r], item[t], kind, pos, by) for r, t, kind, pos, by in rows}


def test_request_id_wins_over_a_later_list_showing_the_same_item(builder: LakeBuilder) -> None:
    builder.impression("r1", "u1", ["a", "b", "c"], 10 * MIN)
    builder.impression("r2", "u1", ["c", "b"], 12 * MIN)  # later, also shows b
    builder.event("u1", "b", "click", 13 * MIN, request_id="r1")
    builder.event("u1", "b", "purchase", 14 * MIN)  # no id: the latest list showing b
    con = loaded(builder, SPEC)
    assert attribute(con, SPEC) == 2
    assert attributions(con, ["r1", "r2"], ["b"]) == {
        ("r1", "b", "click", 2, True),
        ("r2", "b", "purchase", 2, False),
    }


def test_window_fallback_takes_the_latest_list_within_the_window(builder: LakeBuilder) -> None:
    builder.impression("r1", "u1", ["a", "b"], 0 * MIN)
    builder.impression("r2", "u1", ["b", "x"], 5 * MIN)
    builder.impression("r3", "u1", ["z"], 20 * MIN)  # later but does not show b
    builder.event("u1", "b", "click", 30 * MIN)  # 25 min after r2: r2
    builder.event("u1", "a", "click", 31 * MIN)  # 31 min after r1, the only list showing a: too late
    builder.event("u1", "q", "click", 21 * MIN)  # never shown: nobody's
    con = loaded(builder, SPEC)
    assert attribute(con, SPEC) == 1
    assert attributions(con, ["r1", "r2", "r3"], ["a", "b", "q"]) == {("r2", "b", "click", 1, False)}


def test_window_is_configurable(builder: LakeBuilder) -> None:
    builder.impression("r1", "u1", ["a"], 0 * MIN)
    builder.event("u1", "a", "click", 10 * MIN)
    spec = MetricSpec(attribution_window_ms=5 * 60_000)
    con = loaded(builder, spec)
    assert attribute(con, spec) == 0
    con = loaded(builder, SPEC)
    assert attribute(con, SPEC) == 1


def test_an_event_before_the_list_is_never_attributed_to_it(builder: LakeBuilder) -> None:
    builder.impression("r1", "u1", ["a", "b"], 60 * MIN)
    # received after the list, but the client's clock (plausible: 2 min behind receipt) says before it
    builder.event("u1", "a", "click", 61 * MIN, client_at=59 * MIN, request_id="r1")
    builder.event("u1", "b", "click", 61 * MIN, client_at=58 * MIN)
    con = loaded(builder, SPEC)
    assert attribute(con, SPEC) == 0


def test_a_skewed_event_goes_to_an_earlier_list_that_showed_the_item(builder: LakeBuilder) -> None:
    builder.impression("r0", "u1", ["a"], 50 * MIN)
    builder.impression("r1", "u1", ["a"], 60 * MIN)
    builder.event("u1", "a", "click", 61 * MIN, client_at=59 * MIN, request_id="r1")
    con = loaded(builder, SPEC)
    attribute(con, SPEC)
    assert attributions(con, ["r0", "r1"], ["a"]) == {("r0", "a", "click", 1, False)}


def test_another_users_request_id_is_ignored(builder: LakeBuilder) -> None:
    builder.impression("r1", "u1", ["a", "b"], 0 * MIN)
    builder.impression("r2", "u2", ["c", "b"], 1 * MIN)
    builder.event("u2", "a", "click", 2 * MIN, request_id="r1")  # u2 never saw a: nobody's
    builder.event("u2", "b", "click", 3 * MIN, request_id="r1")  # u2's own list showed b: the window rule
    con = loaded(builder, SPEC)
    attribute(con, SPEC)
    assert attributions(con, ["r1", "r2"], ["a", "b"]) == {("r2", "b", "click", 2, False)}


def test_a_request_id_event_for_an_item_not_shown_converts_but_has_no_position(builder: LakeBuilder) -> None:
    builder.impression("r1", "u1", ["a", "b"], 0 * MIN)
    builder.event("u1", "z", "purchase", 3 * MIN, request_id="r1")
    builder.event("u1", "a", "view", 4 * MIN)  # not an attributed type
    con = loaded(builder, SPEC)
    attribute(con, SPEC)
    assert attributions(con, ["r1"], ["z", "a"]) == {("r1", "z", "purchase", None, True)}


def test_outcomes_count_distinct_items_in_the_window_after_the_list(builder: LakeBuilder) -> None:
    builder.impression("r1", "u1", ["a", "b", "c"], 0 * MIN)
    builder.impression("r2", "u1", ["d"], 120 * MIN)
    builder.impression("r3", "u2", ["a"], 0 * MIN)  # nothing follows for u2
    builder.event("u1", "x", "rating", -1 * MIN)  # before both lists
    builder.event("u1", "c", "click", 10 * MIN)
    builder.event("u1", "c", "rating", 11 * MIN)  # same item again: once
    builder.event("u1", "a", "rating", 130 * MIN)  # after r1 and r2
    builder.event("u1", "y", "purchase", 23 * 60 * MIN)  # within 24 h of both
    builder.event("u1", "b", "rating", 24 * 60 * MIN + 1 * MIN)  # 24 h + 1 min after r1: outside it, inside r2's
    builder.event("u1", "d", "view", 121 * MIN)  # not an outcome type
    con = loaded(builder, SPEC, 0, 1)
    pairs = outcome_pairs(con, SPEC).to_pandas()
    rid = _names(con, "r1", "r2", "r3")
    rows = dict(con.execute("SELECT rowid, rid FROM imp").fetchall())
    got = {(rid[rows[r]], int(p)) for r, p in zip(pairs["imp_row"], pairs["pos"])}
    # r1: c (position 3), a (position 1), y (not shown: 0); r2: a, y, b (none of them shown)
    assert sorted(got) == sorted({("r1", 3), ("r1", 1), ("r1", 0), ("r2", 0)})
    counts = pairs.assign(request=[rid[rows[r]] for r in pairs["imp_row"]]).groupby("request").size().to_dict()
    assert counts == {"r1": 3, "r2": 3}


def test_outcome_window_is_configurable(builder: LakeBuilder) -> None:
    builder.impression("r1", "u1", ["a"], 0 * MIN)
    builder.event("u1", "a", "rating", 90 * MIN)
    spec = MetricSpec(outcome_window_ms=HOUR_MS)
    assert outcome_pairs(loaded(builder, spec), spec).num_rows == 0
    assert outcome_pairs(loaded(builder, SPEC), SPEC).num_rows == 1
