"""Which raw layout a data folder holds, decided by the file names in it."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from recstack.data.schema import DataError


class Layout(StrEnum):
    MOVIELENS_100K = "movielens-100k"  # u.data, u.item, u.user
    MOVIELENS_1M = "movielens-1m"  # ratings.dat, movies.dat, users.dat
    MOVIELENS_CSV = "movielens-csv"  # ratings.csv, movies.csv[, tags.csv]
    ATOMIC = "atomic"  # <name>.inter[, .item, .user]
    EVENT_LOG = "event-log"  # events.csv or events.parquet


ACCEPTED: dict[Layout, str] = {
    Layout.MOVIELENS_100K: "u.data + u.item + u.user (GroupLens ML-100K)",
    Layout.MOVIELENS_1M: "ratings.dat + movies.dat + users.dat (GroupLens ML-1M)",
    Layout.MOVIELENS_CSV: "ratings.csv + movies.csv [+ tags.csv] (GroupLens ML-20M/25M/latest)",
    Layout.ATOMIC: "<name>.inter [+ <name>.item + <name>.user] (RecBole atomic files)",
    Layout.EVENT_LOG: "events.csv or events.parquet (user_id,item_id,timestamp[,event_type,value])",
}
EVENT_LOG_FILES: tuple[str, ...] = ("events.parquet", "events.csv")


def _detect_here(folder: Path, name: str) -> tuple[Layout, str] | None:
    """The layout of the files directly in ``folder`` and, for atomic files, their stem."""
    if (folder / "u.data").is_file():
        return Layout.MOVIELENS_100K, name
    if (folder / "ratings.dat").is_file():
        return Layout.MOVIELENS_1M, name
    if (folder / "ratings.csv").is_file() and (folder / "movies.csv").is_file():
        return Layout.MOVIELENS_CSV, name
    if (folder / f"{name}.inter").is_file():
        return Layout.ATOMIC, name
    inters = sorted(folder.glob("*.inter"))
    if len(inters) == 1:  # a folder renamed after download still holds one obvious data set
        return Layout.ATOMIC, inters[0].stem
    for file in EVENT_LOG_FILES:
        if (folder / file).is_file():
            return Layout.EVENT_LOG, file
    return None


def detect_layout(folder: Path, name: str) -> tuple[Layout, Path, str]:
    """``(layout, root, stem)``: the layout, the folder its files are in, and the atomic stem or event-log file name.

    Looks in ``folder``, then in ``folder/<name>/`` and any other single subfolder (what unzipping an archive into its
    own folder gives). Unknown -> ``DataError`` listing the files found and the layouts accepted.
    """
    candidates = [folder]
    subfolders = (
        sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []
    )
    nested = folder / name
    candidates += [nested] if nested in subfolders else []
    candidates += [p for p in subfolders if p != nested] if len(subfolders) == 1 else []
    for root in candidates:
        found = _detect_here(root, name)
        if found is not None:
            return found[0], root, found[1]
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())[:30] if folder.is_dir() else []
    accepted = "; ".join(ACCEPTED.values())
    raise DataError(
        f"{folder}: no known data layout; found files {files}. Accepted layouts: {accepted}. "
        "Put the files of one of them in this folder."
    )
