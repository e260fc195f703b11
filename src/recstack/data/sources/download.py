"""Fetching a public data set from its official URL: checksum verified, unzipped atomically (temp folder + rename).

Checksums are the MD5 values GroupLens publishes next to each archive (``<archive>.zip.md5``). Where we found them:
* ml-100k, ml-1m, ml-20m, ml-25m: ``eli-osherovich/papers_with_code`` ``datasets/movielens/dl_config.py``; ml-1m also
  ``AKSW/frankgraphbench`` ``datasets/ml-1m.zip.md5`` (a copy of GroupLens' file); ml-1m and ml-20m also a public
  script that quotes ``curl -O http://files.grouplens.org/datasets/movielens/ml-20m.zip.md5``.
* ml-latest-small: GroupLens' "latest" archives may be regenerated, and no MD5 is mirrored in a source we could
  cite. We pin the SHA-256 recorded in one public dataset card (download of 2026-10-07, 100,836 ratings, 9,742
  movies); it is corroborated by nobody else, so a mismatch message says the archive may have been refreshed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from recstack.data.schema import DataError

DATA_HOME_VARIABLE = "RECSTACK_DATA_HOME"
_GROUPLENS = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class Archive:
    """One downloadable archive: where it is, how to check it, and the folder it unzips to."""

    url: str
    algorithm: str  # "md5" or "sha256"
    digest: str
    folder: str  # top-level folder inside the zip
    note: str = ""


ARCHIVES: dict[str, Archive] = {
    "ml-100k": Archive(f"{_GROUPLENS}/ml-100k.zip", "md5", "0e33842e24a9c977be4e0107933c0723", "ml-100k"),
    "ml-1m": Archive(f"{_GROUPLENS}/ml-1m.zip", "md5", "c4d9eecfca2ab87c1945afe126590906", "ml-1m"),
    "ml-20m": Archive(f"{_GROUPLENS}/ml-20m.zip", "md5", "cd245b17a1ae2cc31bb14903e1204af3", "ml-20m"),
    "ml-25m": Archive(f"{_GROUPLENS}/ml-25m.zip", "md5", "6b51fb2759a8657d3bfcbfc42b592ada", "ml-25m"),
    "ml-latest-small": Archive(
        f"{_GROUPLENS}/ml-latest-small.zip",
        "sha256",
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        "ml-latest-small",
        note="GroupLens may refresh the 'latest' archives; if it did, download it yourself and unzip it there",
    ),
}


def manual_instructions(name: str, folder: Path, url: str | None) -> str:
    """What to do by hand: where the files go and which variable points elsewhere."""
    source = f"download {url} yourself and unzip it" if url else "put its files"
    return (
        f"{source} so that its files are directly in {folder}/ (a nested {folder.name}/{folder.name}/ folder works "
        f"too), or set {DATA_HOME_VARIABLE} to a folder that has a {name}/ subfolder"
    )


def _fetch(url: str, target: Path, algorithm: str, timeout: float) -> str:
    digest = hashlib.new(algorithm)
    with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def download_dataset(
    name: str, data_home: str | Path, *, url: str | None = None, timeout: float = 30.0, archive: Archive | None = None
) -> Path:
    """Download ``name`` into ``<data_home>/<name>/`` and return that folder.

    ``url`` overrides the official address (a mirror); the checksum is still verified. Any failure raises a
    ``DataError`` naming the URL, the folder to fill by hand and ``RECSTACK_DATA_HOME``; a half-done download never
    leaves a partial ``<name>/`` folder behind.
    """
    spec = archive or ARCHIVES.get(name)
    if spec is None:
        raise DataError(f"no download is known for {name!r}; known: {sorted(ARCHIVES)}")
    url = url or spec.url
    home = Path(data_home)
    folder = home / name
    try:
        home.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}-download-", dir=home))
    except OSError as err:
        raise DataError(f"cannot write to {home} ({err}); {manual_instructions(name, folder, url)}") from None
    try:
        zip_path = work / f"{name}.zip"
        try:
            got = _fetch(url, zip_path, spec.algorithm, timeout)
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise DataError(
                f"could not download {name} from {url} ({err}); {manual_instructions(name, folder, url)}"
            ) from None
        if got != spec.digest:
            raise DataError(
                f"{url}: {spec.algorithm} of the download is {got}, expected {spec.digest} (corrupt or changed "
                f"archive). {spec.note + '. ' if spec.note else ''}{manual_instructions(name, folder, url)}"
            )
        unzipped = work / "unzipped"
        try:
            with zipfile.ZipFile(zip_path) as archive_file:
                archive_file.extractall(unzipped)
        except zipfile.BadZipFile as err:
            raise DataError(
                f"{url}: not a valid zip archive ({err}); {manual_instructions(name, folder, url)}"
            ) from None
        inner = unzipped / spec.folder
        source = inner if inner.is_dir() else unzipped
        # Same file system, so the rename is atomic: readers see no folder or a complete one.
        try:
            os.replace(source, folder)
        except OSError as err:  # e.g. another process filled the folder meanwhile
            raise DataError(f"cannot move the unzipped files to {folder} ({err}); remove {folder} and retry") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder
