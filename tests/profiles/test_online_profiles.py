"""The online copy: profiles loaded into Redis hashes at profile_key (flat string fields, JSON for maps and lists,
a TTL), read back typed by read_profile and its async twin; a reload replaces a hash instead of merging into it."""

from __future__ import annotations

from datetime import timedelta as td

import duckdb
import pytest
import redis.asyncio
from profiles_support import AS_OF_MS, REDIS_URL, LakeBuilder

from recstack.collect.records import profile_key, tombstone_key
from recstack.profiles.build import DEMOGRAPHICS, build_profiles
from recstack.profiles.online import load_profiles, read_profile, read_profile_async
from recstack.profiles.quality_impute import impute
from recstack.profiles.source import load_attributes, load_catalogue, load_events

pytestmark = pytest.mark.redis


def profiles(builder: LakeBuilder):
    builder.write()
    con = duckdb.connect()
    load_events(con, builder.root, 0, AS_OF_MS + 1)
    load_catalogue(con, builder.items_path)
    load_attributes(con, builder.root, AS_OF_MS)
    table, _ = impute(con, build_profiles(con, AS_OF_MS), {"gender": "mode"}, DEMOGRAPHICS)
    return table


def test_load_and_read_back_typed(lake_builder: LakeBuilder, names, redis_client) -> None:
    lake_builder.event("u1", "view", td(hours=1), item="i1", local_hour=20)
    lake_builder.event("u1", "preference", td(hours=1), category="Horror", value=-0.5)
    lake_builder.event("u1", "profile", td(days=1), gender="female")
    lake_builder.event("u2", "view", td(hours=2), item="i3")
    table = profiles(lake_builder)
    assert load_profiles(redis_client, names, table, ttl_s=3600, chunk=1) == 2
    one = read_profile(redis_client, names, "u1")
    assert one == {k: v for k, v in {r["user_id"]: r for r in table.to_pylist()}["u1"].items() if v is not None} | {
        "pref_implicit": {"Action": 0.5, "Sci-Fi": 0.5},
        "stated_preferences": {"Horror": -0.5},
        "rating_by_category": {},
        "survey_answers": {},
    }
    assert one["n_view_7d"] == 1 and one["hour_of_day"][20] == 1 and one["top_categories"] == ["Action", "Sci-Fi"]
    assert one["gender_imputed"] is False and "age_band" not in one  # nulls are absent fields
    two = read_profile(redis_client, names, "u2")
    assert (two["gender"], two["gender_imputed"]) == ("female", True)
    assert 0 < redis_client.ttl(profile_key(names, "u1")) <= 3600
    assert read_profile(redis_client, names, "nobody") is None


def test_a_reload_replaces_the_hash(lake_builder: LakeBuilder, names, redis_client) -> None:
    lake_builder.event("u1", "view", td(hours=1), item="i1")
    table = profiles(lake_builder)
    redis_client.hset(profile_key(names, "u1"), "stale_field", "x")
    load_profiles(redis_client, names, table, ttl_s=None)
    assert b"stale_field" not in redis_client.hgetall(profile_key(names, "u1"))
    assert redis_client.ttl(profile_key(names, "u1")) == -1  # no TTL asked for
    with pytest.raises(ValueError, match="ttl_s"):
        load_profiles(redis_client, names, table, ttl_s=0)


@pytest.mark.anyio
async def test_async_twin_reads_the_same(lake_builder: LakeBuilder, names, redis_client) -> None:
    lake_builder.event("u1", "view", td(hours=1), item="i1")
    load_profiles(redis_client, names, profiles(lake_builder), ttl_s=60)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        assert await read_profile_async(client, names, "u1") == read_profile(redis_client, names, "u1")
        assert await read_profile_async(client, names, "nobody") is None
    finally:
        await client.aclose()


def test_an_erased_user_is_not_loaded_back(lake_builder: LakeBuilder, names, redis_client) -> None:
    lake_builder.event("u1", "view", td(hours=1), item="i1")
    lake_builder.event("u2", "view", td(hours=1), item="i2")
    table = profiles(lake_builder)
    redis_client.sadd(tombstone_key(names), "u1")  # DELETE /users/u1 ran; the lake is not rewritten yet
    assert load_profiles(redis_client, names, table, ttl_s=None) == 1
    assert read_profile(redis_client, names, "u1") is None and read_profile(redis_client, names, "u2") is not None
