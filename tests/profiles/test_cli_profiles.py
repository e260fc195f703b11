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
