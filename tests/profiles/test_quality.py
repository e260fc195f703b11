"""Data quality on tiny lakes: imputation by each strategy (flagged; the model validated beside the majority class),
an obvious bot, a user's spike and a site-wide spike and drop flagged, duplicate accounts merged through the aliases
table so that the rebuilt profile is one; and the e-mail turned into an identity hash at the door, never stored."""

from __future__ import annotations

from datetime import timedelta as td

import duckdb
import pyarrow as pa
import pytest
from profiles_support import AS_OF_MS, LakeBuilder

from recstack.collect.events import BadEvent, parse_events
from recstack.collect.intake import normalise_email
from recstack.collect.pseudonymise import Pseudonymiser
from recstack.data import lake
from recstack.profiles.build import DEMOGRAPHICS, build_profiles
from recstack.profiles.quality import QualitySpec, run_checks
from recstack.profiles.quality_anomalies import AnomalySpec, find_anomalies
from recstack.profiles.quality_impute import ModelSettings, impute
from recstack.profiles.source import load_attributes, load_catalogue, load_events

KEY = b"k" * 32


def loaded(builder: LakeBuilder) -> tuple[duckdb.DuckDBPyConnection, pa.Table]:
    builder.write()
    con = duckdb.connect()
    load_events(con, builder.root, 0, AS_OF_MS + 1)
    load_catalogue(con, builder.items_path)
    load_attributes(con, builder.root, AS_OF_MS)
    return con, build_profiles(con, AS_OF_MS)


def by_user(table: pa.Table) -> dict[str, dict]:
    return {row["user_id"]: row for row in table.to_pylist()}


# ------------------------------------------------------------------------------------------------ imputation ---
def test_mode_and_median_fill_and_flag(lake_builder: LakeBuilder) -> None:
    for user, gender, band in [("a", "f", "18-24"), ("b", "f", "25-34"), ("c", "m", "65+"), ("d", None, None)]:
        lake_builder.event(
            user, "profile", td(days=1), gender=gender, age_band=band, country="FR" if user == "a" else None
        )
    con, profiles = loaded(lake_builder)
    out, report = impute(con, profiles, {"gender": "mode", "age_band": "median", "country": "none"}, DEMOGRAPHICS)
    rows = by_user(out)
    assert (rows["d"]["gender"], rows["d"]["gender_imputed"]) == ("f", True)
    assert (rows["d"]["age_band"], rows["d"]["age_band_imputed"]) == ("25-34", True)  # 18-24 < 25-34 < 65+
    assert (rows["a"]["gender"], rows["a"]["gender_imputed"]) == ("f", False)
    assert rows["b"]["country"] is None and rows["b"]["country_imputed"] is False
    assert not any(r["language_imputed"] for r in rows.values())
    done = {i.column: i for i in report}
    assert (done["gender"].missing, done["gender"].imputed, done["gender"].used) == (1, 1, "mode")
    assert (done["country"].missing, done["country"].imputed) == (3, 0)


def test_median_needs_ordered_bands(lake_builder: LakeBuilder) -> None:
    lake_builder.event("a", "profile", td(days=1), gender="f")
    lake_builder.event("b", "view", td(days=1), item="i1")
    con, profiles = loaded(lake_builder)
    with pytest.raises(ValueError, match=r"impute\.gender: median needs ordered bands"):
        impute(con, profiles, {"gender": "median"}, DEMOGRAPHICS)


def test_unknown_strategy_names_the_column_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"impute\.age_band: unknown strategy 'guess'.*'mode', 'median', 'model'"):
        QualitySpec(impute={"age_band": "guess"})
    with pytest.raises(ValueError, match=r"impute\.shoe_size: not a demographic column"):
        QualitySpec(impute={"shoe_size": "mode"})


