"""Bad input fails with a DataError that names the file, the line and the column, and what to do.

The download test uses the real network path: this machine (and CI) has no route to GroupLens, and a local port
with nothing listening fails at once, so nothing is mocked.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pandas as pd
import pytest

from recstack.data.schema import DataError
from recstack.data.sources import download_dataset, load_atomic, load_dataset, load_event_log, load_movielens_1m

ATOMIC_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write_atomic(folder: Path, body: str, header: str = ATOMIC_HEADER, name: str = "toy") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text(header + body)
    return folder


def test_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user_id,timestamp\n1,100\n")
    with pytest.raises(DataError) as err:
        load_event_log(path)
    message = str(err.value)
    assert str(path) in message and "line 1" in message and "['item_id']" in message and "user_id" in message


def test_missing_atomic_item_column(tmp_path: Path) -> None:
    folder = write_atomic(tmp_path / "toy", "1\t5\n", header="user_id:token\trating:float\n")
    with pytest.raises(DataError, match=r"toy\.inter: line 1 \(header\): no item column"):
        load_atomic(folder, "toy")


def test_non_numeric_timestamp_names_first_bad_line(tmp_path: Path) -> None:
    folder = write_atomic(tmp_path / "toy", "1\t2\t3\t100\n1\t3\t4\t101\n2\t2\t5\tyesterday\n2\t3\t5\tlater\n")
    with pytest.raises(DataError) as err:
        load_atomic(folder, "toy")
    message = str(err.value)
    assert "toy.inter: line 4, column 'timestamp'" in message and "'yesterday'" in message


def test_non_numeric_rating(tmp_path: Path) -> None:
    root = tmp_path / "ml-1m"
    root.mkdir()
    (root / "ratings.dat").write_text("1::1193::5::978300760\n1::661::three::978302109\n")
    (root / "movies.dat").write_text("1193::A (1975)::Drama\n")
    (root / "users.dat").write_text("1::F::1::10::48067\n")
    with pytest.raises(DataError, match=r"ratings\.dat: line 2, column 'rating': 'three' is not a number"):
        load_movielens_1m(root)


def test_bad_iso_timestamp_in_event_log(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\na,x,2024-01-01T10:00:00Z\nb,y,2024-13-45T99:00:00\n")
    with pytest.raises(DataError, match=r"log\.csv: line 3, column 'timestamp': '2024-13-45T99:00:00' is neither"):
        load_event_log(path)


def test_blank_id(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\na,x,1\n,y,2\n")
    with pytest.raises(DataError, match=r"log\.csv: line 3, column 'user_id': the value is empty"):
        load_event_log(path)


def test_wrong_number_of_fields(tmp_path: Path) -> None:
    folder = write_atomic(tmp_path / "toy", "1\t2\t3\t100\n1\t3\n")
    with pytest.raises(DataError, match=r"toy\.inter: line 3: expected 4 fields"):
        load_atomic(folder, "toy")


def test_unknown_layout_lists_files_and_layouts(tmp_path: Path) -> None:
    folder = tmp_path / "mystery"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / "data.json").write_text("{}")
    with pytest.raises(DataError) as err:
        load_dataset("mystery", tmp_path)
    message = str(err.value)
    assert "no known data layout" in message and "data.json" in message and "notes.txt" in message
    assert "u.data" in message and ".inter" in message and "events.csv" in message and "ratings.csv" in message


def test_untyped_atomic_header(tmp_path: Path) -> None:
    folder = write_atomic(tmp_path / "toy", "1\t2\n", header="user_id\titem_id:token\n")
    with pytest.raises(DataError, match=r"line 1 \(header\), column 1 'user_id': atomic headers are name:type"):
        load_atomic(folder, "toy")


def test_bad_encoding_names_line_and_byte_offset(tmp_path: Path) -> None:
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "toy.inter").write_bytes(ATOMIC_HEADER.encode() + b"1\t2\t3\t100\n1\t3\t4\t101\n")
    item = b"item_id:token\ttitle:token_seq\n2\tCaf\xe9 Society\n3\tPlain\n"  # Latin-1 where UTF-8 is expected
    (folder / "toy.item").write_bytes(item)
    with pytest.raises(DataError) as err:
        load_atomic(folder, "toy")
    message = str(err.value)
    offset = item.index(b"\xe9")
    assert f"toy.item: line 2, byte offset {offset}: not valid UTF-8" in message


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("")
    with pytest.raises(DataError, match=r"events\.csv: the file is empty \(0 bytes\)"):
        load_event_log(path)


def test_header_only_file(tmp_path: Path) -> None:
    folder = write_atomic(tmp_path / "toy", "")
    with pytest.raises(DataError, match=r"toy\.inter: no rows of data below the header"):
        load_atomic(folder, "toy")


def test_empty_parquet(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": pd.Series([], dtype="str"), "item_id": [], "timestamp": []}).to_parquet(path)
    with pytest.raises(DataError, match=r"events\.parquet: no rows"):
        load_event_log(path)


def test_unknown_name_without_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("my-shop", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "my-shop") in message and "RECSTACK_DATA_HOME" in message


def test_offline_download_names_url_folder_and_variable(tmp_path: Path) -> None:
    # No network here (and in CI): the official URL fails for real, quickly (name resolution).
    with pytest.raises(DataError) as err:
        load_dataset("ml-100k", tmp_path / "home")
    message = str(err.value)
    assert "https://files.grouplens.org/datasets/movielens/ml-100k.zip" in message
    assert str(tmp_path / "home" / "ml-100k") in message and "RECSTACK_DATA_HOME" in message
    assert not (tmp_path / "home" / "ml-100k").exists()  # no partial folder left behind
    assert list((tmp_path / "home").iterdir()) == []  # nor the temporary download folder


def test_unreachable_mirror(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: the connection is refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ml-1m.zip"
    with pytest.raises(DataError) as err:
        download_dataset("ml-1m", tmp_path, url=url, timeout=5)
    message = str(err.value)
    assert url in message and str(tmp_path / "ml-1m") in message and "RECSTACK_DATA_HOME" in message


def test_download_disabled(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"download=False.*ml-1m\.zip.*RECSTACK_DATA_HOME"):
        load_dataset("ml-1m", tmp_path, download=False)


def test_folder_with_only_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / ".DS_Store").write_text("")
    with pytest.raises(DataError, match=r"holds only hidden files.*RECSTACK_DATA_HOME"):
        load_dataset("ml-100k", tmp_path)
