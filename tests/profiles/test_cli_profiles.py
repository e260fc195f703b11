"""``recstack-profiles build|check`` end to end on a fixture lake: the outputs, the summary, Redis, the merge applied
by the next build, and one-line errors for bad input."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from datetime import timedelta as td
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from profiles_support import AS_OF, LakeBuilder

from recstack.cli.profiles import main
from recstack.profiles.online import read_profile

ARGS = ["as_of=" + AS_OF.isoformat(), "impute.age_band=mode"]


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code), out, err


def fixture_lake(builder: LakeBuilder) -> None:
    builder.event("a", "view", td(days=3), item="i1")
    builder.event("a", "profile", td(days=3), age_band="25-34", identity_hash="1" * 32)
    builder.event("b", "view", td(hours=2), item="i3")
    builder.event("b", "profile", td(hours=2), identity_hash="1" * 32)  # a's second account
    builder.event("c", "view", td(hours=1), item="i6")
    builder.write()


@pytest.mark.redis
def test_build_writes_outputs_loads_redis_and_the_next_build_merges(
    lake_builder: LakeBuilder, tmp_path: Path, names, redis_client, capsys, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="recstack.profiles")
    fixture_lake(lake_builder)
    out = tmp_path / "out"
    argv = [
        "build",
        f"lake={lake_builder.root}",
        f"items_path={lake_builder.items_path}",
        f"out={out}",
        f"collector.stream={names.stream}",
        *ARGS,
    ]
    code, stdout, stderr = run_main(capsys, *argv)
    assert code == 0, stderr
    assert "[1/6] load events" in caplog.text and "[6/6] load Redis" in caplog.text  # progress, on stderr
    assert "3 users from 5 events" in stdout and "duplicates: 1 found, 1 merged" in stdout
    profiles = pq.read_table(out / "profiles.parquet")
    assert sorted(profiles["user_id"].to_pylist()) == ["a", "b", "c"]
    assert profiles.column("age_band_imputed").to_pylist().count(True) == 2  # b and c: the mode, 25-34
    quality = json.loads((out / "quality.json").read_text())
    assert quality["users"] == 3 and quality["imputation"]["age_band"]["imputed"] == 2
    assert quality["duplicates"]["merged"] == 1
    assert pq.read_table(out / "anomalies.parquet").num_rows == 0
    assert read_profile(redis_client, names, "c")["top_categories"] == ["Horror"]

    code, stdout, stderr = run_main(capsys, *argv)  # the next build: b is a's
    assert code == 0, stderr
    assert sorted(pq.read_table(out / "profiles.parquet")["user_id"].to_pylist()) == ["a", "c"]
    assert "duplicates: 0 found" in stdout
    assert read_profile(redis_client, names, "a")["n_view_7d"] == 2


def test_check_writes_no_profiles_and_touches_no_redis(lake_builder: LakeBuilder, tmp_path: Path, capsys) -> None:
    fixture_lake(lake_builder)
    out = tmp_path / "out"
    # an unreachable Redis would fail a build; check never connects
    code, stdout, stderr = run_main(
        capsys, "check", f"lake={lake_builder.root}", f"out={out}", "collector.redis_url=redis://127.0.0.1:1/0", *ARGS
    )
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["anomalies.parquet", "quality.json"]
    assert "recstack-profiles check" in stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("impute.gender=guess", r"impute\.gender: unknown strategy 'guess'; the strategies are \['mode', 'median'"),
        ("as_of=yesterday", r"as_of='yesterday': give an ISO time"),
        ("session_gap_min=0", r"session_gap_min=0: give a positive number"),
        ("anomalies.site_z=-1", r"anomalies\.site_z=-1: give a positive number"),
        ("+weights.teleport=1", r"weights\.teleport: unknown event type"),
    ],
)
def test_bad_settings_are_one_line_errors(lake_builder: LakeBuilder, capsys, override: str, message: str) -> None:
    fixture_lake(lake_builder)
    code, _, stderr = run_main(capsys, "check", f"lake={lake_builder.root}", *ARGS, override)
    assert code == 2
    assert stderr.startswith("recstack-profiles check: error: ") and len(stderr.strip().splitlines()) == 1
    assert re.search(message, stderr), stderr


def test_no_lake_is_a_clear_error(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("recstack-profiles")
    done = subprocess.run(
        [str(script), "build", f"lake={tmp_path / 'missing'}", f"out={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert f"recstack-profiles build: error: no event lake at {tmp_path / 'missing'}" in done.stderr
    assert not (tmp_path / "out").exists()


def history_lake(builder: LakeBuilder) -> None:
    builder.event("a", "view", td(days=20), item="i1")  # before a 10-day history
    builder.event("a", "click", td(days=3), item="i3")
    builder.event("a", "view", td(hours=1), item="i3")
    builder.event("b", "purchase", td(days=40), item="i4")  # b: nothing in the last 10 days
    builder.event("b", "profile", td(days=40), age_band="35-44")
    builder.event("c", "view", td(days=2), item="i6")
    builder.write()


def build_rows(capsys, builder: LakeBuilder, out: Path, *overrides: str) -> tuple[str, dict[str, dict]]:
    code, stdout, stderr = run_main(
        capsys,
        "build",
        f"lake={builder.root}",
        f"items_path={builder.items_path}",
        f"out={out}",
        "redis.load=false",
        *ARGS,
        *overrides,
    )
    assert code == 0, stderr
    return stdout, {row["user_id"]: row for row in pq.read_table(out / "profiles.parquet").to_pylist()}


def test_history_days_loads_only_the_last_days(lake_builder: LakeBuilder, tmp_path: Path, capsys) -> None:
    """``history_days=10``: the events older than 10 days are not loaded, so they count nowhere (first_seen_ms is the
    first event of the history); a profile stated before it still describes its user (attributes read all history)."""
    history_lake(lake_builder)
    day, as_of_ms = 86_400_000, int(AS_OF.timestamp() * 1000)
    whole_out, whole = build_rows(capsys, lake_builder, tmp_path / "whole", "history_days=null")
    recent_out, recent = build_rows(capsys, lake_builder, tmp_path / "recent", "history_days=10")
    assert "3 users from 6 events" in whole_out and "3 users from 3 events" in recent_out
    a_whole, a_recent = whole["a"], recent["a"]
    assert (a_whole["first_seen_ms"], a_recent["first_seen_ms"]) == (as_of_ms - 20 * day, as_of_ms - 3 * day)
    changed = {k for k in a_whole if a_whole[k] != a_recent[k]}
    assert changed == {
        "n_view_30d",
        "n_view_90d",
        "n_events_30d",
        "n_events_90d",
        "first_seen_ms",
        "frequency",
        "sessions_30d",
        "sessions_90d",
        "pref_implicit",  # the 20-day-old view of i1 (Sci-Fi, Action) is gone
        "top_categories",
        "hour_of_day",
    }, changed
    assert (a_whole["n_events_30d"], a_recent["n_events_30d"]) == (3, 2)
    assert (a_whole["n_view_90d"], a_recent["n_view_90d"]) == (2, 1)
    assert (a_whole["frequency"], a_recent["frequency"]) == (3, 2)
    assert (a_whole["sessions_90d"], a_recent["sessions_90d"]) == (3, 2)
    assert sum(a_whole["hour_of_day"]) == 3 and sum(a_recent["hour_of_day"]) == 2
    assert [c for c, _ in a_recent["pref_implicit"]] == ["Comedy"] and a_recent["top_categories"] == ["Comedy"]
    # b: only older events, and a profile: still a row, with nothing counted
    b = recent["b"]
    assert (whole["b"]["n_events_90d"], whole["b"]["first_seen_ms"]) == (2, as_of_ms - 40 * day)
    assert b["n_events_90d"] == b["n_purchase_90d"] == b["sessions_90d"] == b["frequency"] == 0
    assert b["first_seen_ms"] is None and b["last_seen_ms"] is None and b["pref_implicit"] == []
    assert b["age_band"] == "35-44" and not b["age_band_imputed"]
    assert recent["c"] == whole["c"]  # everything of c's is inside the history


@pytest.mark.parametrize(("value", "shown"), [("0", "0"), ("-1", "-1"), ("true", "True"), ("x", "'x'"), ("1.5", "1.5")])
def test_bad_history_days_is_a_one_line_error(
    lake_builder: LakeBuilder, tmp_path: Path, capsys, value: str, shown: str
) -> None:
    fixture_lake(lake_builder)
    out = tmp_path / "out"
    code, _, stderr = run_main(
        capsys, "build", f"lake={lake_builder.root}", f"out={out}", "redis.load=false", *ARGS, f"history_days={value}"
    )
    assert code == 2
    assert stderr.strip().splitlines() == [
        f"recstack-profiles build: error: history_days={shown}: give whole days >= 1, or null for the whole lake"
    ]
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize(("history_days", "warned"), [(10, True), (91, False)])
def test_history_shorter_than_the_segments_horizon_is_a_warning(
    lake_builder: LakeBuilder, tmp_path: Path, capsys, caplog, history_days: int, warned: bool
) -> None:
    """The segments then load their own events (90 days by default): the same membership, one more read."""
    caplog.set_level(logging.INFO, logger="recstack.profiles")
    history_lake(lake_builder)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("buyers: {count: {event: purchase, within: 90d}, gte: 1}\n")
    stdout, _ = build_rows(
        capsys,
        lake_builder,
        tmp_path / "out",
        f"history_days={history_days}",
        "segments.run=true",
        f"segments.overrides=['rules={rules}','out={tmp_path / 'segments'}','publish=false','registry=false']",
    )
    warning = "history_days is shorter than the segments' horizon_days: the segments load their own events"
    assert (warning in caplog.text) is warned
    assert "segments: 1 evaluated" in stdout
    members = pq.read_table(tmp_path / "segments" / "membership.parquet")
    assert members["user_id"].to_pylist() == ["b"]  # b's purchase 40 days ago counts either way