def test_model_predicts_age_band_from_preferences_and_reports_accuracy(lake_builder: LakeBuilder) -> None:
    # Sci-Fi viewers are 18-24, comedy viewers 45-54 (60/40, so the majority class is right 60% of the time)
    for u in range(100):
        young = u % 5 < 3
        item = "i2" if young else "i3"
        for k in range(3):
            lake_builder.event(f"u{u}", "view", td(days=1, minutes=k), item=item)
        if u < 80:
            lake_builder.event(f"u{u}", "profile", td(days=2), age_band="18-24" if young else "45-54")
    con, profiles = loaded(lake_builder)
    out, (age, *_) = impute(con, profiles, {"age_band": "model"}, DEMOGRAPHICS, ModelSettings(holdout=0.25))
    assert age.column == "age_band" and age.used == "model" and age.validated_on == 20
    assert age.accuracy == 1.0 and age.baseline == pytest.approx(0.6, abs=0.05)
    rows = by_user(out)
    for u in range(80, 100):
        expected = "18-24" if u % 5 < 3 else "45-54"
        assert (rows[f"u{u}"]["age_band"], rows[f"u{u}"]["age_band_imputed"]) == (expected, True)


def test_model_with_too_few_known_users_falls_back_to_the_mode(lake_builder: LakeBuilder) -> None:
    lake_builder.event("a", "profile", td(days=1), age_band="18-24")
    lake_builder.event("b", "view", td(days=1), item="i1")
    con, profiles = loaded(lake_builder)
    out, (age, *_) = impute(con, profiles, {"age_band": "model"}, DEMOGRAPHICS)
    assert age.used == "mode" and "too few" in age.note and by_user(out)["b"]["age_band"] == "18-24"


# ------------------------------------------------------------------------------------------------- anomalies ---
def test_an_obvious_bot_is_flagged_and_a_person_is_not(lake_builder: LakeBuilder) -> None:
    lake_builder.burst("scraper", 120, start=td(hours=2), every=td(milliseconds=400), item="i1")  # 120 in 48 s
    lake_builder.burst("person", 30, start=td(hours=2), every=td(seconds=20), item="i1")  # 3 a minute
    con, _ = loaded(lake_builder)
    found = find_anomalies(con, AS_OF_MS, AnomalySpec(max_events_per_minute=60)).to_pylist()
    bots = [f for f in found if f["kind"] == "bot_rate"]
    assert [b["user_id"] for b in bots] == ["scraper"]
    assert bots[0]["value"] >= 61 and bots[0]["score"] == bots[0]["value"] / 60 and bots[0]["period"] == "minute"


def test_a_user_far_above_their_own_baseline_is_flagged(lake_builder: LakeBuilder) -> None:
    for day in range(1, 15):
        for k in range(5 + day % 2):  # 5 or 6 a day
            lake_builder.event("steady", "view", td(days=day, hours=k), item="i1")
            lake_builder.event("spiky", "view", td(days=day, hours=k), item="i1")
    for k in range(60):  # today: 60 events over the morning, one every 10 minutes (not a bot rate)
        lake_builder.event("spiky", "view", td(hours=12) - td(minutes=10 * k), item="i1")
    for k in range(6):
        lake_builder.event("steady", "view", td(hours=k), item="i1")
    con, _ = loaded(lake_builder)
    found = [f for f in find_anomalies(con, AS_OF_MS).to_pylist() if f["kind"] == "user_activity"]
    assert [f["user_id"] for f in found] == ["spiky"]
    assert found[0]["value"] == 60 and found[0]["baseline"] == pytest.approx(5.5)
    assert found[0]["score"] == pytest.approx((60 - 5.5) / 5.5**0.5)  # MAD 0.5 -> the Poisson floor sqrt(5.5)


