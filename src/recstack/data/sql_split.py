"""The prepare job (clean, k-core, split) as SQL on a :class:`~recstack.data.sql_runner.SqlRunner`, with the same
result as the embedded numpy path of :mod:`recstack.data.build_split`: same rows, same order, same indices.

:func:`run_split_sql` leaves the split in the runner's tables (``user_codes``, ``item_codes``, ``cleaned``,
``pairs``, ``pair_stage``); :func:`collect_split` brings it here as a :class:`BuiltSplit` for the shared writer, and
an engine with its own writer (Spark to object storage) reads
:func:`~recstack.data.prepare_sql.final_rows_with_ids` instead. Loading the source and the id maps' metadata stay
shared Python; every per-row step is a query, except the random split's keys (one Python function over whole users,
:class:`~recstack.data.random_stream.RandomStages`, run where the rows are).

The new_items split draws everything from one seeded numpy stream, in the embedded order, and so does this path: the
held-out items (one ``choice`` over the distinct items, here: they are few), then the warm pairs' keys as the random
split draws them (on the rows, read from the stream after the choice), then the permutation of the cold pairs (here,
from the stream after the warm keys and their redraws; at most a few million numbers), joined back to the cold pairs
by their position in (user, item) order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recstack.data import prepare_sql as q
from recstack.data.build_split import (
    STAGES,
    BuiltSplit,
    SplitCounts,
    _Steps,
    finish_split,
    no_training_data,
    stage_table,
)
from recstack.data.clean import CleanConfig, CleanReport, k_core_error, threshold_error
from recstack.data.engines import EngineError
from recstack.data.idmap import _as_arrow_strings, recompact
from recstack.data.random_stream import RANDOM_STAGE_SCHEMA, RandomStages, StreamCursor, key_bits, tie_ranks
from recstack.data.schema import DataError
from recstack.data.split import TEST, VALID, SplitConfig, held_out_items, linear_quantile, time_cuts
from recstack.data.sql_runner import SqlRunner

MIN_KEY_BITS = 16  # below this shuffle_within_groups takes a permutation instead of keys (see split.py)
CHRONOLOGICAL = ("chrono", "loo", "time")
DROPPING = ("time", "new_items")  # the strategies that drop users without a training pair
RAW_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("iid", pa.string()),
        ("ts", pa.int64()),
        ("val", pa.float32()),
        ("ev", pa.string()),
        ("src_row", pa.int64()),
    ]
)


def _ids(column: pd.Series) -> pa.ChunkedArray:
    ids = _as_arrow_strings(column)
    if ids.null_count:  # the same words as idmap.factorize
        raise ValueError(f"{ids.null_count} missing id(s); every interaction needs a user_id and an item_id")
    return pa.chunked_array([ids]) if isinstance(ids, pa.Array) else ids


def raw_table(interactions: pd.DataFrame) -> pa.Table:
    """A Dataset's interactions as the ``raw`` table, typed as :func:`~recstack.data.idmap.encode` types them."""
    events = pc.fill_null(_as_arrow_strings(interactions["event_type"]), "")
    columns = [
        _ids(interactions["user_id"]),
        _ids(interactions["item_id"]),
        pa.array(interactions["timestamp"].to_numpy(dtype=np.int64, na_value=0)),
        pa.array(interactions["value"].to_numpy(dtype=np.float32, na_value=np.nan)),
        events,
        pa.array(np.arange(len(interactions), dtype=np.int64)),
    ]
    return pa.Table.from_arrays([c.cast(f.type) for c, f in zip(columns, RAW_SCHEMA)], schema=RAW_SCHEMA)


@dataclass(frozen=True)
class SqlSplit(SplitCounts):
    """What :func:`run_split_sql` left in the runner (ordered by time or not), and its counts."""

    chronological: bool


def _scalar(runner: SqlRunner, sql: str) -> object:
    return runner.fetch(sql).column(0)[0].as_py()


