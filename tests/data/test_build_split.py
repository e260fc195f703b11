"""prepare() of a SplitSpec: the folder layout and manifest, reuse by config hash, atomic writes, races, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from handmade import write_events_csv

from recstack.config import compose, prepare_from_config, prepare_named, split_spec
from recstack.data.build_split import SplitSpec, _install, _Steps, config_hash, prepare, split_root
from recstack.data.prepared import SPLIT_FILES, PreparedSplit, is_complete
from recstack.data.schema import DataError

HERE = Path(__file__).parent


@pytest.fixture
def events_csv(tmp_path: Path) -> Path:
    return write_events_csv(tmp_path / "events.csv")


def events_cfg(csv: Path, *overrides: str) -> SplitSpec:
    return split_spec(compose("prepare", ["data=events", f"data.source.path={csv}", *overrides]))


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_prepare_writes_the_layout_and_manifest(events_csv: Path, tmp_path: Path) -> None:
    split = prepare(events_cfg(events_csv), out_root=tmp_path / "out", progress=False)
    assert split.root.parent == tmp_path / "out" / "events"
    assert all((split.root / f).is_file() for f in SPLIT_FILES)
    m = split.manifest
    assert m["dataset"] == "events" and m["config_hash"] == split.root.name
    assert (m["n_users"], m["n_items"]) == (40, 30)
    assert m["counts"] == {"train": len(split.train), "valid": len(split.valid), "test": len(split.test)}
    assert sum(m["counts"].values()) == m["n_interactions"] == 480
    assert 0 < m["sparsity"] < 1
    assert m["config"]["split"]["name"] == "random" and m["config"]["data"]["source"]["path"] == str(events_csv)
    assert m["source_files"][0]["bytes"] == events_csv.stat().st_size
    assert {"load", "split", "total"} <= set(m["timing_s"]) and m["created_at"]
    assert split.train["event_type"].eq("click").all()
    assert leftovers(split.root.parent) == []


def test_same_config_reuses_the_folder(events_csv: Path, tmp_path: Path) -> None:
    cfg = events_cfg(events_csv)
    first = prepare(cfg, out_root=tmp_path, progress=False)
    stamp = (first.root / "manifest.json").stat().st_mtime_ns
    again = prepare(events_cfg(events_csv), out_root=tmp_path, progress=False)
    assert again.root == first.root and (again.root / "manifest.json").stat().st_mtime_ns == stamp
    forced = prepare(cfg, out_root=tmp_path, force=True, progress=False)
    assert forced.root == first.root and (forced.root / "manifest.json").stat().st_mtime_ns != stamp
    assert forced.train.equals(first.train)
    assert leftovers(first.root.parent) == []


def test_hash_follows_content_not_location(events_csv: Path) -> None:
    base = split_root(events_cfg(events_csv), "x")
    assert split_root(events_cfg(events_csv, "split.seed=1"), "x") != base
    assert split_root(events_cfg(events_csv, "data.clean.implicit_threshold=3"), "x") != base
    assert split_root(events_cfg(events_csv, "split=loo"), "x") != base
    assert split_root(events_cfg(events_csv, "data.source.data_home=/elsewhere"), "x") == base
    assert config_hash({"a": 1, "b": [1, 2]}, {"s": 1}) == config_hash({"b": [1, 2], "a": 1}, {"s": 1})


def test_processed_root_comes_from_the_config(events_csv: Path, tmp_path: Path) -> None:
    cfg = compose("prepare", ["data=events", f"data.source.path={events_csv}", f"processed_root={tmp_path / 'p'}"])
    split = prepare_from_config(cfg, progress=False)
    assert split.root.parent.parent == tmp_path / "p"


def test_typed_spec_keeps_the_folder_hash_of_the_config() -> None:
    # The hash names a split in READMEs and run folders: the typed spec must not change it (ML-100K, random 80/10/10).
    spec = split_spec(compose("prepare", ["data=ml100k", "split=random"]))
    assert spec.config_hash == "f7b18edcd4a8"
    assert (spec.name, spec.split.ratios, spec.clean.dedup) == ("ml-100k", (0.8, 0.1, 0.1), True)


def test_crash_while_writing_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    cfg = split_spec(compose("prepare", ["data=synthetic", "data.source._target_=handmade.broken_items_source"]))
    target = split_root(cfg, tmp_path)
    with pytest.raises(Exception, match="Conversion failed for column odd"):
        prepare(cfg, out_root=tmp_path, progress=False)
    assert not target.exists()
    assert leftovers(target.parent) == []  # the temporary folder is gone too


def test_losing_a_race_keeps_the_winners_folder(events_csv: Path, tmp_path: Path) -> None:
    winner = prepare(events_cfg(events_csv), out_root=tmp_path, progress=False)
    stamp = (winner.root / "manifest.json").stat().st_mtime_ns
    late = tmp_path / "late"
    late.mkdir()
    (late / "half-written").write_text("x")
    _install(late, winner.root, replace=False)
    assert not late.exists() and is_complete(winner.root)
    assert (winner.root / "manifest.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_two_processes_racing_both_get_a_complete_folder(tmp_path: Path) -> None:
    csv = write_events_csv(tmp_path / "events.csv", n_users=3000, n_items=500, per_user=20)
    code = (
        "import sys; from recstack.config import prepare_named; "
        "s = prepare_named('events', overrides=[f'data.source.path={sys.argv[1]}'], out_root=sys.argv[2]); "
        "print(s.root)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(csv), str(tmp_path / "out")], stdout=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    roots = [p.communicate(timeout=120)[0].decode().strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert roots[0] == roots[1]
    split = PreparedSplit.load(roots[0])
    assert split.manifest["n_interactions"] == 60_000
    assert leftovers(Path(roots[0]).parent) == []


def test_filter_that_empties_the_data_is_named(events_csv: Path, tmp_path: Path) -> None:
    cfg = events_cfg(events_csv, "data.clean.min_user_interactions=1000")
    with pytest.raises(DataError, match="min_user_interactions=1000 removed every user"):
        prepare(cfg, out_root=tmp_path, progress=False)
    assert not (tmp_path / "events").exists() or leftovers(tmp_path / "events") == []


def test_bad_split_config_is_a_clear_error(events_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"split.ratios=\[0.0, 0.5, 0.5\]"):
        prepare(events_cfg(events_csv, "split.ratios=[0,0.5,0.5]"), out_root=tmp_path, progress=False)


@pytest.mark.parametrize("split", ["random", "chrono", "loo", "time"])
def test_prepare_named_every_split(split: str, events_csv: Path, tmp_path: Path) -> None:
    s = prepare_named("events", split, overrides=[f"data.source.path={events_csv}"], out_root=tmp_path)
    assert s.manifest["config"]["split"]["name"] == split
    assert len(s.train) > len(s.test) > 0
    manifest = json.loads((s.root / "manifest.json").read_text())
    assert manifest["n_users"] == s.n_users == len(s.users)


def test_returned_split_equals_what_load_reads(events_csv: Path, tmp_path: Path) -> None:
    fresh = prepare(events_cfg(events_csv), out_root=tmp_path, progress=False)
    loaded = PreparedSplit.load(fresh.root)
    assert fresh.manifest == loaded.manifest
    for name in ("train", "valid", "test", "items", "users"):
        pd.testing.assert_frame_equal(getattr(fresh, name), getattr(loaded, name))


def test_progress_bar_over_steps(capsys: pytest.CaptureFixture[str]) -> None:
    steps = _Steps(total=2)
    with steps.step("one"):
        pass
    steps.show_bar()
    with steps.step("two"):
        pass
    steps.close()
    assert set(steps.timing) == {"one", "two"}
    assert "prepare" in capsys.readouterr().err
