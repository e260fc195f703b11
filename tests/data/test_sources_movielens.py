"""MovieLens layouts, each from a small fixture written here, and the real ML-100K from $RECSTACK_DATA_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recstack.data.schema import Dataset
from recstack.data.sources import (
    load_dataset,
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_csv,
)
from recstack.data.sources.movielens import ML100K_GENRES, split_title_year


def write_ml100k(root: Path) -> Path:
    """Three users, four movies in GroupLens' ML-100K layout (u.item in Latin-1, one movie without a date)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.data").write_text("1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t891717742\n3\t30\t1\t878887116\n")

    def flags(*genres: str) -> str:
        return "|".join("1" if g in genres else "0" for g in ML100K_GENRES)

    childrens = "Children's"
    lines = [
        f"10|Toy Story (1995)|01-Jan-1995||http://imdb/1|{flags('Animation', childrens, 'Comedy')}",
        f"20|Misérables, Les (1995)|01-Jan-1995||http://imdb/2|{flags('Drama', 'Musical')}",
        f"30|unknown||||{flags('unknown')}",
        f"40|Land Before Time III (1995) (V)|||http://imdb/4|{flags('Animation')}",
    ]
    (root / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (root / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n")
    return root


def write_ml1m(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    movies = "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
    (root / "movies.dat").write_bytes(movies.encode("latin-1"))
    (root / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return root


def write_ml_csv(root: Path, *, tags: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,2.5,1445714835\n"
    )
    (root / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '3,"American President, The (1995)",Comedy|Drama|Romance\n'
        "5,Big Bang Theory (2007-),(no genres listed)\n"
        "7,Babylon 5,Sci-Fi\n"
    )
    if tags:
        (root / "tags.csv").write_text(
            "userId,movieId,tag,timestamp\n1,1,pixar,1139045764\n2,1,fun,1139045765\n3,1,pixar,1139045766\n"
            '1,3,"politics, romance",1139045767\n'
        )
    return root


def assert_schema(dataset: Dataset) -> None:
    inter = dataset.interactions
    for column in ("user_id", "item_id", "event_type"):
        assert pd.api.types.is_string_dtype(inter[column]) and inter[column].dtype != object, column
    assert inter["timestamp"].dtype == np.int64
    assert inter["value"].dtype == np.float32
    assert dataset.items["year"].dtype == "Int64"
    assert dataset.items["item_id"].dtype != object and dataset.items["title"].dtype != object
    assert all(isinstance(c, list) for c in dataset.items["categories"])


def test_ml100k_official_layout(tmp_path: Path) -> None:
    dataset = load_movielens_100k(write_ml100k(tmp_path / "ml-100k"))
    assert_schema(dataset)
    inter = dataset.interactions
    assert len(inter) == 4 and set(inter["event_type"]) == {"rating"}
    assert inter["value"].tolist() == [5.0, 3.0, 4.0, 1.0]
    assert inter["timestamp"].iloc[0] == 881250949
    items = dataset.items.set_index("item_id")
    assert items.loc["10", "title"] == "Toy Story" and items.loc["10", "year"] == 1995
    assert items.loc["10", "categories"] == ["Animation", "Children's", "Comedy"]
    assert items.loc["20", "title"] == "Misérables, Les"  # decoded from Latin-1
    assert pd.isna(items.loc["30", "year"]) and items.loc["30", "categories"] == ["unknown"]
    assert items.loc["40", "title"] == "Land Before Time III (1995) (V)" and pd.isna(items.loc["40", "year"])
    users = dataset.users.set_index("user_id")
    assert users.loc["2"].tolist() == ["53", "F", "other", "94043"]
    assert dataset.demographic_columns == ["age", "gender", "occupation", "zip_code"]


def test_ml100k_nested_after_unzip_and_atomic_layout(tmp_path: Path) -> None:
    write_ml100k(tmp_path / "ml-100k" / "ml-100k")  # what `unzip ml-100k.zip` inside ml-100k/ gives
    nested = load_dataset("ml-100k", tmp_path, download=False)
    assert nested.name == "ml-100k" and len(nested.interactions) == 4

    atomic_home = tmp_path / "atomic"
    folder = atomic_home / "ml-100k"
    folder.mkdir(parents=True)
    (folder / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t5\t881250949\n"
    )
    (folder / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Children's Comedy\n"
    )
    atomic = load_dataset("ml-100k", atomic_home, download=False)
    assert_schema(atomic)
    assert atomic.items["categories"].iloc[0] == nested.items.set_index("item_id").loc["10", "categories"]
    assert atomic.items["title"].iloc[0] == "Toy Story"


def test_ml1m(tmp_path: Path) -> None:
    dataset = load_movielens_1m(write_ml1m(tmp_path / "ml-1m"))
    assert_schema(dataset)
    assert len(dataset.interactions) == 3
    items = dataset.items.set_index("item_id")
    assert items.loc["661", "categories"] == ["Animation", "Children's", "Musical"]
    assert items.loc["1193", "title"] == "One Flew Over the Cuckoo's Nest" and items.loc["1193", "year"] == 1975
    users = dataset.users.set_index("user_id")
    assert users.loc["1"].to_dict() == {
        "gender": "F",
        "age": "Under 18",
        "occupation": "K-12 student",
        "zip_code": "48067",
    }
    assert users.loc["2", "age"] == "56+" and users.loc["2", "occupation"] == "self-employed"


def test_ml_csv_with_tags(tmp_path: Path) -> None:
    dataset = load_movielens_csv(write_ml_csv(tmp_path / "ml-latest-small"), name="ml-latest-small")
    assert_schema(dataset)
    assert dataset.interactions["value"].tolist() == [4.0, 4.5, 2.5]
    items = dataset.items.set_index("item_id")
    assert items.loc["1", "text"] == "pixar, fun"  # distinct tags, first-use order
    assert items.loc["3", "text"] == "politics, romance"
    assert items.loc["5", "text"] == "" and items.loc["5", "categories"] == []
    assert items.loc["3", "title"] == "American President, The" and items.loc["3", "year"] == 1995
    assert items.loc["5", "title"] == "Big Bang Theory" and items.loc["5", "year"] == 2007
    assert items.loc["7", "title"] == "Babylon 5" and pd.isna(items.loc["7", "year"])
    assert items.loc["1", "categories"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert list(dataset.users.columns) == ["user_id"]


def test_ml_csv_without_tags_via_load_dataset(tmp_path: Path) -> None:
    write_ml_csv(tmp_path / "ml-20m", tags=False)
    dataset = load_dataset("ml-20m", tmp_path, download=False)
    assert dataset.name == "ml-20m" and (dataset.items["text"] == "").all()


def test_split_title_year() -> None:
    titles = pd.Series(["Toy Story (1995)", "Babylon 5 (1994) ", "Nothing", "Show (2007-2009)"], dtype="str")
    clean, year = split_title_year(titles)
    assert clean.tolist() == ["Toy Story", "Babylon 5", "Nothing", "Show"]
    assert year.tolist()[:2] == [1995, 1994] and pd.isna(year.iloc[2]) and year.iloc[3] == 2007


def test_real_ml100k() -> None:
    home = os.environ.get("RECSTACK_DATA_HOME")
    if not home:
        pytest.skip("RECSTACK_DATA_HOME is unset: the real ML-100K lives outside the repo (CI sets the variable)")
    dataset = load_dataset("ml-100k", home, download=False)
    assert_schema(dataset)
    inter = dataset.interactions
    assert len(inter) == 100_000
    assert inter["user_id"].nunique() == 943 and inter["item_id"].nunique() == 1_682
    assert len(dataset.items) == 1_682 and len(dataset.users) == 943
    assert {"age", "gender", "occupation", "zip_code"} <= set(dataset.demographic_columns)
    assert set(dataset.users["gender"]) == {"M", "F"}
    assert inter["value"].between(1, 5).all() and set(inter["event_type"]) == {"rating"}
    assert inter["timestamp"].between(874_000_000, 894_000_000).all()  # Sept 1997 - April 1998
    toy = dataset.items.set_index("item_id").loc["1"]
    assert toy["title"] == "Toy Story" and toy["year"] == 1995
    assert toy["categories"] == ["Animation", "Children's", "Comedy"]
    assert dataset.items["year"].isna().sum() <= 2  # the "unknown" movie and a "V" (video) release


def test_real_ml100k_official_layout_matches_atomic(tmp_path: Path) -> None:
    """The real ratings, rewritten in GroupLens' layout, load to the same tables as the atomic files."""
    home = os.environ.get("RECSTACK_DATA_HOME")
    if not home:
        pytest.skip("RECSTACK_DATA_HOME is unset: the real ML-100K lives outside the repo (CI sets the variable)")
    atomic = load_dataset("ml-100k", home, download=False)
    root = tmp_path / "ml-100k"
    root.mkdir()
    inter = atomic.interactions
    pd.DataFrame(
        {c: inter[c].astype(str) for c in ("user_id", "item_id")}
        | {"rating": inter["value"].astype(int), "timestamp": inter["timestamp"]}
    ).to_csv(root / "u.data", sep="\t", header=False, index=False)
    atomic.users.to_csv(root / "u.user", sep="|", header=False, index=False)
    items = atomic.items
    year = items["year"].astype("string").fillna("")
    lines = [
        "|".join(
            [
                item_id,
                f"{title} ({y})" if y else title,
                f"01-Jan-{y}" if y else "",
                "",
                "",
                *("1" if g in categories else "0" for g in ML100K_GENRES),
            ]
        )
        for item_id, title, y, categories in zip(items["item_id"], items["title"], year, items["categories"])
    ]
    (root / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))

    official = load_movielens_100k(root)
    pd.testing.assert_frame_equal(official.interactions, atomic.interactions)
    pd.testing.assert_frame_equal(official.users, atomic.users)
    left, right = official.items.set_index("item_id"), atomic.items.set_index("item_id")
    assert left["categories"].equals(right["categories"])
    # Titles ending in "(1995)" with no release year (RecBole's "V" video rows) differ by design: the official
    # loader takes the year from the title.
    has_year = right["year"].notna()
    assert left["year"][has_year].equals(right["year"][has_year]) and (~has_year).sum() <= 2
    assert (left["title"] == right["title"])[has_year].all()
