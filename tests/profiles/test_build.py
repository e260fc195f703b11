"""Profiles over a tiny lake with hand-computed answers: windows at the hour boundary, sessions and bounce rate, decayed
and normalised category preferences, explicit maps, latest demographics of all history, device and hours."""

from __future__ import annotations

from datetime import timedelta as td

import duckdb
import pyarrow.parquet as pq
import pytest
from profiles_support import AS_OF_MS, LakeBuilder

from recstack.profiles.build import ProfileSpec, build_profiles, profile_schema
from recstack.profiles.profile_surveys import load_survey_answers
from recstack.profiles.source import load_attributes, load_catalogue, load_events


def profiles_of(builder: LakeBuilder, spec: ProfileSpec | None = None, attributes: bool = True) -> dict[str, dict]:
    builder.write()
    con = duckdb.connect()
    load_events(con, builder.root, 0, AS_OF_MS + 1)
    load_catalogue(con, builder.items_path)
    if attributes:
        load_attributes(con, builder.root, AS_OF_MS)
    load_survey_answers(con, builder.root)
    table = build_profiles(con, AS_OF_MS, spec)
    assert table.schema.equals(profile_schema())
    con.close()
    return {row["user_id"]: row for row in table.to_pylist()}


def test_windows_are_whole_hours_ending_with_the_hour_of_as_of(lake_builder: LakeBuilder) -> None:
    # AS_OF is 12:30, so 7d = buckets from 13:00 seven days back (6 d 23.5 h before) up to 12:59:59.999 today
    lake_builder.event("u", "view", td(days=6, hours=23, minutes=30), item="i1")  # first instant of the window
    lake_builder.event("u", "view", td(days=6, hours=23, minutes=30, milliseconds=1), item="i1")  # just before it
    lake_builder.event("u", "click", td(days=29), item="i1")
    lake_builder.event("u", "purchase", td(days=89, hours=23), item="i2")
    lake_builder.event("u", "purchase", td(days=95), item="i2")  # outside every window, but first seen
    p = profiles_of(lake_builder)["u"]
    assert (p["n_view_7d"], p["n_view_30d"], p["n_view_90d"]) == (1, 2, 2)
    assert (p["n_click_7d"], p["n_click_30d"], p["n_purchase_90d"]) == (0, 1, 1)
    assert (p["n_events_7d"], p["n_events_30d"], p["n_events_90d"]) == (1, 3, 4)
    assert p["first_seen_ms"] == AS_OF_MS - 95 * 86_400_000
    assert p["last_seen_ms"] == AS_OF_MS - (6 * 24 + 23) * 3_600_000 - 30 * 60_000
    assert p["recency_days"] == pytest.approx(6 + 23.5 / 24)
    assert p["frequency"] == 2  # two active UTC days in the last 30 (the 95-day-old one is outside)


def test_sessions_split_after_more_than_the_gap(lake_builder: LakeBuilder) -> None:
    for before in (
        td(hours=3),
        td(hours=2, minutes=50),  # 10 min later: same session (600 s long)
        td(hours=2, minutes=10),  # 40 min later: a new one, alone (a bounce)
        td(hours=1),  # 70 min later: a new one
        td(minutes=30),  # exactly 30 min later: still the same session (1800 s long)
    ):
        lake_builder.event("u", "view", before, item="i3")
    lake_builder.event("u", "dwell", td(minutes=30), item="i3", value=1500.0)
    lake_builder.event("u", "dwell", td(days=40), item="i3", value=700.0)  # a session 40 days ago: only in 90d
    p = profiles_of(lake_builder)["u"]
    assert (p["sessions_30d"], p["sessions_90d"]) == (3, 4)
    assert p["bounce_rate"] == pytest.approx(2 / 4)  # the lone view and the lone old dwell
    assert p["mean_session_s"] == pytest.approx((600 + 0 + 1800 + 0) / 4)
    assert p["dwell_total_ms"] == 2200.0


def test_implicit_preferences_decay_by_half_life_and_sum_to_one(lake_builder: LakeBuilder) -> None:
    lake_builder.event("u", "view", td(0), item="i3")  # Comedy, weight 1
    lake_builder.event("u", "view", td(days=14), item="i4")  # Drama, one half-life old: 0.5
    lake_builder.event("u", "click", td(days=28), item="i6")  # Horror, weight 2, two half-lives: 0.5
    lake_builder.event("u", "rating", td(0), item="i1", value=8.0)  # explicit: not implicit
    lake_builder.event("u", "preference", td(0), category="Sci-Fi", value=1.0)  # explicit too
    p = profiles_of(lake_builder, ProfileSpec(half_life_days=14.0, top_k=2))["u"]
    scores = dict(p["pref_implicit"])
    assert scores == pytest.approx({"Comedy": 0.5, "Drama": 0.25, "Horror": 0.25})
    assert p["top_categories"] == ["Comedy", "Drama"]  # ties: alphabetical