def test_site_wide_spike_and_drop_per_event_type_and_hour(lake_builder: LakeBuilder) -> None:
    # 48 h of 20 views and 20 clicks an hour; then the last complete hour (11:00) has 200 views and no clicks
    for hour in range(2, 50):
        for k in range(20):
            at = td(hours=hour, minutes=-k)
            lake_builder.event(f"v{k}", "view", at, item="i1")
            lake_builder.event(f"c{k}", "click", at, item="i1")
    for k in range(200):
        lake_builder.event(f"x{k}", "view", td(minutes=60 + k % 25), item="i1")
    con, _ = loaded(lake_builder)
    found = find_anomalies(con, AS_OF_MS, AnomalySpec(site_z=4.0)).to_pylist()
    found = sorted((f for f in found if f["kind"] == "site_rate"), key=lambda f: f["event_type"])
    assert [(f["event_type"], f["value"], f["baseline"]) for f in found] == [
        ("click", 0.0, 20.0),
        ("view", 200.0, 20.0),
    ]
    assert found[0]["start_ts"] == found[1]["start_ts"]
    assert found[0]["start_ts"].timestamp() * 1000 == (AS_OF_MS // 3_600_000 - 1) * 3_600_000
    assert '"drop"' in found[0]["detail"] and '"spike"' in found[1]["detail"]
    assert found[0]["score"] == pytest.approx(-20 / 20**0.5)  # -4.5: MAD 0, so the Poisson floor sqrt(20)
    assert found[1]["score"] == pytest.approx((200 - 20) / 20**0.5)


# ------------------------------------------------------------------------------------------------ duplicates ---
def test_email_is_normalised_and_hashed_never_stored() -> None:
    keyed = Pseudonymiser(KEY)
    assert keyed.identity(normalise_email("  Ann@Example.ORG ")) == keyed.identity("ann@example.org")
    assert keyed.identity("ann@example.org") not in (keyed.user("ann@example.org"), keyed.visitor("ann@example.org"))
    assert "email" not in lake.EVENTS_SCHEMA.names and "identity_hash" in lake.EVENTS_SCHEMA.names
    assert lake.EVENTS_SCHEMA.field("identity_hash").metadata[b"why"]  # the privacy notice lists it
    events, _ = parse_events({"event_type": "profile", "user_id": "u", "email": "a@b.org"}, 10)
    assert events[0].email == "a@b.org"
    with pytest.raises(BadEvent, match="only accepted in profile events"):
        parse_events({"event_type": "view", "user_id": "u", "email": "a@b.org"}, 10)
    with pytest.raises(BadEvent, match="at most 254"):
        parse_events({"event_type": "profile", "user_id": "u", "email": "a" * 250 + "@b.org"}, 10)


def test_duplicate_accounts_are_merged_through_aliases_and_rebuilt_as_one(lake_builder: LakeBuilder) -> None:
    same = Pseudonymiser(KEY).identity(normalise_email("Ann@Example.org"))
    lake_builder.event("acct-old", "view", td(days=20), item="i1")  # first seen earliest: the canonical account
    lake_builder.event("acct-old", "profile", td(days=20), identity_hash=same, age_band="25-34")
    lake_builder.event("acct-new", "profile", td(days=2), identity_hash=same, country="FR")
    lake_builder.event("acct-new", "view", td(days=1), item="i2")
    lake_builder.event("acct-new", "view", td(days=1), item="i3")
    lake_builder.event("visitor", "click", td(days=3), item="i3", anonymous=True)  # identified as acct-new
    lake_builder.alias("visitor", "acct-new", td(days=1))
    lake_builder.event("other", "profile", td(days=1), identity_hash="f" * 32)
    con, profiles = loaded(lake_builder)
    assert set(by_user(profiles)) == {"acct-old", "acct-new", "other"}
    _, _, report = run_checks(con, profiles, AS_OF_MS, lake_builder.root, QualitySpec(impute={}))
    assert (report.duplicates, report.merged) == (1, 1) and report.aliases_file
    # the next build: one profile holding both accounts' events (and the visitor's), stated values of both
    con, profiles = loaded(lake_builder)
    rows = by_user(profiles)
    assert set(rows) == {"acct-old", "other"}
    merged = rows["acct-old"]
    assert (merged["n_view_30d"], merged["n_click_30d"], merged["n_profile_30d"]) == (3, 1, 2)
    assert (merged["age_band"], merged["country"]) == ("25-34", "FR")
    # nothing new to merge: the check writes no second file
    _, _, again = run_checks(con, profiles, AS_OF_MS, lake_builder.root, QualitySpec(impute={}))
    assert (again.duplicates, again.merged, again.aliases_file) == (0, 0, None)
    assert len(list(lake.parts(lake_builder.root, "aliases"))) == 2  # the fixture's identify link + the merge
