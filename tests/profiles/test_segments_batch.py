"""recstack-segments run: membership with DuckDB over a real lake, history across runs, publishing to real Redis."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import redis
import yaml

from recstack.collect.records import StreamNames, members_key, memberships_key, segments_key, tombstone_key
from recstack.data import lake
from recstack.profiles.rules import HOUR_MS, parse_segments
from recstack.profiles.segments_batch import dry_run_size, run_segments
from recstack.profiles.segments_online import publish, registry, save_rule, sync_yaml

T0 = 1_790_000_000_000 // HOUR_MS * HOUR_MS  # an hour boundary (2026-09)
DAY = 24 * HOUR_MS
RULES = """
scifi_fans: {count: {event: view, category: Sci-Fi, within: 7d}, gte: 3}
engaged: {sessions: {within: 30d}, gte: 2}
lapsed: {all: [{count: {within: 90d}, gte: 1}, {count: {within: 30d}, eq: 0}]}
young: {attribute: age_band, in: ["18-24"]}
drama_share: {share: {category: Drama, within: 30d}, gte: 0.5}
long_dwell: {sum: {event: dwell, within: 1d}, gte: 60000}
"""


def event(i: str, user: str, kind: str, ts: int, **extra) -> dict:
    return {
        "event_id": i,
        "user_id": user,
        "anonymous": False,
        "event_type": kind,
        "received_ts": ts,
        "client_ts": ts,
        "source": "api",
        **extra,
    }


def write_lake(root: Path) -> Path:
    rows = [
        # alice: 3 sci-fi views this week in one session -> scifi_fans; one session only -> not engaged
        *(event(f"a{i}", "alice", "view", T0 - 2 * HOUR_MS + i * 60_000, item_id="m1") for i in range(3)),
        # bob: 2 sci-fi views an hour apart (2 sessions) + a drama view: engaged, not a fan, drama share 1/3
        event("b1", "bob", "view", T0 - 5 * HOUR_MS, item_id="m1"),
        event("b2", "bob", "view", T0 - 3 * HOUR_MS, item_id="m1"),
        event("b3", "bob", "view", T0 - 3 * HOUR_MS + 60_000, item_id="m2"),
        # carol: active 40 days ago only -> lapsed; says she is 19 -> young
        event("c1", "carol", "click", T0 - 40 * DAY, item_id="m2"),
        event("c2", "carol", "profile", T0 - 200 * DAY, age_band="18-24"),
        # dave: one drama view (share 1.0) and 61 s of dwell today
        event("d1", "dave", "view", T0 - HOUR_MS, item_id="m2"),
        event("d2", "dave", "dwell", T0 - HOUR_MS + 1000, item_id="m2", value=61_000.0),
        # a crawler that would qualify for everything: dropped
        *(
            event(f"x{i}", "crawler", "view", T0 - HOUR_MS - i * 3_600_000, item_id="m1", device_class="bot")
            for i in range(5)
        ),
        # an event after the run's time: not counted
        *(event(f"f{i}", "erin", "view", T0 + HOUR_MS + i, item_id="m1") for i in range(3)),
    ]
    lake.write_rows(root / "lake", "events", rows)
    items = root / "items.csv"
    pd.DataFrame(
        {"item_id": ["m1", "m2"], "title": ["Alien", "Casablanca"], "categories": ["Sci-Fi|Horror", "Drama"]}
    ).to_csv(items, index=False)
    return items


def members(run) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for segment, user in zip(run.membership["segment"].to_pylist(), run.membership["user_id"].to_pylist(), strict=True):
        out.setdefault(segment, set()).add(user)
    return out


def test_membership_history_and_dry_run(tmp_path: Path) -> None:
    items = write_lake(tmp_path)
    segments = parse_segments(yaml.safe_load(RULES))
    run = run_segments(tmp_path / "lake", items, segments, tmp_path / "out", as_of_ms=T0)
    assert members(run) == {
        "scifi_fans": {"alice"},
        "engaged": {"bob"},
        "lapsed": {"carol"},
        "young": {"carol"},
        "drama_share": {"dave"},
        "long_dwell": {"dave"},
    }
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["segments"]
    assert summary["scifi_fans"]["top_items"] == [["m1", 3]]
    assert summary["young"]["overlap"] == {"lapsed": 1}
    assert dry_run_size(tmp_path / "lake", items, segments["engaged"], as_of_ms=T0) == 1

    # a day later dave's dwell has left its 1-day window; alice's views are still in the week
    later = run_segments(tmp_path / "lake", items, segments, tmp_path / "out", as_of_ms=T0 + DAY)
    assert "dave" not in members(later).get("long_dwell", set())
    assert members(later)["scifi_fans"] == {"alice", "erin"}  # erin's views now count
    entered = dict(
        zip(later.membership["user_id"].to_pylist(), later.membership["entered_ms"].to_pylist(), strict=True)
    )
    assert entered["alice"] == T0 and entered["erin"] == T0 + DAY
    (history,) = (tmp_path / "out" / "history").glob("*.parquet")
    spells = pq.read_table(history).to_pylist()
    assert {"segment": "long_dwell", "user_id": "dave", "entered_ms": T0, "left_ms": T0 + DAY} in spells
    runs = pq.read_table(tmp_path / "out" / "runs.parquet").to_pandas()
    assert runs[runs.segment == "long_dwell"]["size"].tolist() == [1, 0]


@pytest.mark.redis
def test_publish_swaps_members_and_never_publishes_an_erased_subject(tmp_path: Path) -> None:
    items = write_lake(tmp_path)
    names = StreamNames(stream=f"test:{uuid.uuid4().hex}")
    client = redis.Redis()
    try:
        segments = parse_segments(yaml.safe_load(RULES))
        sync_yaml(client, names, segments)
        assert set(registry(client, names)) == set(segments)
        api_rule = parse_segments({"api_rule": {"count": {"within": "1d"}, "gte": 1}})["api_rule"]
        assert save_rule(client, names, api_rule, "api") and not save_rule(client, names, api_rule, "api")
        client.sadd(tombstone_key(names), "carol")
        run = run_segments(tmp_path / "lake", items, segments, tmp_path / "out", as_of_ms=T0)
        published = publish(client, names, run)
        assert published["young"] == 0 and published["scifi_fans"] == 1
        assert client.zrange(members_key(names, "scifi_fans"), 0, -1) == [b"alice"]
        assert client.smembers(memberships_key(names, "dave")) == {b"drama_share", b"long_dwell"}
        meta = json.loads(client.hget(segments_key(names, "meta"), "long_dwell"))
        assert meta["size"] == 1 and meta["sizes"][-1][1] == 1
        later = run_segments(tmp_path / "lake", items, segments, tmp_path / "out", as_of_ms=T0 + DAY)
        publish(client, names, later)
        assert client.smembers(memberships_key(names, "dave")) == {b"drama_share"}
        assert client.zcard(members_key(names, "long_dwell")) == 0
    finally:
        for key in client.scan_iter(f"{names.stream}*"):
            client.delete(key)
        client.close()


@pytest.mark.redis
def test_cli_validate_and_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recstack.cli.segments import main

    items = write_lake(tmp_path)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES)
    stream = f"test:{uuid.uuid4().hex}"
    common = [f"rules={rules}", f"collector.stream={stream}"]
    with pytest.raises(SystemExit) as done:
        main(["validate", *common])
    assert done.value.code == 0 and "scifi_fans: (f_" in capsys.readouterr().out
    args = [
        *common,
        f"lake={tmp_path / 'lake'}",
        f"items_path={items}",
        f"out={tmp_path / 'out'}",
        "as_of=2026-09-21T13:00:00Z",
    ]
    with pytest.raises(SystemExit) as done:
        main(["run", *args])
    assert done.value.code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["published"] and set(report["sizes"]) == set(parse_segments(yaml.safe_load(RULES)))
    (rules / "r.yaml").write_text("bad: {count: {event: view}, gte: 1}\n")
    with pytest.raises(SystemExit) as done:
        main(["run", *args])
    assert done.value.code == 2
    assert "r.yaml: segments.bad.count.within" in capsys.readouterr().err
    client = redis.Redis()
    for key in client.scan_iter(f"{stream}*"):
        client.delete(key)
    client.close()


def _membership(path: Path) -> list[tuple[str, str]]:
    table = pq.read_table(path / "membership.parquet")
    return sorted(zip(table["segment"].to_pylist(), table["user_id"].to_pylist(), strict=True))


@pytest.mark.parametrize("history_days", [None, 2])
def test_profiles_build_runs_the_segments_over_its_own_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], history_days: int | None
) -> None:
    """``recstack-profiles build segments.run=true`` gives the membership ``recstack-segments run`` gives, over the
    build's load of the lake (a longer history than the horizon), or over its own when the history is too short."""
    from recstack.cli.profiles import main as profiles_main
    from recstack.cli.segments import main as segments_main

    items = write_lake(tmp_path)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES)
    as_of = "2026-09-21T13:00:00Z"
    common = [f"lake={tmp_path / 'lake'}", f"items_path={items}", f"as_of={as_of}"]
    with pytest.raises(SystemExit) as done:
        segments_main(
            ["run", *common, f"rules={rules}", f"out={tmp_path / 'alone'}", "publish=false", "registry=false"]
        )
    assert done.value.code == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        profiles_main(
            [
                "build",
                *common,
                f"out={tmp_path / 'build'}",
                "redis.load=false",
                "impute.age_band=mode",
                f"history_days={'null' if history_days is None else history_days}",
                "segments.run=true",
                f"segments.overrides=['rules={rules}','out={tmp_path / 'together'}','publish=false','registry=false']",
            ]
        )
    out, err = capsys.readouterr()
    assert done.value.code == 0, err
    assert "segments: 6 evaluated over" in out and str(tmp_path / "together") in out
    assert _membership(tmp_path / "together") == _membership(tmp_path / "alone") != []


def test_segments_overrides_cannot_change_the_builds_own_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from recstack.cli.profiles import main as profiles_main

    items = write_lake(tmp_path)
    with pytest.raises(SystemExit) as done:
        profiles_main(
            [
                "build",
                f"lake={tmp_path / 'lake'}",
                f"items_path={items}",
                f"out={tmp_path / 'build'}",
                "redis.load=false",
                "impute.age_band=mode",
                "segments.run=true",
                "segments.overrides=['lake=/elsewhere']",
            ]
        )
    assert done.value.code == 2
    assert (
        "segments.overrides: lake is the build's own setting; set lake= on the build instead" in capsys.readouterr().err
    )