def test_stated_category_counts_once_beside_the_items(lake_builder: LakeBuilder) -> None:
    lake_builder.event("u", "view", td(0), item="i2", category="Sci-Fi")  # the item's own category: once
    lake_builder.event("u", "view", td(0), item="i2", category="Drama")  # another: added
    p = profiles_of(lake_builder)["u"]
    assert dict(p["pref_implicit"]) == pytest.approx({"Sci-Fi": 2 / 3, "Drama": 1 / 3})


def test_explicit_ratings_stated_preferences_and_surveys(lake_builder: LakeBuilder) -> None:
    lake_builder.event("u", "rating", td(days=2), item="i1", value=8.0)  # Sci-Fi, Action
    lake_builder.event("u", "rating", td(days=1), item="i2", value=6.0)  # Sci-Fi
    lake_builder.event("u", "preference", td(days=3), category="Horror", value=0.5)
    lake_builder.event("u", "preference", td(days=1), category="Horror", value=-1.0)  # the latest wins
    lake_builder.event("u", "survey", td(days=2), question_id="q1", answer="a")
    lake_builder.event("u", "survey", td(days=1), question_id="q1", answer="b")
    lake_builder.event("u", "survey", td(days=1), question_id="q2", answer="yes")
    p = profiles_of(lake_builder)["u"]
    assert dict(p["rating_by_category"]) == {"Action": 8.0, "Sci-Fi": 7.0}
    assert dict(p["stated_preferences"]) == {"Horror": -1.0}
    assert dict(p["survey_answers"]) == {"q1": "b", "q2": "yes"}


@pytest.mark.parametrize("attributes", [True, False], ids=["attributes table", "from events"])
def test_latest_non_null_demographics(lake_builder: LakeBuilder, attributes: bool) -> None:
    lake_builder.event("u", "profile", td(days=80), age_band="25-34", country="FR")
    lake_builder.event("u", "profile", td(days=10), age_band="35-44")
    lake_builder.event("u", "profile", td(days=5), gender="female")  # no age_band: the last stated one stays
    lake_builder.event("quiet", "profile", td(days=60), language="fr")
    p = profiles_of(lake_builder, attributes=attributes)
    assert (p["u"]["age_band"], p["u"]["gender"], p["u"]["country"], p["u"]["language"]) == (
        "35-44",
        "female",
        "FR",
        None,
    )
    assert p["quiet"]["language"] == "fr"


def test_profile_stated_before_the_history_still_counts(lake_builder: LakeBuilder) -> None:
    lake_builder.event("u", "profile", td(days=400), age_band="18-24")  # older than any window
    lake_builder.event("u", "view", td(days=1), item="i1")
    lake_builder.write()
    con = duckdb.connect()
    load_events(con, lake_builder.root, AS_OF_MS - 90 * 86_400_000, AS_OF_MS + 1)
    load_catalogue(con, lake_builder.items_path)
    load_attributes(con, lake_builder.root, AS_OF_MS)
    (row,) = build_profiles(con, AS_OF_MS).to_pylist()
    assert row["age_band"] == "18-24" and row["n_view_7d"] == 1


def test_device_and_hour_of_day(lake_builder: LakeBuilder) -> None:
    for k in range(3):
        lake_builder.event("u", "view", td(hours=k), item="i1", device_class="mobile", local_hour=21)
    for k in range(2):
        lake_builder.event("u", "view", td(days=1, hours=k), item="i1", device_class="desktop")  # UTC hour used
    p = profiles_of(lake_builder)["u"]
    assert p["device_class"] == "mobile"
    hours = p["hour_of_day"]
    assert len(hours) == 24 and hours[21] == 3 and hours[12] == 1 and hours[11] == 1 and sum(hours) == 5


def test_bots_and_events_after_as_of_are_left_out(lake_builder: LakeBuilder) -> None:
    lake_builder.event("crawler", "view", td(hours=1), item="i1", device_class="bot")
    lake_builder.event("u", "view", td(hours=1), item="i1")
    lake_builder.event("u", "view", -td(minutes=5), item="i1")  # after as_of
    p = profiles_of(lake_builder)
    assert set(p) == {"u"} and p["u"]["n_view_7d"] == 1


def test_parquet_round_trip_keeps_maps_and_lists(lake_builder: LakeBuilder, tmp_path) -> None:
    lake_builder.event("u", "view", td(0), item="i1")
    lake_builder.write()
    con = duckdb.connect()
    load_events(con, lake_builder.root, 0, AS_OF_MS + 1)
    load_catalogue(con, lake_builder.items_path)
    table = build_profiles(con, AS_OF_MS)
    pq.write_table(table, tmp_path / "p.parquet")
    assert pq.read_table(tmp_path / "p.parquet").equals(table)


def test_bad_spec_is_refused() -> None:
    with pytest.raises(ValueError, match=r"weights\.teleport: unknown event type"):
        ProfileSpec(weights={"teleport": 1.0})
    with pytest.raises(ValueError, match="half_life_days"):
        ProfileSpec(half_life_days=0)
