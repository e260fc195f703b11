"""A/B arms, impressions and hot-swap on a real server (2 workers, real Redis): every answer has a request_id and the
user's sticky arm and is recorded as an impression; POST /admin/reload swaps one arm's bundle on every worker, and a
missing, tampered or unknown target is refused while the old bundle keeps serving (issue 15, parts 1, 4, 5)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from bundle_support import write_test_bundle
from serving_support import Server, start_server, stop_server

from recstack.bundle.reader import read_manifest

pytestmark = pytest.mark.redis

USERS = [f"u{i}" for i in range(60)]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, serving_split) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("ab-bundles")
    return {
        "a": tiny_bundle,
        "b": write_test_bundle(root / "b", serving_split, seed=1),
        "c": write_test_bundle(root / "c", serving_split, seed=2),
    }


@pytest.fixture(scope="module")
def ab_server(
    bundles: dict[str, Path], module_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    arms = ",".join(f"{arm}:{{bundle:'{bundles[arm]}',weight:1}}" for arm in ("a", "b"))
    srv = start_server(
        bundles["a"],
        tmp_path_factory.mktemp("ab") / "bentoml.log",
        redis_url="redis://127.0.0.1:6379/0",
        redis_prefix=module_prefix,
        overrides=["redis_timeout_s=1.0", "experiment.name=exp", f"experiment.arms={{{arms}}}", "reload_poll_s=0.2"],
    )
    yield srv
    stop_server(srv)


def recommend(client: httpx.Client, user: str) -> dict:
    answer = client.post("/recommend", json={"user_id": user, "k": 5})
    assert answer.status_code == 200, answer.text
    return answer.json()


def arms_of(client: httpx.Client) -> dict[str, str]:
    return {user: recommend(client, user)["arm"] for user in USERS}


def test_answers_carry_a_request_id_and_a_sticky_arm(ab_server: Server) -> None:
    with ab_server.client() as client:
        first, second = arms_of(client), arms_of(client)
        answers = [recommend(client, user) for user in USERS[:10]]
    assert first == second  # sticky (and both workers agree: the requests spread over them)
    assert set(first.values()) == {"a", "b"}
    ids = [a["request_id"] for a in answers]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert all(a["experiment"] == "exp" for a in answers)
    tags = {a["arm"]: a["model"] for a in answers}
    assert len(set(tags.values())) == len(tags)  # each arm answered by its own bundle


def test_every_answer_is_recorded_as_an_impression(ab_server: Server, module_prefix: str) -> None:
    with ab_server.client() as client:
        answers = {a["request_id"]: a for a in (recommend(client, user) for user in USERS[:20])}
    stream, found = f"{module_prefix}collect", {}
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    deadline = time.monotonic() + 30
    while set(answers) - set(found) and time.monotonic() < deadline:  # each worker flushes every 0.25 s
        for _, fields in client.xrange(stream):
            if fields[b"t"] == b"impressions":
                found.update({row["request_id"]: row for row in json.loads(fields[b"r"])})
        time.sleep(0.1)
    assert not set(answers) - set(found), "impressions missing from the stream"
    for request_id, answer in answers.items():
        row = found[request_id]
        assert row["items"] == [i["item_id"] for i in answer["items"]]
        assert row["arm"] == answer["arm"] and row["bundle"] == answer["model"] and row["experiment"] == "exp"
        assert len(row["user_id"]) == 32 and row["user_id"] != answer["user_id"]  # a pseudonym, never the raw id


def test_a_bad_reload_is_refused_and_the_old_bundle_keeps_serving(
    ab_server: Server, bundles: dict[str, Path], tmp_path: Path
) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(bundles["c"], tampered)
    victim = max(tampered.glob("*.npy"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with ab_server.client(timeout=60) as client:
        before = {a: recommend(client, u)["model"] for u, a in arms_of(client).items()}
        cases = {
            "missing": ({"bundle": str(tmp_path / "nowhere"), "arm": "b"}, 404, "bundle"),
            "tampered": ({"bundle": str(tampered), "arm": "b"}, 422, "bundle"),
            "unknown arm": ({"bundle": str(bundles["c"]), "arm": "zz"}, 404, "arm"),
            "not a bundle": ({"bundle": str(tmp_path), "arm": "b"}, 422, "bundle"),
        }
        for name, (body, status, field) in cases.items():
            answer = client.post("/admin/reload", json=body)
            assert answer.status_code == status, (name, answer.text)
            assert answer.json()["field"] == field, (name, answer.text)
        assert "sha256" in client.post("/admin/reload", json=cases["tampered"][0]).json()["error"]
        after = {a: recommend(client, u)["model"] for u, a in arms_of(client).items()}
    assert after == before


def test_a_reload_swaps_one_arm_on_every_worker(ab_server: Server, bundles: dict[str, Path]) -> None:
    with ab_server.client(timeout=60) as client:
        arms = arms_of(client)
        b_users = [u for u, a in arms.items() if a == "b"]
        a_users = [u for u, a in arms.items() if a == "a"]
        old_a = recommend(client, a_users[0])["model"]
        answer = client.post("/admin/reload", json={"bundle": str(bundles["c"]), "arm": "b"})
        assert answer.status_code == 200, answer.text
        swapped = answer.json()
        digest = read_manifest(bundles["c"]).digest()
        assert swapped["bundle"] == f"c@{digest[:12]}" and swapped["arm"] == "b"
        # The answering worker swapped before answering; the other follows within reload_poll_s: wait until a run
        # of answers (spread over both workers) all carry the new bundle.
        deadline, streak = time.monotonic() + 60, 0
        while streak < 30 and time.monotonic() < deadline:
            streak = (
                streak + 1 if recommend(client, b_users[streak % len(b_users)])["model"] == swapped["bundle"] else 0
            )
        assert streak >= 30, "a worker still serves the old bundle"
        assert {recommend(client, u)["model"] for u in a_users} == {old_a}  # the other arm is untouched
        ready = client.get("/readyz").json()
    assert ready["experiment"]["arms"]["b"] == swapped["bundle"]
