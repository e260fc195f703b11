"""The benchmark's synthetic event lake (benchmarks/synthetic_lake.py): row count, the lake's layout and schema,
plausible content, and the same lake for the same seed and key."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from module_support import load_module

from recstack.collect.pseudonymise import Pseudonymiser
from recstack.data import lake
from recstack.data.sources.lake import read_items
from recstack.profiles.source import load_events

REPO = Path(__file__).resolve().parents[2]
KEY = b"test-only-pseudonymisation-key-0123456789abcdef"


syn = load_module(REPO / "benchmarks" / "synthetic_lake.py")
SMALL = syn.LakeSpec(events=20_000, users=600, items=300, days=10, bots=3)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    return syn.generate(tmp_path_factory.mktemp("syn") / "a", SMALL, KEY, writers=2)


def _table(info):
    table = lake.read_table(info.lake, "events")
    return table.sort_by("event_id")


def test_row_count_layout_and_schema(small) -> None:
    assert small.rows == SMALL.events and sum(small.by_type.values()) == SMALL.events
    files = lake.parts(small.lake, "events")
    assert len(files) == small.files
    for path in files[:: max(1, len(files) // 40)]:
        schema = pq.read_schema(path)
        assert schema.names == lake.EVENTS_SCHEMA.names
        assert [f.type for f in schema] == [f.type for f in lake.EVENTS_SCHEMA]
        received = pq.read_table(path, columns=["received_ts"])["received_ts"]
        hours = {t.replace(minute=0, second=0, microsecond=0) for t in received.to_pylist()}
        assert len(hours) == 1 and lake.partition_dir(small.lake, "events", hours.pop()) == path.parent
    table = _table(small)
    assert table.num_rows == SMALL.events
    assert lake.conform(table, "events").num_rows == SMALL.events  # the declared schema, nulls where allowed
    assert pc.count_distinct(table["event_id"]).as_py() == SMALL.events
    assert table["received_ts"].null_count == 0 and table["user_id"].null_count == 0


def test_content_is_plausible(small) -> None:
    table = _table(small)
    types = table["event_type"].to_numpy(zero_copy_only=False)
    counts = dict(zip(*np.unique(types, return_counts=True), strict=True))
    assert counts["view"] > counts["click"] > counts["purchase"] > 0
    assert {"dwell", "rating", "add_to_cart", "profile", "preference", "search", "survey", "scroll"} <= set(counts)
    items = read_items(small.items_path)
    assert len(items) == SMALL.items and all(1 <= len(c) <= 3 for c in items["categories"])
    item_ids = table["item_id"].to_numpy(zero_copy_only=False)
    page_level = np.isin(types, ["search", "preference", "survey", "profile"])
    assert all(i is None for i in item_ids[page_level])
    assert set(item_ids[~page_level & (item_ids != None)]) <= set(items["item_id"])  # noqa: E711
    value = table["value"].to_numpy(zero_copy_only=False)
    assert (value[types == "dwell"] > 0).all() and set(value[types == "rating"]) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    pref = types == "preference"
    assert (np.abs(value[pref]) <= 1).all() and table["category"].filter(
        pc.equal(table["event_type"], "preference")
    ).null_count == 0
    profiles = table.filter(pc.equal(table["event_type"], "profile"))
    assert set(profiles["age_band"].drop_null().to_pylist()) <= {band for band, _ in syn.AGE_BANDS}
    assert 0 < profiles["age_band"].null_count < profiles.num_rows  # some missing: something to impute
    assert len(profiles["identity_hash"].drop_null()) > 0
    devices = set(table["device_class"].to_pylist())
    assert {"desktop", "mobile", "tablet", "bot"} <= devices
    hours = table["local_hour"].to_numpy()
    assert hours.min() >= 0 and hours.max() <= 23
    # users: pseudonyms of user-<n>, activity heavy-tailed
    users = table["user_id"].to_numpy(zero_copy_only=False)
    assert Pseudonymiser(KEY).user(syn.raw_user_id(1)) in set(users) or Pseudonymiser(KEY).user(
        syn.raw_user_id(2)
    ) in set(users)
    _, per_user = np.unique(users, return_counts=True)
    assert per_user.max() > 10 * np.median(per_user)
    delay = (pc.subtract(table["received_ts"].cast("int64"), table["client_ts"].cast("int64"))).to_numpy()
    assert np.median(delay) < 1000 and (delay >= 0).mean() > 0.99


def test_duckdb_reads_it_with_the_profiles_source(small) -> None:
    con = duckdb.connect()
    start = SMALL.start_ms
    n = load_events(con, small.lake, start, SMALL.end_ms, drop_bots=False)
    bots = load_events(con, small.lake, start, SMALL.end_ms, drop_bots=True)
    assert SMALL.events * 0.98 < n <= SMALL.events  # sessions that run past the end are outside the window
    assert n - bots >= SMALL.events * SMALL.bot_event_share * 0.2  # the declared half of the bots' events
    assert SMALL.end_ms == int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)


def test_same_seed_same_lake_other_seed_other_lake(small, tmp_path: Path) -> None:
    again = syn.generate(tmp_path / "b", SMALL, KEY, writers=1)
    assert _table(again).equals(_table(small))
    assert [p.relative_to(again.lake) for p in lake.parts(again.lake, "events")] == [
        p.relative_to(small.lake) for p in lake.parts(small.lake, "events")
    ]
    assert again.items_path.read_text() == small.items_path.read_text()
    other = syn.generate(tmp_path / "c", replace(SMALL, seed=1), KEY)
    assert not _table(other).equals(_table(small))


def test_ensure_lake_reuses_only_a_matching_lake(tmp_path: Path) -> None:
    spec = replace(SMALL, events=5_000, days=3)
    first, reused = syn.ensure_lake(tmp_path, spec, KEY)
    assert not reused and first.rows == 5_000
    stamp = (tmp_path / syn.MANIFEST).stat().st_mtime_ns
    second, reused = syn.ensure_lake(tmp_path, spec, KEY)
    assert reused and second.rows == 5_000 and (tmp_path / syn.MANIFEST).stat().st_mtime_ns == stamp
    _, reused = syn.ensure_lake(tmp_path, spec, KEY[::-1])  # another key: other pseudonyms
    assert not reused
    third, reused = syn.ensure_lake(tmp_path, replace(spec, events=6_000), KEY[::-1])
    assert not reused and third.rows == 6_000 and len(lake.read_table(tmp_path / "lake", "events")) == 6_000


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1,000 events"):
        syn.LakeSpec(events=10)
    with pytest.raises(ValueError, match="genres"):
        syn.LakeSpec(genres=99)


def _bench_module():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("profiles_bench", REPO / "benchmarks" / "profiles.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_measures_a_subprocess_and_names_missing_parts(tmp_path: Path) -> None:
    bench = _bench_module()
    code = "import json; x = bytearray(64 << 20); print('working'); print(json.dumps({'seconds': 1.5}))"
    row = bench.measure([sys.executable, "-c", code], {}, tmp_path / "child.log", poll_s=0.01)
    assert row["rc"] == 0 and row["wall_s"] > 0 and row["summary"] == {"seconds": 1.5}
    assert row["max_rss_mib"] >= 64  # the child's own peak, from wait4
    failed = bench.measure([sys.executable, "-c", "import sys; sys.exit('broken')"], {}, tmp_path / "bad.log")
    assert failed["rc"] == 1 and "broken" in failed["stderr_tail"]
    with pytest.raises(bench.PartUnavailable, match="has not landed"):
        bench._script("recstack-no-such-tool")
    verdicts = bench.verdicts(
        {
            "build": {"wall_s_median": 20.0, "peak_tree_rss_mib_max": 1024.0},
            "segments": {"wall_s_median": 30.0, "peak_tree_rss_mib_max": 5000.0},
        }
    )
    assert verdicts["batch_seconds"] == {"value": 50.0, "target": 60.0, "ok": True}
    assert verdicts["batch_peak_rss_gib"]["ok"] is False
