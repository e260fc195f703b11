"""Erasure and purge on a real lake of Parquet files: exactly the subject's rows go, in every partition, atomically per
file, with an audit row; purge deletes whole expired days and never the audit table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recstack.collect.consumer import write_rejected
from recstack.collect.lake_admin import erase, linked_visitors, purge
from recstack.data import lake

ALICE, BOB, VISITOR = "a" * 32, "b" * 32, "c" * 32
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def event(event_id: str, user: str, when: datetime) -> dict:
    return {
        "event_id": event_id,
        "user_id": user,
        "anonymous": user == VISITOR,
        "event_type": "view",
        "received_ts": ms(when),
        "source": "api",
    }


def write_lake(root: Path) -> None:
    days = [NOW - timedelta(days=d, hours=h) for d in (0, 1, 400) for h in (0, 5)]
    for n, when in enumerate(days):
        lake.write_rows(root, "events", [event(f"a{n}", ALICE, when), event(f"b{n}", BOB, when)], name=f"mixed{n}")
    lake.write_rows(root, "events", [event("v1", VISITOR, days[0]), event("a-only", ALICE, days[2])], name="solo")
    aliases = [
        {"anonymous_id": VISITOR, "user_id": ALICE, "received_ts": ms(days[0])},
        {"anonymous_id": "d" * 32, "user_id": BOB, "received_ts": ms(days[0])},
    ]
    lake.write_rows(root, "aliases", aliases)


def test_erase_removes_exactly_the_subjects_rows_everywhere(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    write_lake(root)
    write_rejected(root, "5-0", {b"t": b"events", b"r": f'[{{"user_id":"{ALICE}"'.encode()}, "JSONDecodeError")
    write_rejected(root, "6-0", {b"t": b"events", b"r": f'[{{"user_id":"{BOB}"'.encode()}, "JSONDecodeError")
    before = lake.read_table(root, "events")
    files_before = set(lake.parts(root, "events"))

    assert linked_visitors(root, {ALICE}) == {VISITOR}
    report = erase(root, {ALICE, VISITOR}, now=NOW)

    after = lake.read_table(root, "events")
    assert set(after["user_id"].to_pylist()) == {BOB}
    assert after.num_rows == before.num_rows - 8  # 6 mixed + a-only + v1
    assert sorted(after["event_id"].to_pylist()) == sorted(f"b{n}" for n in range(6))
    assert lake.read_table(root, "aliases").to_pylist()[0]["user_id"] == BOB
    assert lake.read_table(root, "aliases").num_rows == 1
    # files keep their names; the two (hours) holding only the subjects' rows are gone
    assert set(lake.parts(root, "events")) == {p for p in files_before if "solo" not in p.name}
    assert not list(root.rglob("*.tmp"))
    assert report.rows_removed == 9 and report.files_deleted == 2 and report.rejected_deleted == 1
    assert sorted(p.name for p in (root / "_rejected").iterdir()) == ["6-0.json"]
    audit = lake.read_table(root, "audit").to_pylist()
    assert sorted(row["subject"] for row in audit) == [ALICE, VISITOR]
    assert {row["action"] for row in audit} == {"erasure"}
    alice = next(row for row in audit if row["subject"] == ALICE)
    touched = json.loads(alice["detail"])
    assert len([p for p in touched if p.startswith("events/")]) == 6 and "aliases/dt=2026-12-06/hour=12" in touched
    assert alice["received_ts"] == NOW


def test_erasing_a_subject_with_no_rows_still_records_it(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    write_lake(root)
    report = erase(root, {"e" * 32}, now=NOW)
    assert report.rows_removed == 0 and report.partitions == {"e" * 32: []}
    assert lake.read_table(root, "events").num_rows == 14
    assert lake.read_table(root, "audit")["detail"].to_pylist() == ["[]"]
    with pytest.raises(ValueError, match="32 lowercase hex"):
        erase(root, {"alice"})


def test_purge_deletes_whole_expired_days_only(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    write_lake(root)
    lake.write_rows(root, "audit", [{"action": "consent", "subject": ALICE, "received_ts": ms(NOW - timedelta(400))}])
    write_rejected(root, f"{ms(NOW - timedelta(days=400))}-0", {b"t": b"x"}, "old")
    write_rejected(root, f"{ms(NOW)}-0", {b"t": b"x"}, "new")

    report = purge(root, 395, now=NOW)

    events = lake.read_table(root, "events")
    assert events.num_rows == 10  # the 400-day-old partition's 4 rows are gone
    assert min(events["received_ts"].to_pylist()) >= NOW - timedelta(days=2)
    assert report.partitions == ["events/dt=2025-11-01"] and report.cutoff == "2025-11-06"
    assert report.rejected_deleted == 1 and len(list((root / "_rejected").iterdir())) == 1
    audit = lake.read_table(root, "audit").to_pylist()
    assert {row["action"] for row in audit} == {"consent", "purge"}  # the old audit row stays
    assert json.loads(next(r for r in audit if r["action"] == "purge")["detail"]) == ["events/dt=2025-11-01"]
    assert not [p for p in (root / "events").iterdir() if p.name.startswith(".")]
    assert purge(root, 395, now=NOW).partitions == []  # nothing left to purge: no second audit row
    assert len(lake.read_table(root, "audit")) == 2


def test_linked_visitors_follows_merged_accounts_to_their_visitors(tmp_path: Path) -> None:
    """Erasing a canonical account reaches a duplicate account merged into it and the visitor linked to that one."""
    root = tmp_path / "lake"
    duplicate, visitor = "e" * 32, "f" * 32
    lake.write_rows(
        root,
        "aliases",
        [
            {"anonymous_id": duplicate, "user_id": ALICE, "received_ts": ms(NOW), "stream_id": "profiles:merge"},
            {"anonymous_id": visitor, "user_id": duplicate, "received_ts": ms(NOW)},
            {"anonymous_id": "d" * 32, "user_id": BOB, "received_ts": ms(NOW)},
        ],
    )
    assert linked_visitors(root, {ALICE}) == {duplicate, visitor}
    assert linked_visitors(root, {duplicate}) == {visitor}
