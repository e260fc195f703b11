"""``recstack-monitor`` end to end on fixture lakes: outputs, the summary, the exit status on an alert, zero traffic,
and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from monitor_support import DAY, MIN, LakeBuilder, day

from recstack.cli.monitor import main
from recstack.monitoring.alerts import ALERT_EXIT_CODE

SMALL = ["alerts.min_eligible=10", "alerts.min_impressions=10", "catalogue_size=100", "ab.samples=200"]


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code), out, err


def week_then_a_bad_day(builder: LakeBuilder) -> None:
    """20 users a day for 8 days (days -7..0), two arms; each list's first item is what the user clicks and rates
    afterwards, except on day 0, when nobody clicks and every user rates something the list did not show: online
    MAP@10 falls from 1 to 0."""
    for d in range(-7, 1):
        for i in range(20):
            user, arm = f"u{i}", "a" if i % 2 else "b"
            items = [f"{user}-x", f"{user}-y", f"{user}-z"]
            at = d * DAY + 600 * MIN + i * MIN
            builder.impression(f"r{d}-{i}", user, items, at, experiment="exp", arm=arm, bundle=f"{arm}@1")
            if d < 0:
                builder.event(user, items[0], "click", at + 1 * MIN, request_id=f"r{d}-{i}")
            builder.event(user, items[0] if d < 0 else f"{user}-other", "rating", at + 2 * MIN)
    builder.event("u0", "u0-x", "view", 2 * DAY + 60 * MIN)  # collection has passed day 0's outcome window
    builder.write()


def test_alert_exits_3_and_writes_every_output(builder: LakeBuilder, tmp_path: Path, capsys) -> None:
    week_then_a_bad_day(builder)
    segments = tmp_path / "membership.csv"
    pd.DataFrame({"user_id": ["u0", "u1", "u2"], "segment": ["vip", "vip", "new"]}).to_csv(segments, index=False)
    out = tmp_path / "out"
    code, stdout, stderr = run_main(
        capsys, f"lake={builder.root}", f"out={out}", f"day={day(0)}", "days=8", f"segment_set={segments}", *SMALL
    )
    assert code == ALERT_EXIT_CODE, stderr
    assert "ALERT (metric_drop): map@10 of a@1 [exp/a] fell to 0.0000" in stdout
    assert "A/B exp: b vs a on ctr@10" in stdout and "A/B exp: b vs a on map@10" in stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["day"] == day(0).isoformat() and summary["outcome_complete"] is True
    assert {a["kind"] for a in summary["alerts"]} == {"metric_drop"} and len(summary["alerts"]) == 2
    assert summary["earlier_alerts"] == []
    assert {r["arm"]: r["ctr@10"] for r in summary["day_metrics"]} == {"a": 0.0, "b": 0.0}

    daily = pd.read_parquet(out / "daily.parquet")
    assert set(daily["day"]) == {day(d).isoformat() for d in range(-7, 1)}
    assert set(daily["segment"]) == {"(all users)", "vip", "new"}
    before = daily[(daily["day"] == day(-1).isoformat()) & (daily["segment"] == "(all users)")]
    assert list(before["map@10"]) == [1.0, 1.0]

    html = (out / "report.html").read_text()
    assert html.count("<svg") == 1 and "online MAP@10" in html and "class='alert'" in html
    assert "per segment" in html and "A/B experiments" in html

    prom = (out / "metrics.prom").read_text()
    assert 'recstack_monitor_alerts{kind="metric_drop"} 2.0' in prom
    assert 'recstack_online_map{arm="a",bundle="a@1",experiment="exp",k="10"} 0.0' in prom
    assert 'recstack_online_impressions{arm="b",bundle="b@1",experiment="exp"} 10.0' in prom
    assert pd.read_parquet(out / "drift.parquet")["distribution"].isin(["scores", "popularity"]).all()


def test_a_good_day_exits_0(builder: LakeBuilder, tmp_path: Path, capsys) -> None:
    week_then_a_bad_day(builder)
    code, stdout, stderr = run_main(
        capsys, f"lake={builder.root}", f"out={tmp_path / 'out'}", f"day={day(-1)}", "days=7", "report=false", *SMALL
    )
    assert code == 0, stderr
    assert "alerts: none" in stdout
    assert not (tmp_path / "out" / "report.html").exists()


def test_a_day_without_impressions_reports_zero_traffic(builder: LakeBuilder, tmp_path: Path, capsys) -> None:
    week_then_a_bad_day(builder)
    code, stdout, _ = run_main(
        capsys, f"lake={builder.root}", f"out={tmp_path / 'out'}", f"day={day(3)}", "days=2", "report=false", *SMALL
    )
    assert code == 0
    assert f"{day(3)}: zero traffic (no impressions)" in stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["traffic"] == {day(2).isoformat(): 0, day(3).isoformat(): 0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lake={tmp}/nowhere"], "no event lake at"),
        (["lake={tmp}"], "holds no impressions"),
        (["lake={lake}", "day=yesterday"], "is not a date"),
        (["lake={lake}", "alerts.max_drop=2"], "alerts.max_drop=2"),
        (["lake={lake}", "metrics.ks=[5]"], "needs K=10 among ks=[5]"),
        (["lake={lake}", "segment_set={tmp}/none.csv"], "does not exist"),
    ],
)
def test_bad_input_is_one_error_line(builder: LakeBuilder, tmp_path: Path, capsys, args, message) -> None:
    builder.impression("r1", "u1", ["a"], 0 * MIN)
    builder.write()
    empty = tmp_path / "empty"
    empty.mkdir()
    filled = [a.format(tmp=empty, lake=builder.root) for a in args]
    code, _, stderr = run_main(capsys, *filled, f"out={tmp_path / 'out'}")
    assert code == 2
    assert stderr.strip().splitlines()[-1].startswith("recstack-monitor: error: ")
    assert message in stderr
    assert "Traceback" not in stderr
