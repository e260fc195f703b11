"""The real-time segment follower against a real Redis: entering a segment within a second of the event, leaving by
the sweep, exactly once across a crash between commit and XACK, erased subjects ignored (also when the erasure races
a batch), rule reload, aliases, duplicates and bots; plus the pure state functions."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from recstack.collect.producer import Producer
from recstack.collect.records import (
    StreamNames,
    counters_key,
    encode_entry,
    members_key,
    memberships_key,
    segments_key,
    tombstone_key,
    visitors_key,
)
from recstack.config import collect_settings
from recstack.profiles.realtime import SegmentFollower, realtime_memberships
from recstack.profiles.realtime_state import Event, RuleSet, UserState, apply_events, members
from recstack.profiles.rules import HOUR_MS, parse_segments

URL = "redis://127.0.0.1:6379/0"
RULES = {
    "viewers": {"count": {"event": "view", "within": "1d"}, "gte": 2},
    "scifi": {"count": {"category": "Sci-Fi", "within": "7d"}, "gte": 1},
    "young": {"attribute": "age_band", "eq": "18-24"},
    "engaged": {"sessions": {"within": "30d"}, "gte": 2},
}
CATEGORIES = {"i1": frozenset({"Sci-Fi", "Drama"}), "i2": frozenset({"Comedy"})}
T0 = 1_700_000_000_000 // HOUR_MS * HOUR_MS + 10 * 60_000  # 10 minutes into an hour


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(URL)
    yield c
    c.close()


def row(user: str, ts: int, event_type: str = "view", item: str | None = "i2", **extra) -> dict:
    return {
        "event_id": extra.pop("event_id", uuid.uuid4().hex),
        "user_id": user,
        "anonymous": extra.pop("anonymous", False),
        "item_id": item,
        "event_type": event_type,
        "value": extra.pop("value", None),
        "client_ts": ts,
        "received_ts": ts,
        "source": "api",
        "device_class": extra.pop("device_class", "desktop"),
        **extra,
    }


def add(client: redis.Redis, names: StreamNames, rows: list[dict], table: str = "events") -> str:
    return client.xadd(names.stream, encode_entry(table, rows)).decode()


def follower(names: StreamNames, rules: dict = RULES, **kwargs) -> SegmentFollower:
    kwargs.setdefault("sweep_interval_s", None)
    kwargs.setdefault("block_ms", 50)
    f = SegmentFollower(URL, names, parse_segments(rules), CATEGORIES, consumer="c1", **kwargs)
    f.ensure_group()
    f.recover()
    return f


def drain(f: SegmentFollower) -> None:
    """Apply everything in the stream now (what run() does, without its loop)."""
    while f.step():
        pass


def segments_of(client: redis.Redis, names: StreamNames, user: str) -> set[str]:
    return {m.decode() for m in client.smembers(memberships_key(names, user))}


def counters(client: redis.Redis, names: StreamNames, user: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(counters_key(names, user)).items()}


# ------------------------------------------------------------------------------------------------------ redis ---
@pytest.mark.redis
def test_a_user_enters_a_segment_within_a_second_of_the_event(names, client):
    f = follower(names, block_ms=200)
    stop = threading.Event()
    thread = threading.Thread(target=f.run, kwargs={"max_seconds": 30, "stop": stop})
    thread.start()
    try:
        now = int(time.time() * 1000)
        add(client, names, [row("u1", now)])
        add(client, names, [row("u1", now + 1, item="i1")])
        added = time.monotonic()
        deadline = added + 15  # generous for a loaded machine; the follower's own latency is asserted below
        while "viewers" not in segments_of(client, names, "u1"):
            assert time.monotonic() < deadline, "u1 never entered viewers"
            time.sleep(0.005)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert segments_of(client, names, "u1") == {"viewers", "scifi"}
    assert realtime_memberships(client, names) == {"viewers": {"u1"}, "scifi": {"u1"}}
    assert f.stats.events == 2
    # XADD (the entry id's time) -> the EXEC that committed the membership, per event
    assert max(ms for ms, _ in f.stats.latencies) < 1000
    assert client.zscore(segments_key(names, "active"), "u1") == now + 1
    f.close()


@pytest.mark.redis
def test_windows_and_sessions_counted_by_hour_and_a_sweep_removes_expired_members(names, client):
    f = follower(names)
    add(client, names, [row("u1", T0), row("u1", T0 + 60_000, item="i1")])  # one session, 2 views, one Sci-Fi
    add(client, names, [row("u1", T0 + 31 * 60_000 + 60_000)])  # > 30 min gap: a second session
    drain(f)
    assert segments_of(client, names, "u1") == {"viewers", "scifi", "engaged"}
    state = counters(client, names, "u1")
    assert state["_last"] == str(T0 + 32 * 60_000)
    # u2 enters "viewers" 1 day later: the sweep as of then keeps u2, removes u1 from the 1-day window
    add(client, names, [row("u2", T0 + 24 * HOUR_MS), row("u2", T0 + 24 * HOUR_MS + 1)])
    drain(f)
    assert f.sweep(T0 + 24 * HOUR_MS + 1) == 2
    assert segments_of(client, names, "u1") == {"scifi", "engaged"}
    assert {m.decode() for m in client.zrange(members_key(names, "viewers"), 0, -1)} == {"u2"}
    # 8 days on: the 7-day Sci-Fi window has slid past too
    f.sweep(T0 + 8 * 24 * HOUR_MS)
    assert segments_of(client, names, "u1") == {"engaged"}
    # past the horizon (91 days): no longer in the population, its buckets pruned, out of the active set
    f.sweep(T0 + 92 * 24 * HOUR_MS)
    assert segments_of(client, names, "u1") == set()
    assert [k for k in counters(client, names, "u1") if "@" in k] == []
    assert client.zscore(segments_key(names, "active"), "u1") is None
    f.close()


@pytest.mark.redis
def test_a_sweep_from_another_process_reads_the_counters_as_they_are_now(names, client):
    f = follower(names)
    sweeper = SegmentFollower(URL, names, parse_segments(RULES), CATEGORIES, consumer="s", sweep_interval_s=None)
    add(client, names, [row("u1", T0)])
    drain(f)
    sweeper.sweep(T0)
    add(client, names, [row("u1", T0 + 1)])
    drain(f)
    assert "viewers" in segments_of(client, names, "u1")
    sweeper.sweep(T0 + 2)  # what the sweeper read at T0 (one view) is stale: it must not take u1 out
    assert "viewers" in segments_of(client, names, "u1")
    f.close()
    sweeper.close()


@pytest.mark.redis
def test_exactly_once_across_a_crash_between_commit_and_ack(names, client):
    first = follower(names)
    add(client, names, [row("u1", T0)])
    add(client, names, [row("u1", T0 + 1)])
    assert first.step() == 2  # committed; the acknowledgement waits for the next round trip: crash now
    first._redis.conn.disconnect()
    pending = client.xpending(names.stream, "segments")["pending"]
    assert pending == 2
    before = counters(client, names, "u1")
    # a new process (another consumer name, as after a restart) takes the entries over and skips them
    second = SegmentFollower(URL, names, parse_segments(RULES), CATEGORIES, consumer="c2", sweep_interval_s=None)
    second.ensure_group()
    second.recover()
    assert second.stats.skipped == 2 and second.stats.events == 0
    assert counters(client, names, "u1") == before
    assert client.xpending(names.stream, "segments")["pending"] == 0
    # and what comes next is applied once
    add(client, names, [row("u1", T0 + 2)])
    second.block_ms = 50
    drain(second)
    second._flush_ack()
    views = parse_segments(RULES)["viewers"].features[0].id
    sessions = parse_segments(RULES)["engaged"].features[0].id
    state = counters(client, names, "u1")
    assert float(state[f"{views}@{T0 // HOUR_MS}"]) == 3.0 and float(state[f"{sessions}@{T0 // HOUR_MS}"]) == 1.0
    assert client.xpending(names.stream, "segments")["pending"] == 0
    second.close()


@pytest.mark.redis
def test_a_crash_before_commit_applies_the_entries_once_on_restart(names, client):
    first = follower(names)
    add(client, names, [row("u1", T0), row("u1", T0 + 1)])

    def crash(*_args, **_kwargs):
        raise SystemExit("killed before EXEC")

    first._commit = crash
    with pytest.raises(SystemExit):
        first.step()
    first._redis.conn.disconnect()
    assert counters(client, names, "u1") == {}
    second = follower(names)
    assert second.stats.events == 2 and second.stats.skipped == 0
    assert segments_of(client, names, "u1") == {"viewers"}
    second.close()


@pytest.mark.redis
def test_a_commit_whose_reply_was_lost_is_not_applied_again(names, client):
    f = follower(names)
    add(client, names, [row("u1", T0), row("u1", T0 + 1)])
    commit = f._commit
    lost = []

    def reply_lost(*args, **kwargs):
        out = commit(*args, **kwargs)
        if not lost:
            lost.append(True)
            raise redis.ConnectionError("connection reset after the script ran")
        return out

    f._commit = reply_lost
    with pytest.raises(redis.ConnectionError):
        f.step()
    drain(f)  # the retry reads the applied mark: the run committed, so it is skipped
    views = parse_segments(RULES)["viewers"].features[0].id
    assert counters(client, names, "u1")[f"{views}@{T0 // HOUR_MS}"] == "2.0"
    assert segments_of(client, names, "u1") == {"viewers"}
    f.close()


@pytest.mark.redis
def test_entries_read_ahead_with_a_commit_whose_reply_was_lost_are_applied_once(names, client):
    """A commit reads the next entries in its round trip; when the reply is lost, Redis has delivered them all the
    same (pending for this consumer): after the outage the follower reads its pending entries again."""
    f = follower(names, batch=1)  # one entry per read
    for k in range(3):
        add(client, names, [row("u1", T0 + k)])
    call = f._redis._call
    lost = []

    def reply_lost(commands):
        out = call(commands)
        if not lost and any(c[0] == "XREADGROUP" and "BLOCK" not in c for c in commands):
            lost.append(True)
            raise redis.ConnectionError("connection reset after the commit and the read ran")
        return out

    f._redis._call = reply_lost
    for _ in range(4):
        f._with_retry(f.step)
    drain(f)
    f._flush_ack()
    views = parse_segments(RULES)["viewers"].features[0].id
    assert lost and f.stats.retries == 1
    assert counters(client, names, "u1")[f"{views}@{T0 // HOUR_MS}"] == "3.0"
    # the first entry, read again, is skipped by the applied mark (not by the recent-ids memory)
    assert f.stats.skipped == 1 and f.stats.duplicates == 0
    assert client.xpending(names.stream, "segments")["pending"] == 0
    f.close()


@pytest.mark.redis
def test_reading_ahead_gives_what_reading_each_batch_alone_gives(names, client):
    """Batches read with the previous commit apply the same counters and memberships as batches read alone."""
    other = StreamNames(stream=names.stream + ":alone")
    try:
        rows = [row(f"u{k % 7}", T0 + k * 60_000, item=("i1", "i2")[k % 2]) for k in range(60)]
        for stream in (names, other):
            for start in range(0, len(rows), 3):
                add(client, stream, rows[start : start + 3])
        ahead = follower(names, batch=6)
        drain(ahead)
        alone = follower(other, batch=6)
        alone._read_command = lambda block, read=alone._read_command: read(True)  # never reads with a commit
        commit = alone._commit
        alone._commit = lambda writes, mark, ahead=False: commit(writes, mark)
        drain(alone)
        assert ahead.stats.events == alone.stats.events == 60
        assert realtime_memberships(client, names) == realtime_memberships(client, other)
        for k in range(7):
            assert counters(client, names, f"u{k}") == counters(client, other, f"u{k}")
        ahead.close()
        alone.close()
    finally:
        client.delete(*client.keys(other.stream + "*"))


@pytest.mark.redis
def test_tombstoned_subjects_are_ignored_even_when_erased_during_a_batch(names, client):
    f = follower(names)
    client.sadd(tombstone_key(names), "gone")
    add(client, names, [row("gone", T0), row("gone", T0 + 1), row("late", T0), row("late", T0 + 1)])
    add(client, names, [row("kept", T0), row("kept", T0 + 1)])
    read = f._read
    calls = []

    def erase_during_batch(subjects, extra=()):
        out = read(subjects, extra)
        if not calls and "late" in subjects:  # an erasure between the batch's read and its EXEC
            client.sadd(tombstone_key(names), "late")
        calls.append(subjects)
        return out

    f._read = erase_during_batch
    drain(f)
    for user in ("gone", "late"):
        assert counters(client, names, user) == {}
        assert segments_of(client, names, user) == set()
    assert segments_of(client, names, "kept") == {"viewers"}
    assert f.stats.erased == 4 and f.stats.events == 2
    assert realtime_memberships(client, names) == {"viewers": {"kept"}}
    f.close()


@pytest.mark.redis
def test_scripts_missing_from_redis_s_cache_are_sent_whole(names, client, monkeypatch):
    """EVALSHA of a script Redis does not hold (a restart, SCRIPT FLUSH) runs nothing: the round trip goes again with
    EVAL, and the batch applies once."""
    from recstack.profiles import realtime

    for script in (realtime.READ_SCRIPT, realtime.COMMIT_SCRIPT):
        monkeypatch.setitem(realtime._SHA, script, uuid.uuid4().hex[:40].ljust(40, "0"))  # no script has this hash
    f = follower(names)
    add(client, names, [row("u1", T0), row("u1", T0 + 1)])
    drain(f)
    views = parse_segments(RULES)["viewers"].features[0].id
    assert counters(client, names, "u1")[f"{views}@{T0 // HOUR_MS}"] == "2.0"
    assert segments_of(client, names, "u1") == {"viewers"}
    assert f.stats.events == 2 and f.stats.retries == 0
    f.close()


@pytest.mark.redis
def test_rules_reload_when_the_registry_version_changes(names, client):
    from recstack.profiles.segments_online import save_rule

    current = {"viewers": RULES["viewers"]}

    def load():
        return parse_segments(current)

    f = follower(names, rules=current, load_rules=load, clock_ms=lambda: T0 + 2)
    add(client, names, [row("u1", T0, item="i1"), row("u1", T0 + 1)])
    drain(f)
    assert segments_of(client, names, "u1") == {"viewers"}
    # a new rule arrives (POST /segments); viewers is removed
    current = {"scifi": RULES["scifi"]}
    save_rule(client, names, parse_segments(current)["scifi"], "api")
    add(client, names, [row("u2", T0 + 2, item="i1")])
    drain(f)
    assert f.stats.reloads == 1
    assert segments_of(client, names, "u2") == {"scifi"}
    # u1's Sci-Fi view came before the rule existed: counters start at the reload (the batch run backfills)
    assert segments_of(client, names, "u1") == set()
    assert client.exists(members_key(names, "viewers")) == 0
    f.close()


@pytest.mark.redis
def test_duplicates_bots_audit_and_malformed_entries(names, client):
    f = follower(names)
    add(client, names, [row("u1", T0, event_id="e1"), row("u1", T0 + 1, event_id="e1")])
    add(client, names, [row("u1", T0 + 2, event_id="e1"), row("b", T0, device_class="bot"), row("b", T0 + 1)])
    add(client, names, [{"action": "consent", "subject": "u1", "received_ts": T0}], table="audit")
    client.xadd(names.stream, {b"t": b"events", b"r": b"not json"})
    drain(f)
    assert f.stats.duplicates == 2 and f.stats.bots == 1 and f.stats.malformed == 1 and f.stats.events == 2
    assert segments_of(client, names, "u1") == set()  # one view, not three
    f.close()


@pytest.mark.redis
def test_an_alias_moves_the_visitors_counters_to_the_user(names, client):
    f = follower(names)
    add(client, names, [row("anon", T0, anonymous=True)])
    add(client, names, [row("user", T0 + 1, item="i1")])
    drain(f)
    assert segments_of(client, names, "user") == {"scifi"}
    add(client, names, [{"anonymous_id": "anon", "user_id": "user", "received_ts": T0 + 2}], table="aliases")
    drain(f)
    # the two timelines' sessions are counted apart (a documented limit: the batch, merging them, counts one)
    assert segments_of(client, names, "user") == {"scifi", "viewers", "engaged"}
    assert counters(client, names, "anon") == {"_alias": "user"}
    # the visitor's later events are the user's
    add(client, names, [row("anon", T0 + 3, "profile", item=None, anonymous=True, age_band="18-24")])
    drain(f)
    assert segments_of(client, names, "user") == {"scifi", "viewers", "engaged", "young"}
    assert segments_of(client, names, "anon") == set()
    assert f.stats.aliases == 1
    f.close()
    # erasing the user removes the visitor's pointer to it too
    producer = Producer(collect_settings([f"stream={names.stream}", f"group={names.group}"]))
    asyncio.run(_erase(producer, "user"))
    assert counters(client, names, "anon") == {} and counters(client, names, "user") == {}
    assert not client.exists(visitors_key(names, "user"))


async def _erase(producer: Producer, subject: str) -> None:
    try:
        await producer.erase(subject)
    finally:
        await producer.aclose()


# ------------------------------------------------------------------------------------------------------- pure ---
def event(ts: int, event_type: str = "view", event_id: str = "", **kw) -> Event:
    return Event(
        ts,
        event_id or f"e{ts}",
        "u",
        False,
        kw.get("item"),
        event_type,
        kw.get("value"),
        ts,
        None,
        "desktop",
        kw.get("attributes", ()),
    )


def test_latest_attribute_wins_by_time_then_event_id_whatever_the_arrival_order():
    rules = RuleSet(parse_segments(RULES))
    state = UserState()
    apply_events(state, [event(T0 + 5, "profile", "b", attributes=(("age_band", "18-24"),))], rules, {}, 2160)
    change = apply_events(state, [event(T0, "profile", "z", attributes=(("age_band", "35-44"),))], rules, {}, 2160)
    assert state.attributes == {"age_band": "18-24"} and "age_band" not in change.attributes
    change = apply_events(state, [event(T0 + 5, "profile", "c", attributes=(("age_band", "25-34"),))], rules, {}, 2160)
    assert state.attributes == {"age_band": "25-34"} and change.attributes == {"age_band"}
    assert members(state, ["young"], rules, T0 + 5, 2160) == {"young": False}


def test_an_out_of_order_event_counts_in_its_hour_but_starts_no_session():
    rules = RuleSet(parse_segments(RULES))
    features = rules.features
    state = UserState()
    apply_events(state, [event(T0 + 3 * HOUR_MS)], rules, {}, 2160)
    apply_events(state, [event(T0)], rules, {}, 2160)
    sessions = next(f for f in features if f.kind == "sessions")
    views = next(f for f in features if f.kind == "count" and f.events == ("view",))
    assert sum(state.buckets[sessions.id].values()) == 1
    assert state.buckets[views.id] == {T0 // HOUR_MS: 1.0, T0 // HOUR_MS + 3: 1.0}
    assert state.last_ms == T0 + 3 * HOUR_MS


def test_cached_feature_values_agree_with_values_computed_afresh():
    """apply_events keeps the cached values current (counts incremented inside their window at the cached hour, sums
    dropped): whatever the order of events and evaluations, members agrees with values summed afresh."""
    import random

    rules = RuleSet(parse_segments({
        **RULES,
        "dwellers": {"sum": {"event": "dwell", "within": "2d"}, "gte": 90_000},
        "recent": {"count": {"within": "3h"}, "gte": 2},
        "scifi_share": {"share": {"category": "Sci-Fi", "within": "1d"}, "gte": 0.5},
    }))  # fmt: skip
    rng = random.Random(3)
    state = UserState()
    ts = T0
    for _ in range(400):
        batch = []
        for _ in range(rng.choice([1, 1, 1, 2, 4])):
            ts += rng.randint(1, 40) * 60_000
            when = ts - rng.choice([0, 0, 0, 0, 2 * HOUR_MS, 30 * HOUR_MS])  # sometimes late: an earlier hour
            kind = rng.choice(["view", "view", "click", "dwell", "profile"])
            attributes = (("age_band", rng.choice(["18-24", "25-34"])),) if kind == "profile" else ()
            value = rng.uniform(1000, 60_000) if kind == "dwell" else None
            item = rng.choice(["i1", "i2"])
            batch.append(event(when, kind, f"e{len(batch)}-{ts}", item=item, attributes=attributes, value=value))
        apply_events(state, batch, rules, CATEGORIES, 2160)
        as_of = state.last_ms + rng.choice([0, 0, HOUR_MS, 30 * HOUR_MS])
        cached = members(state, list(rules.segments), rules, as_of, 2160)
        fresh = UserState(state.last_ms, state.buckets, state.attributes, state.attribute_at, state.profiled)
        assert cached == members(fresh, list(rules.segments), rules, as_of, 2160)
        assert cached == {name: compile_evaluate(rules, name, fresh, as_of) for name in rules.segments}
        assert state.values == {fid: fresh.values[fid] for fid in state.values}  # bit for bit, sums too


def compile_evaluate(rules: RuleSet, name: str, state: UserState, as_of: int) -> bool:
    """The reference: compile.evaluate over compile.feature_value, no memo, no cache."""
    from recstack.profiles.compile import evaluate, feature_value

    segment = rules.segments[name]
    values = {f.id: feature_value(f, state.buckets.get(f.id, {}), as_of) for f in segment.features}
    return evaluate(segment, values, state.attributes)
