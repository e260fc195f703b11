"""Event logs in CSV and Parquet, with Unix-second and ISO-8601 timestamps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recstack.data.schema import DataError
from recstack.data.sources import load_dataset, load_event_log

# 2024-01-01T10:00:00Z and one hour later, in seconds.
T0, T1 = 1_704_103_200, 1_704_106_800


def test_csv_with_iso_timestamps_and_optional_columns(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(
        "user_id,item_id,timestamp,event_type,value\n"
        "alice,007,2024-01-01T10:00:00Z,view,12.5\n"
        "bob,sku-2,2024-01-01T12:00:00+01:00,purchase,1\n"
        "bob,sku-3,2024-01-01 11:00:00,click,1\n"  # naive: read as UTC
    )
    dataset = load_event_log(path)
    inter = dataset.interactions
    assert inter["timestamp"].tolist() == [T0, T1, T1] and inter["timestamp"].dtype == np.int64
    assert inter["item_id"].tolist() == ["007", "sku-2", "sku-3"]
    assert inter["event_type"].tolist() == ["view", "purchase", "click"]
    assert inter["value"].tolist() == [12.5, 1.0, 1.0] and inter["value"].dtype == np.float32
    assert dataset.name == "log" and dataset.items.empty and list(dataset.users.columns) == ["user_id"]


def test_csv_with_unix_seconds_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(f"item_id,user_id,timestamp\n10,1,{T0}\n11,1,{T1}.0\n")
    inter = load_event_log(path).interactions
    assert inter["user_id"].tolist() == ["1", "1"] and inter["item_id"].tolist() == ["10", "11"]
    assert inter["timestamp"].tolist() == [T0, T1]
    assert inter["value"].tolist() == [1.0, 1.0] and inter["event_type"].tolist() == ["interaction"] * 2


@pytest.mark.parametrize("kind", ["datetime", "unix", "iso"])
def test_parquet(tmp_path: Path, kind: str) -> None:
    times = {
        "datetime": pd.to_datetime(["2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"]),
        "unix": np.array([T0, T1], dtype=np.int64),
        "iso": ["2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"],
    }[kind]
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": [1, 2], "item_id": ["a", "b"], "timestamp": times, "value": [2, 3]}).to_parquet(path)
    inter = load_event_log(path).interactions
    assert inter["user_id"].tolist() == ["1", "2"]  # integer ids become text
    assert inter["timestamp"].tolist() == [T0, T1] and inter["value"].tolist() == [2.0, 3.0]


def test_parquet_bad_value_names_row(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "timestamp": [T0, None]}).to_parquet(path)
    with pytest.raises(DataError, match=r"events\.parquet: row 2, column 'timestamp'"):
        load_event_log(path)


def test_mixed_timestamp_forms(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(f"user_id,item_id,timestamp\na,x,{T0}\nb,y,2024-01-01T10:00:00Z\n")
    with pytest.raises(DataError, match=r"log\.csv: line 3, column 'timestamp': .* mixes forms"):
        load_event_log(path)


def test_load_dataset_events_and_folder(tmp_path: Path) -> None:
    path = tmp_path / "anywhere.csv"
    path.write_text(f"user_id,item_id,timestamp\na,x,{T0}\n")
    assert load_dataset("events", path=path).name == "events"
    folder = tmp_path / "home" / "shop"
    folder.mkdir(parents=True)
    (folder / "events.csv").write_text(path.read_text())
    dataset = load_dataset("shop", tmp_path / "home")
    assert dataset.name == "shop" and dataset.interactions["user_id"].tolist() == ["a"]
    with pytest.raises(DataError, match="needs path="):
        load_dataset("events")


def test_millisecond_timestamps_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(f"user_id,item_id,timestamp\na,x,{T0}\nb,y,{T1 * 1000}\n")
    with pytest.raises(DataError, match=r"log\.csv: line 3, column 'timestamp': .* too large for Unix seconds"):
        load_event_log(path)


def test_relative_path_under_data_home(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    pd.DataFrame({"user_id": ["a"], "item_id": ["x"], "timestamp": [T0]}).to_parquet(
        tmp_path / "logs" / "week1.parquet"
    )
    dataset = load_dataset("events", tmp_path, path="logs/week1.parquet")
    assert dataset.interactions["timestamp"].tolist() == [T0]


def test_quoted_csv_header(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(f'"user_id","item_id","timestamp"\n"a","x",{T0}\n')
    assert load_event_log(path).interactions["user_id"].tolist() == ["a"]
