"""Exactly once through crashes: a real ``recstack-collect consume`` process is killed with SIGKILL at random points
while a producer keeps adding entries, and restarted, under its own name or another one (whose predecessor's entries
it must take over). Some kills come while a flush writes its events file or the moment it lands, so the flush dies
before its acknowledgement with none, one or both of its files (events, aliases) stored. At the end every produced
row is in the lake exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from recstack.collect.records import encode_entry
from recstack.data import lake

pytestmark = [pytest.mark.slow, pytest.mark.redis]

CLI = str(Path(sys.executable).with_name("recstack-collect"))
KILLS = 6


class Consumer:
    """One consumer process and the lines it logged (stderr), read as they come."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen([CLI, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def flushes(self) -> int:
        return sum(" stored " in line for line in self.lines)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout_s: float = 60.0, poll_s: float = 0.02) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.proc.poll() is None, f"the consumer exited while waiting for {what}:\n{''.join(self.lines)}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{''.join(self.lines)}"
            time.sleep(poll_s)


class Producer(threading.Thread):
    """The collector's side: one XADD per request of 50-100 events with unique event ids and one of an alias with a
    unique visitor, paced, until stopped."""

    def __init__(self, stream: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.stream, self.rng = stream, random.Random(seed)
        self.client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        self.produced: list[str] = []
        self.visitors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            pipe = self.client.pipeline(transaction=False)
            now = int(time.time() * 1000)
            for _ in range(2):
                ids = [f"p{n}-{k}" for k in range(self.rng.randint(50, 100))]
                rows = [
                    {"event_id": i, "user_id": f"{n % 97:032x}", "anonymous": False, "event_type": "view"}
                    | {"item_id": f"i{n % 31}", "received_ts": now, "source": "api"}
                    for i in ids
                ]
                pipe.xadd(self.stream, encode_entry("events", rows))
                alias = {"anonymous_id": f"{n:032x}", "user_id": f"{n % 97:032x}", "received_ts": now}
                pipe.xadd(self.stream, encode_entry("aliases", [alias]))
                self.produced.extend(ids)
                self.visitors.append(alias["anonymous_id"])
                n += 1
            pipe.execute()
            self.halt.wait(0.01)  # pacing (~15k events/s), not waiting for anything


def events_files(root: Path, temporary: bool) -> set[str]:
    """The events files (or temporary files: a write in progress) in the lake now."""
    names = (e.name for hour in root.glob("events/dt=*/hour=*") for e in os.scandir(hour))
    return {name for name in names if name.endswith(".tmp") == temporary}


def drained(client: redis.Redis, stream: str) -> bool:
    groups = client.xinfo_groups(stream)
    end = client.xinfo_stream(stream)["last-generated-id"]
    return bool(groups) and groups[0]["pending"] == 0 and groups[0]["last-delivered-id"] == end


def test_sigkill_at_random_points_loses_and_duplicates_nothing(tmp_path: Path, stream: str) -> None:
    rng = random.Random(20261206)
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    root = tmp_path / "lake"
    common = [
        f"collector.stream={stream}",
        f"collector.lake={root}",
        "collector.flush_interval_s=0.2",
        "claim_idle_s=1",
    ]
    producer = Producer(stream, seed=rng.randrange(1 << 30))
    producer.start()
    logs: list[str] = []
    try:
        for kill in range(KILLS):
            name = "fixed" if rng.random() < 0.6 else f"other{kill}"  # own pending re-read, or taken over
            consumer = Consumer(["consume", *common, f"consumer={name}"], cwd=tmp_path)
            target = rng.randint(1, 3)
            consumer.wait_for(lambda c=consumer, t=target: c.flushes() >= t, f"{target} flushes before kill {kill}")
            point = rng.choice(["anywhere", "writing", "written"])
            if point == "anywhere":  # between or inside flushes
                time.sleep(rng.uniform(0, 0.3))
            else:  # while a flush writes its events file, or the moment it lands: before the XACK either way
                seen = events_files(root, temporary=point == "writing")
                consumer.wait_for(
                    lambda s=seen, p=point: bool(events_files(root, temporary=p == "writing") - s),
                    f"an events file being {point}",
                    poll_s=0.0005,
                )
            consumer.proc.send_signal(signal.SIGKILL)
            consumer.proc.wait(timeout=30)
            logs += consumer.lines
        producer.halt.set()
        producer.join(timeout=30)

        final = Consumer(["consume", *common, "consumer=final"], cwd=tmp_path)
        final.wait_for(lambda: drained(client, stream), "the group to read everything and have nothing pending")
        final.proc.send_signal(signal.SIGTERM)
        assert final.proc.wait(timeout=60) == 0, "".join(final.lines)
        logs += final.lines
    finally:
        producer.halt.set()

    aliases = Counter(lake.read_table(root, "aliases")["anonymous_id"].to_pylist())
    assert set(aliases) == set(producer.visitors) and set(aliases.values()) == {1}
    stored = Counter(lake.read_table(root, "events")["event_id"].to_pylist())
    missing = set(producer.produced) - set(stored)
    twice = {event_id: n for event_id, n in stored.items() if n > 1}
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
    assert not twice, f"{len(twice)} events stored more than once, e.g. {sorted(twice.items())[:5]}"
    assert set(stored) == set(producer.produced) and len(producer.produced) > 10_000
    assert any("recovered" in line for line in logs), "no kill left anything to recover:\n" + "".join(logs[-40:])
    assert not (root / "_rejected").exists()
    assert client.xlen(stream) == 0  # all stored, all trimmed
    client.close()
