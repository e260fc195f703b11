"""recstack-collect as a user runs it: consume until SIGTERM, erase by raw user id, purge, keygen; bad arguments are
one line and exit status 2."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from recstack.cli.collect import main
from recstack.collect.pseudonymise import Pseudonymiser
from recstack.collect.records import StreamNames, encode_entry, tombstone_key
from recstack.data import lake

CLI = str(Path(sys.executable).with_name("recstack-collect"))
KEY = "k" * 64


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RECSTACK_HMAC_KEY": KEY}
    return subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["consume", "frobnicate=1"], "recstack-collect consume: error: Could not override 'frobnicate'"),
        (["consume", "collector.consume_batch=0"], "recstack-collect consume: error: collector.consume_batch: "),
        (["consume", "claim_idle_s=0.5"], "recstack-collect consume: error: claim_idle_s=0.5 must exceed"),
        (["consume", "collector.redis_url=redis://127.0.0.1:1/0"], "error: cannot reach Redis at redis://127.0.0.1:1"),
        (["erase"], "recstack-collect erase: error: erase needs user_id=<raw id>"),
        (["erase", "pseudonym=alice"], "error: pseudonym='alice' is not a pseudonym"),
        (["purge", "older_than=soon"], "recstack-collect purge: error: older_than='soon': give whole days"),
        (["keygen"], "recstack-collect keygen: error: give the one file to write"),
        (["frobnicate"], "recstack-collect: error: unknown command 'frobnicate'"),
    ],
)
def test_bad_arguments_are_one_line_and_status_2(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECSTACK_HMAC_KEY", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    first = capsys.readouterr().err.strip().splitlines()[0]
    assert expected in first and first.startswith("recstack-collect"), first


def test_an_erase_without_a_key_says_how_to_make_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSTACK_HMAC_KEY", raising=False)
    done = subprocess.run([CLI, "erase", "user_id=alice"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "recstack-collect erase: error: no pseudonymisation key: set $RECSTACK_HMAC_KEY or collector.hmac_key_file "
        "(`recstack-collect keygen <file>` writes one; keep it out of the repo)"
    ]


def test_keygen_writes_a_private_key_once(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "hmac.key"
    made = cli("keygen", str(path), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text()
    assert len(key.strip()) == 128 and int(key, 16) and key.endswith("\n")
    again = cli("keygen", str(path), cwd=tmp_path)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    assert path.read_text() == key


def test_consume_until_sigterm(tmp_path: Path, stream: str) -> None:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    row = {"user_id": "u" * 32, "anonymous": False, "event_type": "view", "source": "api"}
    now = int(time.time() * 1000)
    for k in range(3):
        client.xadd(stream, encode_entry("events", [{**row, "event_id": f"e{k}", "received_ts": now}]))
    args = [
        "consume",
        f"collector.stream={stream}",
        "collector.lake=lake",
        "collector.flush_interval_s=0.1",
        "consumer=t",
    ]
    proc = subprocess.Popen([CLI, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + 60
    while not any("stored 3 events" in line for line in lines):
        assert proc.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "no flush line within 60 s:\n" + "".join(lines)
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines)
    assert json.loads(out)["stored"]["events"] == 3
    assert lake.read_table(tmp_path / "lake", "events").num_rows == 3
    client.close()


def test_erase_by_raw_user_id_and_purge(tmp_path: Path, stream: str) -> None:
    alice = Pseudonymiser(KEY.encode()).user("alice")
    bob = Pseudonymiser(KEY.encode()).user("bob")
    now = datetime.now(UTC)
    old = now - timedelta(days=30)
    rows = [
        {"event_id": f"{who}{n}", "user_id": p, "anonymous": False, "event_type": "view", "source": "api"}
        | {"received_ts": int(when.timestamp() * 1000)}
        for n, when in enumerate((now, old))
        for who, p in (("a", alice), ("b", bob))
    ]
    lake.write_rows(tmp_path / "lake", "events", rows)
    common = [f"collector.stream={stream}", "collector.lake=lake"]

    erased = cli("erase", "user_id=alice", *common, cwd=tmp_path)

    assert erased.returncode == 0, erased.stderr
    report = json.loads(erased.stdout)
    assert report["subjects"] == [alice] and report["rows_removed"] == 2 and report["in_flight_stored"]
    assert lake.read_table(tmp_path / "lake", "events")["user_id"].to_pylist() == [bob, bob]
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    assert client.sismember(tombstone_key(StreamNames(stream=stream)), alice)  # the collector refuses alice now
    client.close()

    purged = cli("purge", "older_than=7d", *common, cwd=tmp_path)

    assert purged.returncode == 0, purged.stderr
    assert json.loads(purged.stdout)["partitions"] == [f"events/dt={old:%Y-%m-%d}"]
    assert lake.read_table(tmp_path / "lake", "events")["event_id"].to_pylist() == ["b0"]
    assert {r["action"] for r in lake.read_table(tmp_path / "lake", "audit").to_pylist()} == {"erasure", "purge"}
