"""The profile and segment API and /recommend's segment targeting on a real server (keys on) over segments a real
batch run published to the real Redis: roles, pseudonymised lookups, 404s, paging by cursor, the CSV export, rule
validation with the bad node's path, dry runs over the lake, saving to the registry, restrict / boost and the
segment-popularity cold start."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from segments_support import ACTION, DRAMA, PSEUDO, Seeded, names_of, publish_runs, start, write_inputs
from serving_support import Server, stop_server

from recstack.collect.records import members_key, memberships_key, segments_key

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.fixture(scope="module")
def seeded(module_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    root = tmp_path_factory.mktemp("segments")
    data = write_inputs(root)
    publish_runs(data, module_prefix, root / "out")
    # a big segment, laid out as a run publishes it: members zset (score 0), meta entry
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    names = names_of(module_prefix)
    big = [f"{n:032x}" for n in range(2500)]
    for start_at in range(0, len(big), 1000):
        client.zadd(members_key(names, "big"), dict.fromkeys(big[start_at : start_at + 1000], 0))
    meta = {"rule": {"count": {"within": "1d"}, "gte": 1}, "size": 2500, "last_run": "2026-12-06T00:00:00Z"}
    client.hset(segments_key(names, "meta"), "big", json.dumps({**meta, "top_items": [], "sizes": []}))
    client.close()
    return data


@pytest.fixture(scope="module")
def served(tiny_bundle: Path, seeded: Seeded, module_prefix: str, tmp_path_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    srv = start(tiny_bundle, seeded, module_prefix, tmp_path_factory.mktemp("srv") / "bentoml.log")
    yield srv
    stop_server(srv)


def client(server: Server, seeded: Seeded, role: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {seeded.keys[role]}"} if role else {}
    return httpx.Client(base_url=server.base_url, timeout=20, headers=headers)


def test_roles(served: Server, seeded: Seeded) -> None:
    reads = ["/segments", "/segments/drama_fans", "/segments/drama_fans/members", "/users/carol/segments"]
    with client(served, seeded, None) as anonymous, client(served, seeded, "recommend") as recommend:
        for path in reads:
            assert anonymous.get(path).status_code == 401, path
            denied = recommend.get(path)
            assert denied.status_code == 403 and denied.json()["field"] == "authorization", path
    with client(served, seeded, "analyst") as analyst:
        for path in reads:
            assert analyst.get(path).status_code == 200, path
        rule = {"name": "x_fans", "rule": {"count": {"within": "1d"}, "gte": 1}}
        assert analyst.post("/segments", json=rule).status_code == 403  # saving a rule is an admin's
    with client(served, seeded, None) as anonymous:
        assert anonymous.get("/dashboard/segments").status_code == 200  # the page holds no data


def test_user_segments_and_profile_by_raw_id(served: Server, seeded: Seeded) -> None:
    with client(served, seeded, "analyst") as http:
        assert http.get("/users/dan/segments").json() == {
            "user_id": "dan",
            "segments": ["action_fans", "active", "drama_fans"],
        }
        assert http.get("/users/frank/segments").json()["segments"] == []  # counters only: known, in no segment
        unknown = http.get("/users/nobody/segments")
        assert unknown.status_code == 404 and unknown.json()["field"] == "user_id"
        profile = http.get("/users/carol/profile").json()
        assert profile["subject"] == PSEUDO.user("carol") and profile["profile"] == {
            "age_band": "25-34",
            "n_events_7d": 4,
        }
        assert profile["segments"] == ["active", "drama_fans"]
        assert http.get("/users/dan/profile").status_code == 404  # segments, but no profile built
        assert http.get("/users/" + "x" * 200 + "/segments").json()["field"] == "user_id"


def test_segments_list_live_sizes_and_run_summary(served: Server, seeded: Seeded, module_prefix: str) -> None:
    with client(served, seeded, "analyst") as http:
        listed = {s["name"]: s for s in http.get("/segments").json()["segments"]}
        assert set(listed) == {"action_fans", "active", "big", "drama_fans"}
        drama = listed["drama_fans"]
        assert drama["size"] == 2 and drama["source"] == "yaml" and drama["rule"]["count"]["category"] == "Drama"
        assert len(drama["sizes"]) == 2 and drama["last_run"] and drama["overlap"] == {"active": 2, "action_fans": 1}
        assert drama["top_items"][0] == {"item_id": "i10", "title": "Drama movie 10", "n": 2}
        assert drama["top_categories"][0] == {"category": "Drama", "n": 7}
        # the size is live: a member added in real time counts at once
        names = names_of(module_prefix)
        redis.Redis.from_url("redis://127.0.0.1:6379/0").zadd(members_key(names, "drama_fans"), {"f" * 32: 0})
        assert http.get("/segments/drama_fans").json()["size"] == 3
        missing = http.get("/segments/no_such")
        assert missing.status_code == 404 and missing.json()["field"] == "name"


def test_members_page_by_cursor(served: Server, seeded: Seeded) -> None:
    with client(served, seeded, "analyst") as http:
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = http.get("/segments/big/members", params=params).json()
            assert page["size"] == 2500 and len(page["members"]) <= 1000
            seen += page["members"]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3 and seen == sorted(seen) and len(set(seen)) == 2500
        for bad in ("0", "1001", "ten", "-1"):
            answer = http.get("/segments/big/members", params={"limit": bad})
            assert answer.status_code == 400 and answer.json()["field"] == "limit", bad
        answer = http.get("/segments/big/members", params={"cursor": "a b"})
        assert answer.status_code == 400 and answer.json()["field"] == "cursor"
        assert http.get("/segments/nope/members").status_code == 404


def test_export_streams_every_member_pseudonym(served: Server, seeded: Seeded) -> None:
    with client(served, seeded, "analyst") as http:
        answer = http.get("/segments/big/export.csv")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(answer.text)))
        assert rows[0] == ["pseudonym"] and len(rows) == 2501 and len({r[0] for r in rows[1:]}) == 2500
        drama = list(csv.reader(io.StringIO(http.get("/segments/active/export.csv").text)))
        assert sorted(r[0] for r in drama[1:]) == sorted(PSEUDO.user(u) for u in ("carol", "dan", "erin"))
        assert http.get("/segments/nope/export.csv").status_code == 404


def test_post_segments_validates_dry_runs_and_saves(served: Server, seeded: Seeded, module_prefix: str) -> None:
    names = names_of(module_prefix)
    store = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    with client(served, seeded, "admin") as http:
        bad = http.post("/segments", json={"name": "oops", "rule": {"count": {"within": "7x"}, "gte": 1}})
        assert bad.status_code == 400 and bad.json()["field"] == "rule.count.within"
        assert bad.json()["path"] == "segments.oops.count.within"
        nested = {"all": [{"count": {"within": "1d"}, "gte": 1}, {"count": {"event": "view"}, "gte": 1}]}
        assert (
            http.post("/segments", json={"name": "oops", "rule": nested}).json()["field"] == "rule.all[1].count.within"
        )
        assert http.post("/segments", json={"name": "Bad Name", "rule": {}}).json()["field"] == "name"
        assert http.post("/segments", json={"name": "x", "rule": {}, "extra": 1}).json()["field"] == "extra"

        rule = {"count": {"event": "view", "category": "Drama", "within": "7d"}, "gte": 3}
        dry = http.post("/segments", json={"name": "drama_viewers", "rule": rule, "dry_run": True})
        assert dry.status_code == 200, dry.text
        assert dry.json()["size"] == 2 and dry.json()["saved"] is False  # carol and dan
        assert store.hget(segments_key(names, "rules"), "drama_viewers") is None

        version = int(store.get(segments_key(names, "rules_version")) or 0)
        saved = http.post("/segments", json={"name": "drama_viewers", "rule": rule})
        assert saved.status_code == 201, saved.text
        entry = json.loads(store.hget(segments_key(names, "rules"), "drama_viewers"))
        assert entry["rule"] == rule and entry["source"] == "api" and entry["saved_at"]
        assert int(store.get(segments_key(names, "rules_version"))) == version + 1  # the follower reloads
        again = http.post("/segments", json={"name": "drama_viewers", "rule": rule})
        assert again.status_code == 409 and again.json()["field"] == "name"
        assert (
            http.post("/segments", json={"name": "drama_viewers", "rule": rule, "overwrite": True}).status_code == 201
        )
        yaml_rule = http.post("/segments", json={"name": "active", "rule": rule, "overwrite": True})
        assert yaml_rule.status_code == 409 and "configs/segments" in yaml_rule.json()["error"]
        # listed at once, with no run yet
        listed = {s["name"]: s for s in http.get("/segments").json()["segments"]}
        assert listed["drama_viewers"]["size"] == 0 and listed["drama_viewers"]["last_run"] is None
    store.close()


def _ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [i["item_id"] for i in answer.json()["items"]]


def test_recommend_restrict_and_boost(served: Server, seeded: Seeded) -> None:
    with client(served, seeded, "recommend") as http:
        top = {"i10", "i2", "i6", "i12", "i14", "i4", "i8"}  # drama_fans' popular items
        restricted = _ids(
            http.post(
                "/recommend", json={"user_id": "u3", "k": 5, "segment": {"name": "drama_fans", "mode": "restrict"}}
            )
        )
        assert restricted and set(restricted) <= top
        plain = _ids(http.post("/recommend", json={"user_id": "u3", "k": 10}))
        boosted = _ids(
            http.post("/recommend", json={"user_id": "u3", "k": 10, "segment": {"name": "drama_fans", "weight": 10}})
        )
        assert set(boosted[:3]) <= top and boosted != plain  # +10 x weight puts the segment's items first
        cold = _ids(
            http.post(
                "/recommend",
                json={"user_id": "stranger", "k": 3, "segment": {"name": "drama_fans", "mode": "restrict"}},
            )
        )
        assert cold == ["i2", "i6", "i10"]  # the segment's own order (ties by item row)
        unknown = http.post("/recommend", json={"user_id": "u3", "segment": {"name": "no_such"}})
        assert unknown.status_code == 404 and unknown.json()["field"] == "segment.name"
        bad = http.post("/recommend", json={"user_id": "u3", "segment": {"name": "drama_fans", "mode": "only"}})
        assert bad.status_code == 400 and bad.json()["field"] == "segment.mode"


def test_cold_users_get_their_segments_popularity(served: Server, seeded: Seeded, module_prefix: str) -> None:
    with client(served, seeded, "recommend") as http:
        # erin is in `active` only; she has no trained vector and no recent activity on this server
        erin = http.post("/recommend", json={"user_id": "erin", "k": 4}).json()
        assert erin["user_source"] == "segment_popularity"
        assert [i["item_id"] for i in erin["items"]][:3] == ["i2", "i6", "i10"]
        nobody = http.post("/recommend", json={"user_id": "nobody-at-all", "k": 4}).json()
        assert nobody["user_source"] == "popularity"  # in no segment: the global popularity, as before
        # dan is in three segments: their merged popularity (action items count in two of them)
        dan = [i["item_id"] for i in http.post("/recommend", json={"user_id": "dan", "k": 7}).json()["items"]]
        assert set(dan) == set(DRAMA) | set(ACTION) | {"i12", "i14"}
    # a segment created after the worker cached the others is found by a forced re-read
    names = names_of(module_prefix)
    client_ = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    client_.hset(segments_key(names, "meta"), "fresh", json.dumps({"top_items": [["i47", 5]], "size": 1}))
    client_.sadd(memberships_key(names, PSEUDO.user("zoe")), "fresh")
    client_.close()
    body = {"user_id": "u3", "k": 1, "segment": {"name": "fresh", "mode": "restrict"}}
    with client(served, seeded, "recommend") as http:
        # each worker re-reads at most once a second on an unknown name: poll what the server answers
        deadline = time.monotonic() + 10
        while (fresh := http.post("/recommend", json=body)).status_code == 404 and time.monotonic() < deadline:
            pass
        assert _ids(fresh) == ["i47"]
        zoe = http.post("/recommend", json={"user_id": "zoe", "k": 1}).json()
        assert zoe["user_source"] == "segment_popularity" and zoe["items"][0]["item_id"] == "i47"
