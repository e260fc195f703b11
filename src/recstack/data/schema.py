"""The one typed model of a dataset that every source loads into and every later stage reads.

A ``Dataset`` is three tables:

* ``interactions``: one row per event, any source appends here.
  ``user_id`` (str), ``item_id`` (str), ``timestamp`` (int64, Unix seconds), ``value`` (float32; a rating, a dwell
  time, 1.0 for a bare click), ``event_type`` (str: ``rating``, ``view``, ``click``, ...).
* ``items``: ``item_id`` (str), ``title`` (str), ``year`` (Int64, nullable), ``categories`` (list of str),
  ``text`` (str: free text such as tags; may be empty).
* ``users``: ``user_id`` (str) plus demographic columns (str, nullable), e.g. ``age``, ``gender``, ``occupation``.

Raw ids are strings everywhere so that they can be pseudonymised (hashed) without changing a type, and so that
serving, which receives ids over HTTP, never guesses a dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "timestamp", "value", "event_type")
ITEM_COLUMNS: tuple[str, ...] = ("item_id", "title", "year", "categories", "text")
USER_KEY = "user_id"


class DataError(ValueError):
    """Bad input data: the message names the file, line and column (or the filter) at fault and what to do."""


def _require(frame: pd.DataFrame, columns: tuple[str, ...], table: str, source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: table {table!r} lacks column(s) {missing}; it has {list(frame.columns)}")


@dataclass(frozen=True)
class Dataset:
    """Interactions, item metadata and user demographics of one data source (see the module docstring)."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    source: str

    def __post_init__(self) -> None:
        _require(self.interactions, INTERACTION_COLUMNS, "interactions", self.source)
        _require(self.items, ITEM_COLUMNS, "items", self.source)
        _require(self.users, (USER_KEY,), "users", self.source)

    @property
    def demographic_columns(self) -> list[str]:
        return [c for c in self.users.columns if c != USER_KEY]

    def __repr__(self) -> str:  # a DataFrame repr is too long to be useful here
        return (
            f"Dataset(name={self.name!r}, interactions={len(self.interactions):,}, items={len(self.items):,}, "
            f"users={len(self.users):,}, source={self.source!r})"
        )


def empty_items() -> pd.DataFrame:
    """An items table with the right columns and no rows (for sources without item metadata)."""
    return pd.DataFrame(
        {
            "item_id": pd.Series([], dtype="string"),
            "title": pd.Series([], dtype="string"),
            "year": pd.Series([], dtype="Int64"),
            "categories": pd.Series([], dtype=object),
            "text": pd.Series([], dtype="string"),
        }
    )


def empty_users() -> pd.DataFrame:
    """A users table with only the key column (for sources without demographics)."""
    return pd.DataFrame({"user_id": pd.Series([], dtype="string")})
