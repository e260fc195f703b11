"""``load_dataset``: one entry point from a data set's name to a ``Dataset``, whatever layout its files are in."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recstack.data.schema import DataError, Dataset
from recstack.data.sources.atomic import load_atomic
from recstack.data.sources.download import ARCHIVES, DATA_HOME_VARIABLE, download_dataset, manual_instructions
from recstack.data.sources.event_log import load_event_log
from recstack.data.sources.lake import lake_snapshot, load_lake
from recstack.data.sources.layout import Layout, detect_layout
from recstack.data.sources.movielens import load_movielens_1m, load_movielens_100k, load_movielens_csv
from recstack.data.sources.synthetic import generate_synthetic
from recstack.data.sources.user_sample import sample_users

DEFAULT_DATA_HOME = Path("data/raw")


def resolve_data_home(data_home: str | Path | None = None) -> Path:
    """The argument, else ``$RECSTACK_DATA_HOME``, else ``data/raw`` (relative to the working directory)."""
    if data_home is not None:
        return Path(data_home).expanduser()
    env = os.environ.get(DATA_HOME_VARIABLE)
    return Path(env).expanduser() if env else DEFAULT_DATA_HOME


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir())


def load_folder(folder: Path, name: str) -> Dataset:
    """Load whatever layout ``folder`` holds (see :mod:`recstack.data.sources.layout`)."""
    layout, root, stem = detect_layout(folder, name)
    if layout is Layout.MOVIELENS_100K:
        dataset = load_movielens_100k(root)
    elif layout is Layout.MOVIELENS_1M:
        dataset = load_movielens_1m(root)
    elif layout is Layout.MOVIELENS_CSV:
        dataset = load_movielens_csv(root)
    elif layout is Layout.ATOMIC:
        dataset = load_atomic(root, stem)
    else:
        dataset = load_event_log(root / stem)
    return dataclasses.replace(dataset, name=name)


def load_dataset(name: str, data_home: str | Path | None = None, *, download: bool = True, **options: Any) -> Dataset:
    """Load the data set ``name`` into a :class:`~recstack.data.schema.Dataset`.

    * ``synthetic``: generated, no folder; ``options`` go to :func:`generate_synthetic` (``n_users``, ``n_items``,
      ``n_interactions``, ``n_categories``, ``dim``, ``zipf``, ``seed``, ...).
    * ``events``: option ``path=`` a CSV or Parquet event log.
    * ``lake``: option ``path=`` the collector's event lake; the other options go to
      :func:`~recstack.data.sources.lake.load_lake` (``window_days``/``start``/``end``, ``weights``, ...).
    * anything else: the folder ``<data_home>/<name>/``, its layout detected from the file names (MovieLens 100K /
      1M / CSV, RecBole atomic, ``events.csv``/``events.parquet``). When it is missing and ``name`` is a MovieLens
      release (ml-100k, ml-1m, ml-20m, ml-25m, ml-latest-small), it is downloaded if ``download`` is true.

    ``data_home``: the argument, else ``$RECSTACK_DATA_HOME``, else ``data/raw``.

    Any source also takes ``user_fraction`` (and ``user_sample_seed``, default 0): a seeded share of its users, every
    item kept (:func:`~recstack.data.sources.user_sample.sample_users`).
    """
    fraction = options.pop("user_fraction", None)
    sample_seed = int(options.pop("user_sample_seed", 0) or 0)
    dataset = _load(name, data_home, download=download, **options)
    return dataset if fraction is None else sample_users(dataset, float(fraction), sample_seed)


def _load(name: str, data_home: str | Path | None, *, download: bool, **options: Any) -> Dataset:
    if name == "synthetic":
        return generate_synthetic(**options)
    if name == "events":
        if "path" not in options:
            raise DataError("load_dataset('events') needs path= a CSV or Parquet event log (user_id,item_id,timestamp)")
        path = Path(options.pop("path")).expanduser()
        log_name = options.pop("name", "events")
        _no_options(name, options)
        # A relative path that is not under the working directory may be meant relative to the data home.
        if not path.is_absolute() and not path.exists() and (resolve_data_home(data_home) / path).exists():
            path = resolve_data_home(data_home) / path
        return load_event_log(path, name=log_name)
    if name == "lake":
        if options.get("path") is None:
            raise DataError("load_dataset('lake') needs path= the event lake folder (the collector's `lake` setting)")
        return load_lake(**options)
    _no_options(name, options)
    home = resolve_data_home(data_home)
    folder = home / name
    if not _has_files(folder):
        archive = ARCHIVES.get(name)
        if archive is None:
            raise DataError(
                f"no data for {name!r}: {folder} is missing or empty. {manual_instructions(name, folder, None)}; "
                f"or use a name recstack can download ({sorted(ARCHIVES)}), 'synthetic' or 'events'"
            )
        if not download:
            raise DataError(
                f"{name} is not in {folder} and download=False; {manual_instructions(name, folder, archive.url)}"
            )
        if folder.is_dir():  # holds nothing but hidden files: the atomic rename needs the name free
            try:
                folder.rmdir()
            except OSError:
                raise DataError(
                    f"{folder} holds only hidden files, so {name} cannot be downloaded into it; remove it, or "
                    f"{manual_instructions(name, folder, archive.url)}"
                ) from None
        download_dataset(name, home)
    return load_folder(folder, name)


_SNAPSHOT_OPTIONS = ("path", "window_days", "start", "end", "now")


def source_snapshot(source: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What a growing source holds now beyond what its config says (``None`` for sources whose config names their
    content): the event lake's window and part files (:func:`~recstack.data.sources.lake.lake_snapshot`). The
    prepared-split cache key includes it, so a lake that gained files is prepared again."""
    if not isinstance(source, Mapping) or source.get("path") is None:
        return None
    if source.get("name") != "lake" and not str(source.get("_target_", "")).endswith("load_lake"):
        return None
    return lake_snapshot(**{key: source[key] for key in _SNAPSHOT_OPTIONS if key in source})


def _no_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise TypeError(f"load_dataset({name!r}) takes no options; got {sorted(options)}")
