"""RecBole atomic files with typed headers, written here; columns mapped onto the schema by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recstack.data.sources import load_atomic, load_dataset


def write_atomic_set(folder: Path, name: str = "shop") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text(
        "user_id:token\titem_id:token\tlabel:float\ttimestamp:float\n"
        "u1\t007\t1\t1700000000.0\n"
        "u1\tB2\t0\t1700000100.5\n"
        "u2\t007\t1\t1700000200\n"
    )
    (folder / f"{name}.item").write_text(
        "item_id:token\ttitle:token_seq\tyear:token\tcategories:token_seq\tbrand:token\tdescription:token_seq\tprice:float\n"
        '007\tA "quoted" lamp\t2019\tHome Lighting\tLumo\tbright warm lamp\t19.5\n'
        "B2\tChair\tunknown\t\t\t\t5\n"
    )
    (folder / f"{name}.user").write_text("user_id:token\tage:token\tcountry:token\nu1\t30\tFR\nu2\t\tDE\n")
    return folder


def test_typed_headers_and_field_mapping(tmp_path: Path) -> None:
    dataset = load_atomic(write_atomic_set(tmp_path / "shop"), "shop")
    inter = dataset.interactions
    assert inter["item_id"].tolist() == ["007", "B2", "007"]  # tokens stay text: leading zeros kept
    assert inter["value"].tolist() == [1.0, 0.0, 1.0] and inter["value"].dtype == np.float32
    assert inter["timestamp"].tolist() == [1700000000, 1700000100, 1700000200]
    assert set(inter["event_type"]) == {"interaction"}  # a label, not a rating
    items = dataset.items.set_index("item_id")
    assert items.loc["007", "title"] == 'A "quoted" lamp'  # tab-separated: quotes are plain characters
    assert items.loc["007", "year"] == 2019 and pd.isna(items.loc["B2", "year"])
    assert items.loc["007", "categories"] == ["Home", "Lighting"] and items.loc["B2", "categories"] == []
    assert items.loc["007", "text"] == "Lumo bright warm lamp" and items.loc["B2", "text"] == ""
    users = dataset.users.set_index("user_id")
    assert users.loc["u1", "country"] == "FR" and pd.isna(users.loc["u2", "age"])
    assert users["age"].dtype != object


def test_ratings_without_side_files_and_without_timestamps(tmp_path: Path) -> None:
    folder = tmp_path / "plays"
    folder.mkdir()
    (folder / "plays.inter").write_text("user_id:token\tartist_id:token\tweight:float\n1\t10\t3\n1\t11\t7\n")
    dataset = load_atomic(folder, "plays")
    assert dataset.interactions["item_id"].tolist() == ["10", "11"]
    assert dataset.interactions["value"].tolist() == [3.0, 7.0]
    # No times in the file: file order, and the source says so.
    assert dataset.interactions["timestamp"].tolist() == [0, 1] and "timestamp=row-order" in dataset.source
    assert dataset.items.empty and list(dataset.users.columns) == ["user_id"]


def test_auto_detected_by_load_dataset(tmp_path: Path) -> None:
    write_atomic_set(tmp_path / "shop")
    dataset = load_dataset("shop", tmp_path)
    assert dataset.name == "shop" and len(dataset.interactions) == 3 and len(dataset.items) == 2
    # A folder renamed after download still holds one obvious atomic set.
    write_atomic_set(tmp_path / "renamed", name="original")
    assert len(load_dataset("renamed", tmp_path).interactions) == 3


def test_rating_event_type(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "r.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t4\t5\n")
    assert load_atomic(folder, "r").interactions["event_type"].tolist() == ["rating"]