def _clean(runner: SqlRunner, cfg: CleanConfig, dataset: str, rows_in: int) -> CleanReport:
    """``raw`` -> ``cleaned``: dedup, implicit threshold, k-core (:func:`recstack.data.clean.clean`, in SQL)."""
    if rows_in == 0:
        raise DataError(f"{dataset}: the source has no interactions")
    runner.view("encoded", q.ENCODE)  # every id has a code, so this join keeps all rows_in rows
    tables, n = ["encoded"], rows_in

    def advance(make_sql: Callable[[str], str]) -> int:
        """The next step's table from the current one; the one before stays until the step after (for errors)."""
        count = runner.materialize(f"step_{len(tables)}", make_sql(tables[-1]))
        if len(tables) >= 2:
            runner.drop(tables[-2])
        tables.append(f"step_{len(tables)}")
        return count

    duplicates = below = 0
    if cfg.dedup:
        after = advance(q.dedup)
        duplicates, n = n - after, after
    if cfg.implicit_threshold is not None:
        after = advance(lambda table: q.threshold(table, cfg.implicit_threshold))
        if after == 0:
            largest = _scalar(runner, f"SELECT max(val) FILTER (WHERE NOT isnan(val)) FROM {tables[-2]}")
            raise threshold_error(dataset, cfg.implicit_threshold, np.float32(np.nan if largest is None else largest))
        below, n = n - after, after
    before_k_core, rounds = n, 0
    if cfg.min_user_interactions > 1 or cfg.min_item_interactions > 1:
        for round_no in range(1, 1001):  # k_core_mask's alternation, one materialized table per half-round
            changed = False
            for key, minimum in (("u", cfg.min_user_interactions), ("i", cfg.min_item_interactions)):
                if minimum > 1:
                    after = advance(lambda table, key=key, minimum=minimum: q.at_least(table, key, minimum))
                    changed |= after < n
                    n = after
            if not changed:
                rounds = round_no
                break
        else:
            raise RuntimeError("k-core did not converge in 1000 rounds")
        if n == 0:
            raise k_core_error(dataset, cfg, before_k_core)
    if len(tables) == 1:  # nothing to filter: compute the encoding once
        runner.materialize("cleaned", q.ENCODE)
    else:
        runner.view("cleaned", f"SELECT * FROM {tables[-1]}")
        runner.drop(tables[-2])
    return CleanReport(
        rows_in=rows_in,
        duplicates_removed=duplicates,
        below_threshold_removed=below,
        k_core_removed=before_k_core - n,
        k_core_rounds=rounds,
        rows_out=n,
    )


def _random_stages(
    runner: SqlRunner, source: str, cursor: StreamCursor, cfg: SplitConfig, *, into: str
) -> StreamCursor:
    """Table ``into`` (``u, i, stage``): the pairs of ``source`` (whole users) staged per user as the random split
    stages them, with the keys ``shuffle_within_groups`` would draw over ``source`` from ``cursor``: each pair's key
    at its position, ties redrawn as numpy does. Returns the stream after the keys and any redraws (new_items draws
    on from there)."""
    shape = runner.fetch(q.pair_shape(source)).to_pylist()[0]
    n_pairs, max_user, max_per_user = (int(shape[k]) for k in ("n_pairs", "max_user", "max_per_user"))
    bits = key_bits(max_user, max_per_user)
    if bits < MIN_KEY_BITS:
        raise EngineError(
            f"split={cfg.name} over {max_user + 1:,} users with up to {max_per_user:,} pairs each is shuffled by a "
            "global permutation in the embedded path, which an engine cannot replay; prepare it with engine=duckdb"
        )
    fn = RandomStages(cursor, bits, tuple(cfg.ratios))
    runner.map_users("pair_keys", q.pairs_with_starts(source), fn, RANDOM_STAGE_SCHEMA)
    after_keys = cursor.after_integers(bits, n_pairs)
    tied = runner.fetch(q.TIED_KEYS)
    if tied.num_rows == 0:  # the rule: every key differs from its user's other keys, so the ranks are final
        runner.materialize(into, "SELECT u, i, stage FROM pair_keys")
        runner.drop("pair_keys")
        return after_keys
    # numpy redrew the tied keys from the stream's end, in (user, key, offset) order: replay that, then rank again
    u, key = tied.column("u").to_numpy(), tied.column("rkey").to_numpy()
    run = np.cumsum(np.concatenate(([0], (u[1:] != u[:-1]) | (key[1:] != key[:-1]))))
    tiebreak, after_ties = tie_ranks(run, after_keys)
    ties = {"u": tied.column("u"), "offs": tied.column("offs"), "tiebreak": pa.array(tiebreak, type=pa.int64())}
    runner.register("ties", pa.table(ties))
    runner.materialize(into, q.by_ratio(q.RANDOM_RANKS, cfg.ratios))
    runner.drop("pair_keys")
    runner.drop("ties")
    return after_ties


