"""Keys, roles and rate limits on the real server (auth and rate limits on, as deployed): every endpoint with no key,
a wrong key and a key of the wrong role answers 401 / 403 (never a 500); the right role passes; /readyz tells only
ready / not ready without an admin key; exclude_seen=false is an admin's question; a keyless page may act only as
its visitor cookie; the per-address limit answers 429 with Retry-After."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_support import Server, start_server, stop_server

from recstack.serving.api_keys import ROLES, new_key, write_key_file

pytestmark = [pytest.mark.slow, pytest.mark.redis]

# (method, path, body, role needed or "visitor" when a keyless page may call it)
ENDPOINTS = [
    ("POST", "/recommend", {"user_id": "u1", "k": 3}, "recommend"),
    ("POST", "/similar_items", {"item_id": "i1", "k": 3}, "recommend"),
    ("POST", "/events", {"user_id": "u1", "item_id": "i1", "event_type": "click"}, "collect"),
    ("POST", "/identify", {"user_id": "u1", "anonymous_id": "v1"}, "collect"),
    ("POST", "/consent", {"user_id": "u1", "purposes": {"analytics": True}}, "collect"),
    ("GET", "/consent?user_id=u1", None, "collect"),
    ("DELETE", "/users/someone", None, "admin"),
]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("secrets")
    made = {role: new_key(role, f"{role}-test") for role in ROLES}
    path = folder / "api_keys.yaml"
    write_key_file(path, [entry for _, entry in made.values()])
    return path, {role: token for role, (token, _) in made.items()}


@pytest.fixture(scope="module")
def guarded(
    tiny_bundle: Path, module_prefix: str, tokens, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    log = tmp_path_factory.mktemp("guarded") / "bentoml.log"
    srv = start_server(
        tiny_bundle,
        log,
        redis_url="redis://127.0.0.1:6379/0",
        redis_prefix=module_prefix,
        overrides=[
            "auth=true",
            f"api_keys_file={tokens[0]}",
            "rate_limit=true",
            "rate_limit_per_ip=30/minute",
            f"rate_limit_prefix={module_prefix}rl",
            "rate_limit_lease_fraction=0",
            "redis_timeout_s=1.0",
            "collector.cookie_secure=false",  # plain-http loopback: httpx sends Secure cookies only over https
        ],
    )
    yield srv
    stop_server(srv)


def call(http: httpx.Client, method: str, path: str, body: dict | None, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return http.request(method, path, json=body, headers=headers)


def test_every_endpoint_by_key_and_role(guarded: Server, tokens) -> None:  # type: ignore[no-untyped-def]
    keys = tokens[1]
    with httpx.Client(base_url=guarded.base_url, timeout=10) as http:
        for method, path, body, needed in ENDPOINTS:
            wrong = call(http, method, path, body, "not-a-key-" + "x" * 30)
            assert wrong.status_code == 401 and wrong.json()["field"] == "authorization", (path, wrong.text)
            assert "www-authenticate" in wrong.headers
            for role, token in keys.items():
                answer = call(http, method, path, body, token)
                allowed = role in (needed, "admin")
                assert (answer.status_code < 400) == allowed, (path, role, answer.status_code, answer.text)
                if not allowed:
                    assert answer.status_code == 403 and answer.json()["field"] == "authorization"
            keyless = call(http, method, path, body, None)
            assert keyless.status_code == 401, (path, keyless.text)  # a page may not name a user (or call admin)
        malformed = http.post("/recommend", json={"k": 1}, headers={"authorization": "Basic abc"})
        assert malformed.status_code == 401


def test_keyless_page_calls_act_as_the_visitor_cookie(guarded: Server) -> None:
    with httpx.Client(base_url=guarded.base_url, timeout=10) as http:
        assert http.get("/pixel.gif", params={"e": "view", "i": "i1"}).status_code == 200  # public, sets the cookie
        assert http.post("/consent", json={"purposes": {"analytics": True, "personalisation": True}}).status_code == 200
        assert http.post("/events", json={"item_id": "i2", "event_type": "click"}).json()["accepted"] == 1
        mine = http.post("/recommend", json={"k": 3})
        assert mine.status_code == 200 and mine.json()["user_source"] == "recent_activity"


def test_readiness_details_and_exclude_seen_are_for_admins(guarded: Server, tokens) -> None:  # type: ignore[no-untyped-def]
    keys = tokens[1]
    with httpx.Client(base_url=guarded.base_url, timeout=10) as http:
        assert http.get("/readyz").json() == {"status": "ready"}
        detailed = http.get("/readyz", headers={"authorization": f"Bearer {keys['admin']}"}).json()
        assert detailed["status"] == "ready" and "online_store" in detailed and "/" not in detailed["model"]
        body = {"user_id": "u1", "k": 3, "exclude_seen": False}
        assert call(http, "POST", "/recommend", body, keys["recommend"]).status_code == 403
        assert call(http, "POST", "/recommend", body, keys["admin"]).status_code == 200


def test_per_address_limit_answers_429_with_retry_after(guarded: Server) -> None:
    with httpx.Client(base_url=guarded.base_url, timeout=10) as http:
        statuses = [http.get("/pixel.gif").status_code for _ in range(40)]
        # the pixel has its own per-address limit (20/second); keyless page calls share 30/minute
        pages = [http.post("/recommend", json={"k": 1}) for _ in range(40)]
    limited = [a for a in pages if a.status_code == 429]
    assert limited and all(a.headers.get("retry-after") for a in limited) and all(s in (200, 429) for s in statuses)
    assert limited[0].json()["field"]
