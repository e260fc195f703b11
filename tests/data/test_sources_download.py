"""Downloads through a real HTTP server on localhost: checksum verified, unzipped atomically, loadable at once."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recstack.data.schema import DataError
from recstack.data.sources import ARCHIVES, download_dataset, load_dataset
from recstack.data.sources.download import Archive


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on a free localhost port, and its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def zip_ml100k(path: Path) -> str:
    """A tiny archive laid out like GroupLens' ml-100k.zip (files under ml-100k/); returns its MD5."""
    genres = "|".join(["0"] * 18 + ["1"])
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ml-100k/u.data", "1\t10\t5\t881250949\n2\t10\t3\t881250950\n")
        archive.writestr("ml-100k/u.item", f"10|Toy Story (1995)|01-Jan-1995||http://imdb|{genres}\n")
        archive.writestr("ml-100k/u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
        archive.writestr("ml-100k/README", "test archive\n")
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_checksums_are_pinned_for_every_archive() -> None:
    assert set(ARCHIVES) == {"ml-100k", "ml-1m", "ml-20m", "ml-25m", "ml-latest-small"}
    for name, archive in ARCHIVES.items():
        assert archive.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert len(archive.digest) == {"md5": 32, "sha256": 64}[archive.algorithm]


def test_download_verifies_and_unzips(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, base = http_root
    digest = zip_ml100k(served / "ml-100k.zip")
    home = tmp_path / "home"
    archive = Archive(f"{base}/ml-100k.zip", "md5", digest, "ml-100k")
    folder = download_dataset("ml-100k", home, archive=archive)
    assert folder == home / "ml-100k" and (folder / "u.data").is_file()
    assert [p.name for p in home.iterdir()] == ["ml-100k"]  # the temporary folder is gone
    dataset = load_dataset("ml-100k", home, download=False)
    assert len(dataset.interactions) == 2 and dataset.items["title"].tolist() == ["Toy Story"]


def test_checksum_mismatch_leaves_nothing(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, base = http_root
    zip_ml100k(served / "ml-100k.zip")
    home = tmp_path / "home"
    archive = Archive(f"{base}/ml-100k.zip", "md5", "0" * 32, "ml-100k")
    with pytest.raises(DataError) as err:
        download_dataset("ml-100k", home, archive=archive)
    message = str(err.value)
    assert "md5 of the download is" in message and "expected 00000000" in message
    assert "RECSTACK_DATA_HOME" in message and str(home / "ml-100k") in message
    assert list(home.iterdir()) == []


def test_official_checksum_rejects_other_bytes(http_root: tuple[Path, str], tmp_path: Path) -> None:
    # The pinned GroupLens MD5 is what gets checked when only the URL changes (a mirror).
    served, base = http_root
    zip_ml100k(served / "ml-100k.zip")
    with pytest.raises(DataError, match="expected 0e33842e24a9c977be4e0107933c0723"):
        download_dataset("ml-100k", tmp_path / "home", url=f"{base}/ml-100k.zip")


def test_http_error_is_a_data_error(http_root: tuple[Path, str], tmp_path: Path) -> None:
    _, base = http_root
    with pytest.raises(DataError, match=r"could not download ml-1m from .*/missing\.zip \(HTTP Error 404"):
        download_dataset("ml-1m", tmp_path / "home", url=f"{base}/missing.zip")
