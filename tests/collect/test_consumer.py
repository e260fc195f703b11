"""The stream -> lake consumer against the real Redis and real Parquet files: everything stored once, acknowledged and
trimmed; retried batches deduplicated; erased subjects dropped in flight; malformed entries kept aside; recovery after
a crash stores only the rows not yet in the lake."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from recstack.collect.consumer import (
    ConsumerStats,
    LakeConsumer,
    parse_entries,
    stored_up_to,
    stream_end,
    wait_until_stored,
)
from recstack.collect.records import StreamNames, encode_entry, tombstone_key
from recstack.collect.settings import CollectSettings
from recstack.config import collect_settings
from recstack.data import lake

pytestmark = pytest.mark.redis

HOUR_MS = 3_600_000
T0 = int(datetime(2026, 11, 29, 21, tzinfo=UTC).timestamp() * 1000)  # the start of an hour


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    yield conn
    conn.close()


@pytest.fixture
def settings(tmp_path: Path, client: redis.Redis) -> Iterator[CollectSettings]:
    stream = f"test:{uuid.uuid4().hex[:10]}:collect"
    yield collect_settings([f"stream={stream}", f"lake={tmp_path / 'lake'}", "flush_interval_s=0.1"])
    client.delete(stream, tombstone_key(collect_settings([f"stream={stream}"]).names))


def event(event_id: str, user: str = "u" * 32, ts: int = T0, **extra: object) -> dict:
    row = {"event_id": event_id, "user_id": user, "anonymous": False, "event_type": "view", "received_ts": ts}
    return {"source": "api", "item_id": "i1", **row, **extra}


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def drained(client: redis.Redis, settings: CollectSettings) -> bool:
    """The group has read to the end of the stream and has nothing pending."""
    try:
        groups = client.xinfo_groups(settings.stream)
    except redis.ResponseError:
        return False
    if not groups:
        return False
    (group,) = groups
    end = client.xinfo_stream(settings.stream)["last-generated-id"]
    return group["pending"] == 0 and group["last-delivered-id"] == end


def run_until(consumer: LakeConsumer, condition: Callable[[], bool], what: str) -> ConsumerStats:
    """Run the consumer in a thread until ``condition`` holds, then stop it as SIGTERM would."""
    out: list[ConsumerStats] = []
    thread = threading.Thread(target=lambda: out.append(consumer.run()), daemon=True)
    thread.start()
    try:
        wait_for(lambda: condition() or not thread.is_alive(), what)
    finally:
        consumer.stop()
        thread.join(timeout=30)
    assert out, "the consumer died (see the log above)"
    return out[0]


def test_every_entry_is_stored_once_acknowledged_and_trimmed(client: redis.Redis, settings: CollectSettings) -> None:
    entry_of: dict[str, str] = {}
    for n in range(20):
        rows = [event(f"e{n}-{k}", ts=T0 + (n % 2) * HOUR_MS + k) for k in range(10)]  # two hour partitions
        entry_id = client.xadd(settings.stream, encode_entry("events", rows)).decode()
        entry_of.update({row["event_id"]: entry_id for row in rows})
    alias_id = client.xadd(
        settings.stream, encode_entry("aliases", [{"anonymous_id": "a" * 32, "user_id": "u" * 32, "received_ts": T0}])
    ).decode()
    client.xadd(settings.stream, encode_entry("audit", [{"action": "consent", "subject": "u" * 32, "received_ts": T0}]))

    stats = run_until(LakeConsumer(settings, "c1"), lambda: drained(client, settings), "the stream to be drained")

    events = lake.read_table(settings.lake, "events")
    assert sorted(events["event_id"].to_pylist()) == sorted(entry_of)
    assert {r["event_id"]: r["stream_id"] for r in events.select(["event_id", "stream_id"]).to_pylist()} == entry_of
    assert lake.read_table(settings.lake, "aliases")["stream_id"].to_pylist() == [alias_id]
    assert lake.read_table(settings.lake, "audit").num_rows == 1
    assert stats.stored == {"events": 200, "aliases": 1, "audit": 1, "impressions": 0} and stats.rejected == 0
    assert client.xlen(settings.stream) == 0  # everything stored is trimmed
    hours = {p.parent.name for p in lake.parts(settings.lake, "events")}
    assert hours == {"hour=21", "hour=22"}
    assert all(p.name.endswith("_c1.parquet") for p in lake.parts(settings.lake, "events"))


def test_a_retried_batch_is_stored_once(client: redis.Redis, settings: CollectSettings) -> None:
    batch = [event(f"e{k}") for k in range(5)]
    client.xadd(settings.stream, encode_entry("events", batch))
    client.xadd(settings.stream, encode_entry("events", batch))  # the client did not see the first answer
    client.xadd(settings.stream, encode_entry("events", [event("e9"), event("e9")]))

    stats = run_until(LakeConsumer(settings, "c1"), lambda: drained(client, settings), "the stream to be drained")

    ids = lake.read_table(settings.lake, "events")["event_id"].to_pylist()
    assert Counter(ids) == Counter({f"e{k}": 1 for k in (0, 1, 2, 3, 4, 9)})
    assert stats.duplicates == 6


def test_rows_of_erased_subjects_in_flight_are_dropped(client: redis.Redis, settings: CollectSettings) -> None:
    erased, kept = "e" * 32, "k" * 32
    client.sadd(tombstone_key(settings.names), erased)
    client.xadd(settings.stream, encode_entry("events", [event("x1", erased), event("k1", kept), event("x2", erased)]))
    aliases = [
        {"anonymous_id": erased, "user_id": kept, "received_ts": T0},
        {"anonymous_id": kept, "user_id": erased, "received_ts": T0},
        {"anonymous_id": "a" * 32, "user_id": kept, "received_ts": T0},
    ]
    client.xadd(settings.stream, encode_entry("aliases", aliases))

    stats = run_until(LakeConsumer(settings, "c1"), lambda: drained(client, settings), "the stream to be drained")

    assert lake.read_table(settings.lake, "events")["event_id"].to_pylist() == ["k1"]
    assert lake.read_table(settings.lake, "aliases")["anonymous_id"].to_pylist() == ["a" * 32]
    assert stats.erased == 4


def test_malformed_entries_are_kept_aside_and_do_not_block(client: redis.Redis, settings: CollectSettings) -> None:
    good = [client.xadd(settings.stream, encode_entry("events", [event(f"g{n}")])) for n in range(3)]
    bad = {
        client.xadd(settings.stream, {b"t": b"events", b"r": b"[{not json"}): "JSONDecodeError",
        client.xadd(settings.stream, {b"t": b"nope", b"r": b"[]"}): "malformed stream entry",
        client.xadd(settings.stream, {b"x": b"\xff\xfe"}): "malformed stream entry",
        client.xadd(settings.stream, encode_entry("events", [event("w1", item_id=5)])): "item_id",  # wrong type
        client.xadd(settings.stream, encode_entry("events", [{**event("m1"), "user_id": None}])): "user_id",
        client.xadd(settings.stream, encode_entry("events", [{**event("z1"), "shoe_size": 44}])): "shoe_size",
        client.xadd(settings.stream, encode_entry("events", [[1, 2]])): "not a JSON object",
    }
    good.append(client.xadd(settings.stream, encode_entry("events", [event("g9")])))

    stats = run_until(LakeConsumer(settings, "c1"), lambda: drained(client, settings), "the stream to be drained")

    assert sorted(lake.read_table(settings.lake, "events")["event_id"].to_pylist()) == ["g0", "g1", "g2", "g9"]
    assert stats.rejected == len(bad)
    rejected = Path(settings.lake) / "_rejected"
    for entry_id, why in bad.items():
        kept = json.loads((rejected / f"{entry_id.decode()}.json").read_text())
        assert kept["stream_id"] == entry_id.decode() and why in kept["error"], kept
    assert json.loads((rejected / f"{list(bad)[2].decode()}.json").read_text())["fields"] == {"x": {"base64": "//4="}}


def test_stopping_flushes_what_was_read(client: redis.Redis, settings: CollectSettings) -> None:
    slow = settings.model_copy(update={"flush_interval_s": 3600.0})
    for n in range(3):
        client.xadd(slow.stream, encode_entry("events", [event(f"s{n}")]))
    consumer = LakeConsumer(slow, "c1", claim_idle_s=7200)

    def read_all() -> bool:  # delivered to the consumer, not yet stored
        groups = client.xinfo_groups(slow.stream) if client.exists(slow.stream) else []
        return bool(groups) and groups[0]["pending"] == 3

    stats = run_until(consumer, read_all, "the entries to be read")
    assert stats.stored["events"] == 3 and drained(client, slow)
    assert lake.read_table(slow.lake, "events").num_rows == 3


def test_recovery_stores_only_the_rows_a_crash_left_out(client: redis.Redis, settings: CollectSettings) -> None:
    """A consumer died after writing one of a batch's two hour files (before acknowledging): its successor, under the
    same name, writes the other hour only. Entries a differently named dead consumer left are taken over."""
    names = settings.names
    client.xgroup_create(names.stream, names.group, id="0", mkstream=True)
    rows = [event(f"r{k}", ts=T0 + (k % 2) * HOUR_MS) for k in range(6)]  # one entry across two hours
    client.xadd(names.stream, encode_entry("events", rows))
    client.xadd(names.stream, encode_entry("events", [event("r9", ts=T0)]))
    read = client.xreadgroup(names.group, "c1", {names.stream: ">"})[0][1]
    parsed = parse_entries([(i.decode(), f) for i, f in read])
    (table,) = parsed.tables["events"]
    first_hour = table.filter(pa.compute.less(table["received_ts"], pa.scalar(T0 + HOUR_MS, lake.TS)))
    lake.write_rows(settings.lake, "events", first_hour, name=f"{read[0][0].decode()}_{read[-1][0].decode()}_c1")
    # ... and a consumer "dead" read two more entries, stored nothing and never came back
    client.xadd(names.stream, encode_entry("events", [event("d1"), event("d2")]))
    client.xreadgroup(names.group, "dead", {names.stream: ">"})

    consumer = LakeConsumer(settings, "c1", claim_idle_s=0.2)
    stats = run_until(consumer, lambda: drained(client, settings), "the stream to be drained")

    ids = lake.read_table(settings.lake, "events")["event_id"].to_pylist()
    assert Counter(ids) == Counter({**{f"r{k}": 1 for k in range(6)}, "r9": 1, "d1": 1, "d2": 1})
    assert stats.already_stored == 4 and stats.recovered == 3  # r0, r2, r4, r9 were in the first hour's file
    consumers = {c["name"].decode() for c in client.xinfo_consumers(names.stream, names.group)}
    assert "dead" not in consumers  # forgotten once idle and empty


def test_one_bad_entry_does_not_change_how_the_others_are_read() -> None:
    """The fast path (Arrow's JSON reader over many entries) gives what the reference path gives entry by entry."""
    rows = [event("a", value=1.5, client_ts=T0 - 5, local_hour=3), event("b", anonymous=True, query="q\u00e9")]
    good = [("1-0", encode_entry("events", rows)), ("2-0", encode_entry("events", [event("c")]))]
    together = parse_entries(good)
    with_bad = parse_entries([*good, ("3-0", encode_entry("events", [event("d", local_hour=999)]))])
    assert [r for r, *_ in with_bad.rejected] == ["3-0"] and not together.rejected
    fast = pa.concat_tables(together.tables["events"])
    slow = pa.concat_tables(with_bad.tables["events"])
    assert fast.equals(slow) and fast["stream_id"].to_pylist() == ["1-0", "1-0", "2-0"]
    assert fast.schema == lake.EVENTS_SCHEMA
    # a float time the JSON reader refuses is still accepted, as lake.conform accepts it
    floaty = parse_entries([("4-0", encode_entry("events", [event("f", ts=float(T0))]))])
    assert not floaty.rejected and floaty.rows == 1


def test_a_flush_cut_short_by_redis_is_finished_under_the_same_names(
    client: redis.Redis, settings: CollectSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis fails between the files and the acknowledgement: the retry rewrites the same files (no second copy) and
    does not take its own rows for client retries."""
    for n in range(4):
        client.xadd(settings.stream, encode_entry("events", [event(f"f{n}", ts=T0 + n * HOUR_MS)]))
    consumer = LakeConsumer(settings, "c1")
    acks: list[list[str]] = []
    real_ack = consumer._ack

    def flaky_ack(ids: list[str]) -> None:
        acks.append(ids)
        if len(acks) == 1:
            raise redis.ConnectionError("injected: Redis went away")
        real_ack(ids)

    monkeypatch.setattr(consumer, "_ack", flaky_ack)
    stats = run_until(consumer, lambda: drained(client, settings), "the stream to be drained")

    assert sorted(lake.read_table(settings.lake, "events")["event_id"].to_pylist()) == ["f0", "f1", "f2", "f3"]
    assert len(lake.parts(settings.lake, "events")) == 4 and acks[0] == acks[1]
    assert stats.duplicates == 0 and stats.stored["events"] == 4


def test_erasure_waits_until_what_was_in_flight_is_stored(client: redis.Redis, settings: CollectSettings) -> None:
    for n in range(3):
        client.xadd(settings.stream, encode_entry("events", [event(f"w{n}")]))
    end = stream_end(client, settings.names)
    assert end is not None and not stored_up_to(client, settings.names, end)  # no consumer has read them
    assert not wait_until_stored(client, settings.names, end, timeout_s=0.1)
    run_until(
        LakeConsumer(settings, "c1"),
        lambda: wait_until_stored(client, settings.names, end, timeout_s=0),
        "everything up to the stream's end to be stored",
    )
    assert lake.read_table(settings.lake, "events").num_rows == 3
    assert stream_end(client, StreamNames(stream=f"{settings.stream}:none")) is None
