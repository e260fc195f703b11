"""DuckDB views and SQL statistics over a prepared split, checked against pandas on the same files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recstack.data.prepared import PreparedSplit
from recstack.data.warehouse import connect, format_stats, stats


def expected_quantiles(counts: pd.Series) -> list[float]:
    return [float(counts.quantile(q)) for q in (0.1, 0.5, 0.9, 0.99)] + [float(counts.max())]


def check_against_pandas(split: PreparedSplit) -> None:
    s = stats(split.root)
    every = pd.concat([split.train, split.valid, split.test])
    assert (s.n_users, s.n_items) == (len(split.users), len(split.items))
    assert (s.n_train, s.n_valid, s.n_test) == (len(split.train), len(split.valid), len(split.test))
    pairs = every[["user_idx", "item_idx"]].drop_duplicates()
    assert s.n_pairs == len(pairs)
    assert s.sparsity == pytest.approx(1 - len(pairs) / (s.n_users * s.n_items))
    per_user = every.groupby("user_idx").size().reindex(split.users["user_idx"], fill_value=0)
    per_item = every.groupby("item_idx").size().reindex(split.items["item_idx"], fill_value=0)
    got_user = [s.per_user.p10, s.per_user.p50, s.per_user.p90, s.per_user.p99, s.per_user.max]
    got_item = [s.per_item.p10, s.per_item.p50, s.per_item.p90, s.per_item.p99, s.per_item.max]
    np.testing.assert_allclose(got_user, expected_quantiles(per_user))
    np.testing.assert_allclose(got_item, expected_quantiles(per_item))
    assert (s.first_timestamp, s.last_timestamp) == (every["timestamp"].min(), every["timestamp"].max())


def test_stats_equal_pandas_on_tiny(tiny_split: PreparedSplit) -> None:
    check_against_pandas(tiny_split)


@pytest.mark.slow
def test_stats_equal_pandas_on_ml100k(ml100k_split: PreparedSplit) -> None:
    check_against_pandas(ml100k_split)
    text = format_stats(stats(ml100k_split.root))
    assert "users                   943" in text and "100,000" in text and "1997-09" in text


def test_views_answer_sql(tiny_split: PreparedSplit) -> None:
    with connect(tiny_split.root) as con:
        n = con.execute("SELECT count(*) FROM interactions WHERE stage = 'test'").fetchone()[0]
        assert n == len(tiny_split.test)
        top = con.execute(
            "SELECT i.title, count(*) AS n FROM train t JOIN items i USING (item_idx) GROUP BY 1 ORDER BY 2 DESC, 1"
        ).df()
        expected = tiny_split.train.merge(tiny_split.items, on="item_idx").groupby("title").size()
        assert top.set_index("title")["n"].to_dict() == expected.to_dict()
        assert con.execute("SELECT count(*) FROM users WHERE gender = 'F'").fetchone()[0] == 15


def test_missing_folder_says_what_to_do(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="recstack-data prepare"):
        connect(tmp_path)


def test_format_stats_is_readable(tiny_split: PreparedSplit) -> None:
    text = format_stats(stats(tiny_split.root))
    assert "users" in text and "sparsity" in text and "per item" in text and "train" in text