def _new_items_stages(runner: SqlRunner, cfg: SplitConfig) -> None:
    """``pair_stage`` of the new_items split, drawing from one numpy stream in the embedded order
    (:func:`recstack.data.split._new_items_stages`): the cold items here (few: one ``choice`` over the distinct
    items), the warm pairs' keys where the rows are (:func:`_random_stages` from the stream after the choice), the cold
    pairs' permutation here (from the stream after the warm keys and their redraws), handed back as a table of
    stages by position."""
    rng = np.random.default_rng(cfg.seed)
    # SQL codes sort as the embedded indices do, so the choice picks the same positions of the sorted distinct items
    items = runner.fetch("SELECT DISTINCT i FROM pairs ORDER BY i").column("i").to_numpy()
    cold_items = held_out_items(items, cfg.cold_fraction, rng)
    runner.register("cold_items", pa.table({"i": pa.array(cold_items, type=pa.int64())}))
    runner.materialize("warm_pairs", q.pairs_of_items(cold=False))
    n_cold = runner.materialize("cold_pairs", q.pairs_of_items(cold=True))
    runner.drop("cold_items")
    after_warm = _random_stages(runner, "warm_pairs", StreamCursor.of(rng), cfg, into="warm_stage")
    valid_share = cfg.ratios[1] / (cfg.ratios[1] + cfg.ratios[2])
    n_valid = round(valid_share * n_cold)
    order = after_warm.generator().permutation(n_cold)  # order[j]: the cold pair (by position) drawn j-th
    stage = np.full(n_cold, TEST, dtype=np.int8)
    stage[order[:n_valid]] = VALID
    positions = {"pos": pa.array(np.arange(n_cold, dtype=np.int64)), "stage": pa.array(stage)}
    runner.register("cold_order", pa.table(positions))
    runner.materialize("pair_stage", q.NEW_ITEMS_STAGES)
    for table in ("warm_pairs", "cold_pairs", "warm_stage", "cold_order"):
        runner.drop(table)


def _split(runner: SqlRunner, cfg: SplitConfig) -> int:
    """``cleaned`` -> ``pairs`` and ``pair_stage`` (:func:`recstack.data.split.split_pairs`, in SQL); returns the
    number of pairs."""
    n_pairs = runner.materialize("pairs", q.pairs("cleaned"))
    if cfg.name == "random":
        _random_stages(runner, "pairs", StreamCursor.from_seed(cfg.seed), cfg, into="pair_stage")
    elif cfg.name == "new_items":
        _new_items_stages(runner, cfg)
    elif cfg.name == "chrono":
        runner.materialize("pair_stage", q.by_ratio(q.CHRONO_RANKS, cfg.ratios))
    elif cfg.name == "loo":
        runner.materialize("pair_stage", q.leave_one_out(q.CHRONO_RANKS))
    else:

        def kth(k: int) -> int:
            return int(_scalar(runner, q.kth_pair_time(k)))

        valid_at, test_at = time_cuts(cfg, lambda p: linear_quantile(n_pairs, p, kth))
        runner.materialize("pair_stage", q.time_cut(valid_at, test_at))
    return n_pairs


