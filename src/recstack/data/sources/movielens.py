"""MovieLens in GroupLens' own layouts: ML-100K (``u.data``), ML-1M (``*.dat``) and the CSV releases (20M, 25M, latest).

Every rating becomes one interaction (``event_type`` ``rating``, ``value`` the stars). Titles lose their trailing
"(1995)", which becomes ``year``; genres become ``categories``; CSV tags become the item ``text``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recstack.data.schema import DataError, Dataset, empty_users
from recstack.data.sources.columns import (
    interactions_frame,
    items_frame,
    require_columns,
    str_series,
    to_float,
    to_string,
    to_timestamp_seconds,
    users_frame,
)
from recstack.data.sources.textfile import read_delimited, read_header

ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# Codes of ML-1M's users.dat, from its README ("Age is chosen from the following ranges", "Occupation ...").
ML1M_AGES: dict[str, str] = {
    "1": "Under 18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49", "50": "50-55", "56": "56+",
}  # fmt: skip
ML1M_OCCUPATIONS: tuple[str, ...] = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)  # fmt: skip
_OCCUPATION_BY_CODE = {str(code): label for code, label in enumerate(ML1M_OCCUPATIONS)}
# "Toy Story (1995)", "Babylon 5 (1994) ", "Big Bang Theory (2007-)": the year is the last parenthesised 4 digits.
_TITLE_YEAR = r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-–]\s*\d{0,4})?\)\s*$"
_RATING_NAMES = ("user_id", "item_id", "rating", "timestamp")


def split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """("Toy Story (1995)") -> ("Toy Story", 1995); titles without a trailing year keep their text and get <NA>."""
    parts = titles.str.extract(_TITLE_YEAR)
    matched = parts["title"].notna()
    clean = titles.str.strip().where(~matched, parts["title"])
    return clean, pd.to_numeric(parts["year"], errors="coerce").astype("Int64")


def _ratings(path: Path, delimiter: str, *, header: bool, names: tuple[str, ...] = _RATING_NAMES) -> pd.DataFrame:
    table = read_delimited(path, delimiter, names, header=header, quoting=False, numeric=(names[2], names[3]))
    first = 2 if header else 1
    return interactions_frame(
        to_string(table[names[0]], path, names[0], first, required=True),
        to_string(table[names[1]], path, names[1], first, required=True),
        to_timestamp_seconds(table[names[3]], path, names[3], first),
        to_float(table[names[2]], path, names[2], first, dtype=np.float32),
    )


def _require_files(root: Path, names: tuple[str, ...], what: str) -> None:
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        found = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise DataError(f"{root}: {what} needs {list(names)}; missing {missing}; the folder has {found}")


def load_movielens_100k(root: str | Path) -> Dataset:
    """ML-100K in GroupLens' layout: ``u.data`` (tab), ``u.item`` and ``u.user`` (``|``, Latin-1)."""
    root = Path(root)
    _require_files(root, ("u.data", "u.item", "u.user"), "ML-100K")
    interactions = _ratings(root / "u.data", "\t", header=False)

    item_names = ("item_id", "title", "release_date", "video_release_date", "imdb_url", *ML100K_GENRES)
    table = read_delimited(root / "u.item", "|", item_names, header=False, encoding="latin-1", quoting=False)
    frame = table.to_pandas()
    title, title_year = split_title_year(frame["title"])
    # The release date ("01-Jan-1995") is the authority; the title's year fills in where it is blank.
    release_year = pd.to_numeric(frame["release_date"].str[-4:], errors="coerce").astype("Int64")
    flags = frame[list(ML100K_GENRES)].to_numpy() == "1"
    genres = np.array(ML100K_GENRES, dtype=object)
    items = items_frame(
        to_string(table["item_id"], root / "u.item", "item_id", 1, required=True),
        title,
        release_year.fillna(title_year),
        [list(genres[row]) for row in flags],
    )

    user_names = ("user_id", "age", "gender", "occupation", "zip_code")
    users_table = read_delimited(root / "u.user", "|", user_names, header=False, encoding="latin-1", quoting=False)
    users = users_frame(
        to_string(users_table["user_id"], root / "u.user", "user_id", 1, required=True),
        **{name: users_table[name] for name in user_names[1:]},
    )
    return Dataset("ml-100k", interactions, items, users, source=f"movielens-100k:{root}")


