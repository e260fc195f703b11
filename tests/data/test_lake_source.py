"""``data=lake``: the event lake read with DuckDB into a Dataset, prepared like every other source, and re-prepared
when the lake grows. Fixture lakes are written with the lake's own writer (recstack.data.lake.write_rows)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from recstack.config import config_dir, prepare_named
from recstack.data import lake
from recstack.data.prepared import SPLIT_FILES, PreparedSplit
from recstack.data.schema import DataError
from recstack.data.sources import load_dataset
from recstack.data.sources.lake import (
    DEFAULT_WEIGHTS,
    ITEM_EVENT_TYPES,
    PAGE_EVENT_TYPES,
    lake_snapshot,
    load_lake,
    resolve_window,
)

TODAY = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
NOW = TODAY.isoformat()


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


_counter = iter(range(10**9))


def event(
    user: str = "u1", item: str | None = "i1", kind: str = "view", at: datetime = TODAY, **extra: Any
) -> dict[str, Any]:
    """One events row as the consumer stores it (received at ``at``, no client time unless given)."""
    row = {
        "event_id": f"e{next(_counter)}",
        "user_id": user,
        "anonymous": False,
        "item_id": item,
        "event_type": kind,
        "received_ts": ms(at),
        "source": "api",
    }
    row.update(extra)
    if isinstance(row.get("client_ts"), datetime):
        row["client_ts"] = ms(row["client_ts"])
    return row


def rows_of(dataset) -> list[tuple[str, str, str, float]]:
    frame = dataset.interactions
    return sorted(zip(frame.user_id, frame.item_id, frame.event_type, frame.value.astype(float), strict=True))


def test_window_reads_only_its_dates(tmp_path: Path) -> None:
    lake.write_rows(tmp_path, "events", [event(item="old", at=TODAY - timedelta(days=40))])
    lake.write_rows(tmp_path, "events", [event(item="mid", at=TODAY - timedelta(days=8))])
    lake.write_rows(tmp_path, "events", [event(item="new", at=TODAY)])
    assert sorted(load_lake(tmp_path, window_days=30, now=NOW).interactions.item_id) == ["mid", "new"]
    assert list(load_lake(tmp_path, window_days=1, now=NOW).interactions.item_id) == ["new"]
    # A fixed window; a damaged file after its end is never opened (the dt partition prunes it)
    bad = lake.partition_dir(tmp_path, "events", TODAY) / "part-damaged.parquet"
    bad.write_bytes(b"not parquet")
    fixed = load_lake(tmp_path, start="2026-11-20", end="2026-11-30", now=NOW)
    assert list(fixed.interactions.item_id) == ["mid"] and fixed.source == f"lake:{tmp_path}"
    with pytest.raises(DataError, match=r"could not be read .*part-damaged"):
        load_lake(tmp_path, window_days=2, now=NOW)


def test_window_is_whole_utc_dates() -> None:
    window = resolve_window(90, now="2026-12-06T23:59:00+00:00")
    assert (str(window.start), str(window.end)) == ("2026-09-08", "2026-12-06")
    assert resolve_window(7, end="2026-01-10").start.isoformat() == "2026-01-04"
    with pytest.raises(DataError, match=r"starts .* after it ends"):
        resolve_window(start="2026-02-01", end="2026-01-01")
    with pytest.raises(DataError, match="window_days=0"):
        resolve_window(0)


def test_files_of_an_older_schema_read_with_the_new_one(tmp_path: Path) -> None:
    """A column added to the lake schema later is null in older files (union_by_name), not an error."""
    older = lake.conform([event(item="old-file")], "events").drop_columns(["device_class", "stream_id", "language"])
    folder = lake.partition_dir(tmp_path, "events", TODAY - timedelta(days=1))
    lake.write_part(older, folder)
    lake.write_rows(tmp_path, "events", [event(item="new-file", device_class="desktop")])
    assert sorted(load_lake(tmp_path, now=NOW).interactions.item_id) == ["new-file", "old-file"]


def test_an_event_stored_twice_counts_once_the_first_received(tmp_path: Path) -> None:
    first = event(kind="rating", value=4.0, at=TODAY - timedelta(hours=2), stream_id="1-0")
    replay = {**first, "value": 1.0, "received_ts": ms(TODAY), "stream_id": "9-0"}  # a replayed stream entry
    lake.write_rows(tmp_path, "events", [replay])
    lake.write_rows(tmp_path, "events", [first])
    lake.write_rows(tmp_path, "events", [event(item="i2")])
    assert rows_of(load_lake(tmp_path, now=NOW)) == [("u1", "i1", "rating", 4.0), ("u1", "i2", "view", 0.5)]


def test_an_identified_visitor_history_merges_into_the_user(tmp_path: Path) -> None:
    before = TODAY - timedelta(days=3)
    lake.write_rows(
        tmp_path,
        "events",
        [
            event("v-anon", "i1", "view", at=before, anonymous=True),
            event("v-anon", "i2", "click", at=before, anonymous=True),
            event("u-alice", "i3", "purchase"),
            event("v-stranger", "i4", "click", anonymous=True),  # never identified: stays a visitor
            event("v-anon", "i5", "click"),  # an account pseudonym that equals a visitor's is not that visitor
        ],
    )
    lake.write_rows(
        tmp_path,
        "aliases",
        [
            {"anonymous_id": "v-anon", "user_id": "u-mistaken", "received_ts": ms(before)},
            {"anonymous_id": "v-anon", "user_id": "u-alice", "received_ts": ms(TODAY - timedelta(days=1))},
        ],
    )
    assert rows_of(load_lake(tmp_path, now=NOW)) == [
        ("u-alice", "i1", "view", 0.5),
        ("u-alice", "i2", "click", 1.0),
        ("u-alice", "i3", "purchase", 5.0),
        ("v-anon", "i5", "click", 1.0),
        ("v-stranger", "i4", "click", 1.0),
    ]


def test_bots_are_dropped_unless_asked(tmp_path: Path) -> None:
    lake.write_rows(
        tmp_path,
        "events",
        [event("human", device_class="mobile"), event("crawler", device_class="bot"), event("unknown")],
    )
    assert sorted(load_lake(tmp_path, now=NOW).interactions.user_id) == ["human", "unknown"]
    assert sorted(load_lake(tmp_path, now=NOW, drop_bots=False).interactions.user_id) == ["crawler", "human", "unknown"]


def test_weights_values_types_and_times(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    at = TODAY - timedelta(hours=1)
    lake.write_rows(
        tmp_path,
        "events",
        [
            event(item="buy", kind="purchase", at=at),
            event(item="cart", kind="add_to_cart", at=at),
            event(item="stars", kind="rating", value=3.5, at=at),
            event(item="clicked", kind="click", at=at),
            event(item="seen", kind="view", at=at, client_ts=at - timedelta(minutes=3)),
            event(item="read", kind="dwell", value=45_000.0, at=at),
            event(item="bounced", kind="dwell", value=800.0, at=at),
            event(item="scrolled", kind="scroll", value=0.9, at=at),
            event(item=None, kind="search", query="shoes", at=at),
            event(item=None, kind="profile", country="DE", at=at),
            event(item="skewed", kind="click", at=at, client_ts=at + timedelta(hours=3)),  # a clock far ahead
        ],
    )
    with caplog.at_level(logging.INFO, logger="recstack.data.sources.lake"):
        dataset = load_lake(tmp_path, now=NOW, dwell_threshold_ms=10_000)
    assert rows_of(dataset) == [
        ("u1", "buy", "purchase", 5.0),
        ("u1", "cart", "add_to_cart", 3.0),
        ("u1", "clicked", "click", 1.0),
        ("u1", "read", "dwell", 1.0),
        ("u1", "seen", "view", 0.5),
        ("u1", "skewed", "click", 1.0),
        ("u1", "stars", "rating", 3.5),
    ]
    times = dict(zip(dataset.interactions.item_id, dataset.interactions.timestamp, strict=True))
    assert times["seen"] == int((at - timedelta(minutes=3)).timestamp())  # the client's plausible clock
    assert times["skewed"] == times["buy"] == int(at.timestamp())  # implausible or absent: the receive time
    assert str(dataset.interactions.timestamp.dtype) == "int64" and str(dataset.interactions.value.dtype) == "float32"
    # every event left out is accounted for
    assert "page-level 2" in caplog.text and "short dwell 1" in caplog.text and "unweighted scroll 1" in caplog.text
    custom = load_lake(tmp_path, now=NOW, weights={"scroll": 0.25, "purchase": 2, "view": None})
    assert rows_of(custom) == [("u1", "buy", "purchase", 2.0), ("u1", "scrolled", "scroll", 0.25)]


def test_users_carry_their_latest_profile(tmp_path: Path) -> None:
    old, newer = TODAY - timedelta(days=200), TODAY - timedelta(days=2)
    lake.write_rows(
        tmp_path,
        "events",
        [
            # given long before the window: a profile is state, it still describes the user
            event("u1", None, "profile", at=old, age_band="25-34", gender="f", country="FR", language="fr"),
            event("u1", None, "profile", at=newer, country="DE"),  # moved; the rest unchanged (null)
            event("u1", "i1", "view"),
            event("v-2", None, "profile", at=newer, anonymous=True, age_band="35-44"),
            event("v-2", "i2", "view", anonymous=True),
            event("u3", "i3", "view"),  # no profile
        ],
    )
    lake.write_rows(tmp_path, "aliases", [{"anonymous_id": "v-2", "user_id": "u2", "received_ts": ms(newer)}])
    users = load_lake(tmp_path, window_days=30, now=NOW).users
    assert list(users.columns) == ["user_id", "age_band", "gender", "country", "language"]
    got = {row.user_id: row for row in users.itertuples()}
    assert sorted(got) == ["u1", "u2"]
    assert (got["u1"].age_band, got["u1"].gender, got["u1"].country, got["u1"].language) == ("25-34", "f", "DE", "fr")
    assert got["u2"].age_band == "35-44" and users.set_index("user_id").loc["u2"].isna()[["gender", "country"]].all()


def test_items_come_from_an_item_file(tmp_path: Path) -> None:
    lake.write_rows(tmp_path / "lake", "events", [event(item="i1"), event(item="i2")])
    catalogue = tmp_path / "items.csv"
    catalogue.write_text("item_id,title,categories,text\ni1,Red shoe,Shoes|Red,leather\ni9,Hat,,\n")
    dataset = load_lake(tmp_path / "lake", now=NOW, items_path=catalogue)
    items = dataset.items.set_index("item_id")
    assert items.loc["i1", "title"] == "Red shoe" and items.loc["i1", "categories"] == ["Shoes", "Red"]
    assert items.loc["i9", "categories"] == [] and items["year"].isna().all()
    assert len(load_lake(tmp_path / "lake", now=NOW).items) == 0
    with pytest.raises(DataError, match="no such item metadata file"):
        load_lake(tmp_path / "lake", now=NOW, items_path=tmp_path / "nope.csv")


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no event lake at .*data\.source\.path="):
        load_lake(tmp_path / "missing")
    with pytest.raises(DataError, match="the lake has no events yet"):
        load_lake(tmp_path)
    lake.write_rows(tmp_path, "events", [event(at=datetime(2026, 3, 1, tzinfo=UTC))])
    with pytest.raises(
        DataError, match=r"no events in the window 2026-09-08\.\.2026-12-06.*newest partition is dt=2026-03-01"
    ):
        load_lake(tmp_path, now=NOW)
    with pytest.raises(DataError, match="unknown event type 'purchse'"):
        load_lake(tmp_path, start="2026-03-01", weights={"purchse": 5})
    with pytest.raises(DataError, match="'search' events are page-level"):
        load_lake(tmp_path, start="2026-03-01", weights={"search": 1})
    with pytest.raises(DataError, match=r"weights\.view='lots'"):
        load_lake(tmp_path, start="2026-03-01", weights={"view": "lots"})
    with pytest.raises(DataError, match=r"no interactions in the window .*unweighted view 1"):
        load_lake(tmp_path, start="2026-03-01", weights={"purchase": 5})
    with pytest.raises(DataError, match="needs path="):
        load_dataset("lake")


def test_config_weights_are_the_loader_defaults() -> None:
    cfg = OmegaConf.load(config_dir() / "data" / "lake.yaml")
    assert OmegaConf.to_container(cfg.source.weights) == DEFAULT_WEIGHTS


def test_event_types_are_the_ones_the_collector_accepts() -> None:
    """recstack.data may not import the collector (a layer above): this keeps the two lists from drifting apart."""
    from recstack.collect.events import EVENT_TYPES, PAGE_EVENTS

    assert sorted(ITEM_EVENT_TYPES + PAGE_EVENT_TYPES) == sorted(EVENT_TYPES)
    assert set(PAGE_EVENT_TYPES) == PAGE_EVENTS


def fixture_lake(root: Path, n_users: int = 30, n_items: int = 20, day: datetime = TODAY) -> None:
    """A small lake: every user views/clicks/buys a handful of items over the last days, one hour file per day."""
    for back in range(5):
        at = day - timedelta(days=back)
        rows = [
            event(f"u{u}", f"i{(u * 7 + back * 3 + k) % n_items}", ("view", "click", "purchase")[k % 3], at=at)
            for u in range(n_users)
            for k in range(3)
        ]
        lake.write_rows(root, "events", rows)


def test_prepare_data_lake_is_a_prepared_split_and_follows_the_lake(tmp_path: Path) -> None:
    source = tmp_path / "lake"
    fixture_lake(source)
    overrides = [f"data.source.path={source}", f"data.source.now={NOW}"]
    out = tmp_path / "processed"
    split = prepare_named("lake", "random", overrides, out_root=out)
    assert split.root.parent == out / "lake" and split.n_users == 30
    loaded = PreparedSplit.load(split.root)
    assert len(loaded.train) + len(loaded.valid) + len(loaded.test) == split.manifest["n_interactions"]
    assert set(loaded.train.event_type) <= {"view", "click", "purchase"}
    assert split.manifest["config"]["data"]["snapshot"]["window"] == ["2026-09-08", "2026-12-06"]
    # the same layout as an event log's split
    csv = tmp_path / "events.csv"
    loaded.train[["user_id", "item_id", "timestamp", "value", "event_type"]].to_csv(csv, index=False)
    events = prepare_named("events", "random", [f"data.source.path={csv}"], out_root=out)
    assert sorted(p.name for p in events.root.iterdir()) == sorted(p.name for p in split.root.iterdir())
    assert all((split.root / name).is_file() for name in SPLIT_FILES)
    for stage in ("train", "items", "users"):
        assert list(getattr(loaded, stage).columns)[:2] == list(getattr(events, stage).columns)[:2]
    assert list(loaded.train.columns) == list(events.train.columns)
    # unchanged lake: the cached split; a lake that gained a file: prepared again, with the new events
    assert prepare_named("lake", "random", overrides, out_root=out).root == split.root
    lake.write_rows(source, "events", [event("u-new", "i1", "purchase", at=TODAY), event("u-new", "i2", at=TODAY)])
    grown = prepare_named("lake", "random", overrides, out_root=out)
    assert grown.root != split.root and grown.n_users == 31
    assert (
        grown.manifest["config"]["data"]["snapshot"]["files"]
        == split.manifest["config"]["data"]["snapshot"]["files"] + 1
    )
    # another day is another window: not the cached split either
    later = [f"data.source.path={source}", f"data.source.now={(TODAY + timedelta(days=1)).isoformat()}"]
    assert prepare_named("lake", "random", later, out_root=out).root != grown.root


def test_snapshot_changes_when_a_part_is_rewritten(tmp_path: Path) -> None:
    lake.write_rows(tmp_path, "events", [event(), event(item="i2")], name="fixed")
    before = lake_snapshot(tmp_path, now=NOW)
    lake.write_rows(tmp_path, "events", [event(item="i3")], name="fixed")  # same file name: an erasure's rewrite
    assert lake_snapshot(tmp_path, now=NOW) != before
    assert lake_snapshot(tmp_path / "missing", now=NOW)["files"] == 0


def test_a_lake_split_trains_pop_and_evaluates(tmp_path: Path) -> None:
    from recstack.evaluation.evaluator import evaluate
    from recstack.models.popularity import Popularity

    fixture_lake(tmp_path / "lake")
    split = prepare_named(
        "lake", "random", [f"data.source.path={tmp_path / 'lake'}", f"data.source.now={NOW}"], out_root=tmp_path / "p"
    )
    model = Popularity(n_users=split.n_users, n_items=split.n_items)
    model.fit(split)
    result = evaluate(model, split, "test", ks=(5,))
    assert 0.0 <= result["ndcg@5"] <= 1.0 and result.n_users_evaluated > 0


def test_cli_prepare_data_lake(tmp_path: Path) -> None:
    fixture_lake(tmp_path / "lake")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recstack.cli.data",
            "prepare",
            "data=lake",
            f"data.source.path={tmp_path / 'lake'}",
            f"data.source.now={NOW}",
            "data.source.window_days=3",
            f"processed_root={tmp_path / 'processed'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": ""},
    )
    assert done.returncode == 0, done.stderr
    split = PreparedSplit.load(done.stdout.strip().splitlines()[-1])
    assert split.manifest["config"]["data"]["snapshot"]["window"] == ["2026-12-04", "2026-12-06"]
    assert split.manifest["source"] == f"lake:{tmp_path / 'lake'}"
    missing = subprocess.run(
        [sys.executable, "-m", "recstack.cli.data", "prepare", "data=lake", f"data.source.path={tmp_path / 'nope'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and "no event lake at" in missing.stderr and "Traceback" not in missing.stderr