def run_split_sql(
    runner: SqlRunner,
    clean_cfg: CleanConfig,
    split_cfg: SplitConfig,
    *,
    dataset: str,
    rows_in: int,
    steps: _Steps | None = None,
) -> SqlSplit:
    """Clean and split the runner's ``raw`` table of ``rows_in`` rows (see the module docstring)."""
    steps = steps or _Steps(total=0)
    with steps.step("encode"):
        runner.materialize("user_codes", q.codes("uid"))
        runner.materialize("item_codes", q.codes("iid"))
    with steps.step("clean"):
        report = _clean(runner, clean_cfg, dataset, rows_in)
    with steps.step("split"):
        n_pairs = _split(runner, split_cfg)
        dropped_users = dropped_rows = 0
        if split_cfg.name in DROPPING:
            counts = runner.fetch(q.SPLIT_COUNTS).to_pylist()[0]
            n_pairs, dropped_users, dropped_rows = (
                int(counts[k]) for k in ("n_pairs", "dropped_users", "dropped_rows")
            )
        if n_pairs == 0:
            raise no_training_data(dataset, split_cfg)
    return SqlSplit(
        chronological=split_cfg.name in CHRONOLOGICAL,
        clean_report=report,
        n_pairs=n_pairs,
        dropped_users=dropped_users,
        dropped_interactions=dropped_rows,
    )


def final_ids(runner: SqlRunner, table: str) -> pa.Array:
    """The raw ids of ``final_users`` / ``final_items`` in index order."""
    ids = runner.fetch(f"SELECT id FROM {table} ORDER BY idx").column("id")
    return ids.combine_chunks().cast(pa.large_string())


def _indices(codes: pa.ChunkedArray, runner: SqlRunner, table: str) -> tuple[pa.Array, pa.Array]:
    """Final indices of the rows' codes and the ids they index: the codes still in use renumbered in order, as the
    embedded path does it (:func:`~recstack.data.idmap.recompact`)."""
    ids = runner.fetch(f"SELECT id FROM {table} ORDER BY code").column("id").combine_chunks()
    codes_np = codes.combine_chunks().to_numpy(zero_copy_only=False)
    lookup, kept = recompact(codes_np, ids.cast(pa.large_string()))
    return pa.array(lookup[codes_np], type=pa.int32()), kept


def collect_split(
    runner: SqlRunner,
    result: SqlSplit,
    item_meta: pd.DataFrame,
    user_meta: pd.DataFrame,
    *,
    name: str,
    source: str,
    steps: _Steps | None = None,
) -> BuiltSplit:
    """The split :func:`run_split_sql` left in ``runner``, here, as the embedded path builds it."""
    steps = steps or _Steps(total=0)
    with steps.step("tables"):
        rows = runner.fetch(q.final_rows(result.chronological))
        user_idx, user_ids = _indices(rows.column("u"), runner, "user_codes")
        item_idx, item_ids = _indices(rows.column("i"), runner, "item_codes")
        stage_of = rows.column("stage").combine_chunks()
        tables = {}
        for stage, code in STAGES:
            chosen = pc.equal(stage_of, code)
            part = rows.filter(chosen)  # keeps the query's order
            tables[stage] = stage_table(
                user_ids,
                item_ids,
                user_idx.filter(chosen),
                item_idx.filter(chosen),
                *(part.column(c).combine_chunks() for c in ("timestamp", "value", "event_type")),
            )
        del rows, stage_of, user_idx, item_idx
        return finish_split(tables, user_ids, item_ids, user_meta, item_meta, result, name=name, source=source)


def build_split_sql(
    runner: SqlRunner,
    interactions: pa.Table,
    item_meta: pd.DataFrame,
    user_meta: pd.DataFrame,
    clean_cfg: CleanConfig,
    split_cfg: SplitConfig,
    *,
    name: str,
    source: str,
    steps: _Steps | None = None,
) -> BuiltSplit:
    """:func:`recstack.data.build_split.build_split` on ``runner``: ``interactions`` is the ``raw`` table
    (:func:`raw_table`)."""
    rows_in = runner.register("raw", interactions)
    result = run_split_sql(runner, clean_cfg, split_cfg, dataset=name, rows_in=rows_in, steps=steps)
    return collect_split(runner, result, item_meta, user_meta, name=name, source=source, steps=steps)