def load_movielens_1m(root: str | Path, name: str = "ml-1m") -> Dataset:
    """ML-1M: ``ratings.dat``, ``movies.dat``, ``users.dat`` (``::``-separated, Latin-1); codes mapped to labels."""
    root = Path(root)
    _require_files(root, ("ratings.dat", "movies.dat", "users.dat"), "ML-1M")
    interactions = _ratings(root / "ratings.dat", "::", header=False)

    movies = read_delimited(
        root / "movies.dat", "::", ("item_id", "title", "genres"), header=False, encoding="latin-1", quoting=False
    )
    frame = movies.to_pandas()
    title, year = split_title_year(frame["title"])
    items = items_frame(
        to_string(movies["item_id"], root / "movies.dat", "item_id", 1, required=True),
        title,
        year,
        _genre_lists(frame["genres"]),
    )

    user_names = ("user_id", "gender", "age", "occupation", "zip_code")
    table = read_delimited(root / "users.dat", "::", user_names, header=False, encoding="latin-1", quoting=False)
    raw = table.to_pandas()
    users = users_frame(
        to_string(table["user_id"], root / "users.dat", "user_id", 1, required=True),
        age=raw["age"].map(ML1M_AGES).fillna(raw["age"]),
        gender=raw["gender"],
        occupation=raw["occupation"].map(_OCCUPATION_BY_CODE).fillna(raw["occupation"]),
        zip_code=raw["zip_code"],
    )
    return Dataset(name, interactions, items, users, source=f"movielens-1m:{root}")


def _genre_lists(genres: pd.Series) -> list[list[str]]:
    # "(no genres listed)" is GroupLens' marker for an empty list.
    return [[] if g in ("", "(no genres listed)") else g.split("|") for g in genres.fillna("")]


def _tags_text(path: Path) -> pd.Series:
    """Distinct tags of each movie, in order of first use, joined by ", " (indexed by item id)."""
    names = read_header(path, ",", quoting=True)
    require_columns(names, ("movieId", "tag"), path)
    table = read_delimited(path, ",", names, header=True)
    tags = pd.DataFrame({"item_id": table["movieId"].to_pandas(), "tag": table["tag"].to_pandas().str.strip()})
    tags = tags[tags["tag"].fillna("") != ""].drop_duplicates()
    return tags.groupby("item_id", sort=False)["tag"].agg(", ".join)


def load_movielens_csv(root: str | Path, name: str = "movielens") -> Dataset:
    """The CSV releases (ml-20m, ml-25m, ml-latest-small): ``ratings.csv``, ``movies.csv``, optional ``tags.csv``."""
    root = Path(root)
    _require_files(root, ("ratings.csv", "movies.csv"), f"MovieLens CSV ({name})")
    ratings_path = root / "ratings.csv"
    header = read_header(ratings_path, ",", quoting=True)
    csv_names = ("userId", "movieId", "rating", "timestamp")
    require_columns(header, csv_names, ratings_path, "GroupLens' ratings.csv has userId,movieId,rating,timestamp")
    table = read_delimited(ratings_path, ",", header, header=True, numeric=("rating", "timestamp"))
    interactions = interactions_frame(
        to_string(table["userId"], ratings_path, "userId", 2, required=True),
        to_string(table["movieId"], ratings_path, "movieId", 2, required=True),
        to_timestamp_seconds(table["timestamp"], ratings_path, "timestamp", 2),
        to_float(table["rating"], ratings_path, "rating", 2, dtype=np.float32),
    )

    movies_path = root / "movies.csv"
    header = read_header(movies_path, ",", quoting=True)
    require_columns(header, ("movieId", "title", "genres"), movies_path)
    movies = read_delimited(movies_path, ",", header, header=True)
    item_ids = to_string(movies["movieId"], movies_path, "movieId", 2, required=True)
    title, year = split_title_year(str_series(movies["title"]))
    text = None
    if (root / "tags.csv").is_file():
        tags = _tags_text(root / "tags.csv")
        text = pd.Series(item_ids.to_pandas()).map(tags).fillna("").to_numpy(dtype=object)
    items = items_frame(item_ids, title, year, _genre_lists(movies["genres"].to_pandas()), text)
    # The CSV releases carry no demographics.
    return Dataset(name, interactions, items, empty_users(), source=f"movielens-csv:{root}")
