"""Raw ids to codes and back: factorizing (chunked Arrow columns too), natural order, compaction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recstack.data.idmap import compact, factorize, natural_order, recompact, users_table


@pytest.mark.parametrize(
    "values",
    [
        pa.array(["b", "a", "b", "c"]),
        pa.chunked_array([pa.array(["b", "a"]), pa.array(["b", "c"])]),  # chunks see new values: growing dictionary
        pa.chunked_array([pa.array(["b", "a", "c"]), pa.array(["b", "c"]), pa.array([], type=pa.string())]),
    ],
)
def test_factorize_round_trips(values) -> None:
    codes, uniques = factorize(values)
    assert codes.dtype == np.int32
    expected = values.to_pylist() if isinstance(values, pa.Array) else values.combine_chunks().to_pylist()
    assert uniques.take(pa.array(codes)).to_pylist() == expected


def test_factorize_missing_ids_are_an_error_unless_filled() -> None:
    with pytest.raises(ValueError, match="1 missing id"):
        factorize(pa.array(["a", None]))
    codes, uniques = factorize(pa.array(["a", None]), fill_null="")
    assert uniques.take(pa.array(codes)).to_pylist() == ["a", ""]


def test_natural_order_is_numeric_for_integer_ids() -> None:
    ids = pa.array(["10", "9", "100", "007"])
    assert [ids[i].as_py() for i in natural_order(ids)] == ["007", "9", "10", "100"]
    ids = pa.array(["b10", "b9", "a"])
    assert [ids[i].as_py() for i in natural_order(ids)] == ["a", "b10", "b9"]


def test_compact_and_recompact_keep_order() -> None:
    ids = pa.array(["30", "10", "20", "40"])
    lookup, kept = compact(np.array([0, 1, 2, 0]), ids)  # "40" unused
    assert kept.to_pylist() == ["10", "20", "30"]
    assert lookup.tolist() == [2, 0, 1, -1]
    lookup2, kept2 = recompact(np.array([0, 2]), kept)  # "20" dropped
    assert kept2.to_pylist() == ["10", "30"] and lookup2.tolist() == [0, -1, 1]


def test_users_table_takes_the_first_row_per_user_and_nulls_for_the_rest() -> None:
    demographics = pd.DataFrame(
        {
            "user_id": pd.Series(["b", "a", "b"], dtype="str"),
            "age": pd.Series(["30", "20", "99"], dtype="str"),
            "score": pd.array([1, 2, 3], dtype="Int64"),
        }
    )
    table = users_table(pa.array(["a", "b", "c"]), demographics)
    assert table["user_idx"].tolist() == [0, 1, 2] and table["user_id"].tolist() == ["a", "b", "c"]
    assert table["age"].tolist()[:2] == ["20", "30"] and pd.isna(table["age"].iloc[2])
    assert str(table["score"].dtype) == "Int64" and table["score"].tolist()[:2] == [2, 1]
    assert pd.isna(table["score"].iloc[2])
    assert list(users_table(pa.array(["a"]), demographics.iloc[:0][["user_id"]]).columns) == ["user_idx", "user_id"]
