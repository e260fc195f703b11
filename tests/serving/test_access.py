"""API keys and roles (recstack.serving.access / api_keys), in-process around a tiny Starlette app that reports the
role the middleware gave it: every protected route refuses a missing, malformed, unknown or wrong-role key with the
right status, body and challenge; the right role, admin, and public routes pass."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from recstack.serving import api_keys
from recstack.serving.access import (
    PUBLIC_ROUTES,
    ROUTE_ROLES,
    AccessMiddleware,
    AccessPolicy,
    RouteTable,
    caller_key,
    caller_role,
)
from recstack.serving.api_keys import KeyFileError, KeyRing, new_key, read_key_file, write_key_file
from recstack.serving.http_guards import ErrorShapeMiddleware

ROLES = ("collect", "recommend", "admin")
PROTECTED = [(spec.split()[0], spec.split()[1].replace("{id}", "u42"), role) for spec, role in ROUTE_ROLES.items()]
PUBLIC = [("GET", "/pixel.gif"), ("GET", "/demo"), ("GET", "/demo/app.js"), ("GET", "/privacy"), ("GET", "/livez")]
PUBLIC += [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/docs"), ("GET", "/schema.json")]
PUBLIC += [("GET", "/"), ("GET", "/static_content/swagger-ui.css")]
METHODS = ["GET", "POST", "DELETE", "OPTIONS", "HEAD"]


async def echo(request: Request) -> JSONResponse:
    """What the app sees: the role and key name the middleware put in the scope."""
    return JSONResponse({"role": caller_role(request.scope), "key": caller_key(request.scope)})


async def socket(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text("hello")
    await ws.close()


def tiny_app() -> Starlette:
    paths = {path for _, path, _ in PROTECTED} | {path for _, path in PUBLIC} | {"/unlisted"}
    return Starlette(
        routes=[Route(path, echo, methods=METHODS) for path in sorted(paths)] + [WebSocketRoute("/ws", socket)]
    )


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A key file with one key per role; returns its path and role -> key."""
    tokens, entries = {}, []
    for role in ROLES:
        token, entry = new_key(role, f"{role}-key")
        tokens[role] = token
        entries.append(entry)
    path = tmp_path / "secrets" / "keys.yaml"
    write_key_file(path, entries)
    return path, tokens


@pytest.fixture
def client(keys: tuple[Path, dict[str, str]]) -> Iterator[TestClient]:
    ring = KeyRing.from_file(keys[0], reload_s=0)
    with TestClient(AccessMiddleware(tiny_app(), policy=AccessPolicy(ring, visitor=()))) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response, status: int, error_code: str | None = None) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "field"} and body["field"] == "authorization"
    assert body["error"]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer realm=")
    if error_code:
        assert f'error="{error_code}"' in challenge


@pytest.mark.parametrize(("method", "path", "role"), PROTECTED)
def test_protected_route_without_a_key_is_401(client: TestClient, method: str, path: str, role: str) -> None:
    response = client.request(method, path)
    assert_refused(response, 401)
    assert "error=" not in response.headers["www-authenticate"]  # RFC 6750: no error code when no credentials
    assert repr(role) in response.json()["error"]  # says which role it needs


MALFORMED: list[tuple[str, list[tuple[bytes, bytes]]]] = [
    ("no scheme", [(b"authorization", b"abcdef")]),
    ("basic", [(b"authorization", b"Basic dXNlcjpwYXNz")]),
    ("bearer alone", [(b"authorization", b"Bearer")]),
    ("bearer and spaces", [(b"authorization", b"Bearer    ")]),
    ("empty", [(b"authorization", b"")]),
    ("non-ascii", [(b"authorization", "Bearer clé-très-secrète".encode())]),
    ("latin-1 bytes", [(b"authorization", b"Bearer \xff\xfe\x00key")]),
    ("two tokens", [(b"authorization", b"Bearer abc def")]),
    ("huge", [(b"authorization", b"Bearer " + b"A" * 20_000)]),
    ("two headers", [(b"authorization", b"Bearer abc"), (b"authorization", b"Bearer def")]),
]


@pytest.mark.parametrize(("what", "headers"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_authorization_is_401(
    keys: tuple[Path, dict[str, str]], what: str, headers: list[tuple[bytes, bytes]]
) -> None:
    """Raw ASGI, so that headers no HTTP client would send (bytes outside ASCII, duplicates) reach the middleware."""
    ring = KeyRing.from_file(keys[0], reload_s=0)
    status, sent = call(
        AccessMiddleware(tiny_app(), policy=AccessPolicy(ring, visitor=())), "POST", "/recommend", headers
    )
    assert status == 401
    body = json.loads(sent)
    assert body["field"] == "authorization" and body["error"]
    assert b"AAAA" not in sent and b"abc" not in sent  # the token is never echoed


def call(app, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    import asyncio

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "headers": headers,
             "query_string": b"", "client": ("127.0.0.1", 1), "server": ("test", 80), "scheme": "http",
             "http_version": "1.1", "root_path": ""}  # fmt: skip
    messages: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        messages.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in messages if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def test_random_header_bytes_never_raise(keys: tuple[Path, dict[str, str]]) -> None:
    """Whatever bytes the header holds, the answer is a 401 (never an exception, never a 500)."""
    ring = KeyRing.from_file(keys[0], reload_s=0)
    app = AccessMiddleware(tiny_app(), policy=AccessPolicy(ring, visitor=()))
    rng = random.Random(7)
    for _ in range(200):
        value = b"Bearer " * rng.randint(0, 1) + rng.randbytes(rng.randint(0, 80))
        status, _ = call(app, "POST", "/events", [(b"authorization", value)])
        assert status == 401, value


@pytest.mark.parametrize(("method", "path", "role"), PROTECTED)
def test_unknown_key_is_401(client: TestClient, method: str, path: str, role: str) -> None:
    fake, _ = new_key(role, "not-in-the-file")
    response = client.request(method, path, headers=bearer(fake))
    assert_refused(response, 401, "invalid_token")
    assert fake not in response.text


@pytest.mark.parametrize(("method", "path", "role"), PROTECTED)
def test_wrong_role_is_403_and_right_role_passes(
    client: TestClient, keys: tuple[Path, dict[str, str]], method: str, path: str, role: str
) -> None:
    tokens = keys[1]
    for other in ("collect", "recommend"):
        response = client.request(method, path, headers=bearer(tokens[other]))
        if other == role:
            assert response.status_code == 200, response.text
            assert response.json() == {"role": role, "key": f"{role}-key"}
        else:
            assert_refused(response, 403, "insufficient_scope")
            assert "'admin'" in response.json()["error"] or repr(role) in response.json()["error"]
    admin = client.request(method, path, headers=bearer(tokens["admin"]))
    assert admin.status_code == 200 and admin.json() == {"role": "admin", "key": "admin-key"}


def test_unlisted_route_needs_admin(client: TestClient, keys: tuple[Path, dict[str, str]]) -> None:
    """Fail closed: an endpoint nobody put in the table is open to admin keys only."""
    tokens = keys[1]
    assert_refused(client.get("/unlisted"), 401)
    assert_refused(client.get("/unlisted", headers=bearer(tokens["recommend"])), 403)
    assert client.get("/unlisted", headers=bearer(tokens["admin"])).status_code == 200


@pytest.mark.parametrize(("method", "path"), PUBLIC)
def test_public_routes_pass_without_a_key(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 200
    assert response.json() == {"role": None, "key": None}
    # A bad or unknown key there is ignored, not refused (a proxy's or a browser's own Authorization header).
    assert client.request(method, path, headers={"Authorization": "Basic eDp5"}).status_code == 200
    assert client.request(method, path, headers=bearer("unknown-key")).status_code == 200


def test_public_route_exposes_a_valid_keys_role(client: TestClient, keys: tuple[Path, dict[str, str]]) -> None:
    """How the service tells an admin's GET /readyz (details) from anyone's (ready / not ready)."""
    response = client.get("/readyz", headers=bearer(keys[1]["admin"]))
    assert response.json() == {"role": "admin", "key": "admin-key"}


def test_options_and_head(client: TestClient, keys: tuple[Path, dict[str, str]]) -> None:
    """CORS preflights carry no credentials and pass; HEAD is checked like GET."""
    assert client.options("/events").status_code == 200
    assert client.head("/consent").status_code == 401
    assert client.head("/consent", headers=bearer(keys[1]["collect"])).status_code == 200


def test_websocket_on_a_protected_path_is_closed(client: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws") as ws:
        ws.receive_text()
    assert closed.value.code == 1008


def test_the_4xx_keeps_its_challenge_through_error_shaping(keys: tuple[Path, dict[str, str]]) -> None:
    """Inside http_guards' ErrorShapeMiddleware (as in the service): same body, WWW-Authenticate kept."""
    ring = KeyRing.from_file(keys[0], reload_s=0)
    app = ErrorShapeMiddleware(AccessMiddleware(tiny_app(), policy=AccessPolicy(ring, visitor=())))
    with TestClient(app) as c:
        assert_refused(c.post("/recommend"), 401)
        assert_refused(c.post("/recommend", headers=bearer(keys[1]["collect"])), 403, "insufficient_scope")


def test_revoked_key_stops_working_without_a_restart(keys: tuple[Path, dict[str, str]]) -> None:
    path, tokens = keys
    ring = KeyRing.from_file(path, reload_s=0)  # check the file at every request
    with TestClient(AccessMiddleware(tiny_app(), policy=AccessPolicy(ring, visitor=()))) as c:
        assert c.post("/events", headers=bearer(tokens["collect"])).status_code == 200  # now cached
        write_key_file(path, [e for e in read_key_file(path) if e.role != "collect"])
        assert_refused(c.post("/events", headers=bearer(tokens["collect"])), 401, "invalid_token")
        # A file broken later keeps the keys in force (logged), rather than locking everyone out.
        path.write_text("keys: [not, a, key]\n")
        assert c.post("/recommend", headers=bearer(tokens["recommend"])).status_code == 200


def test_key_ring_reload_interval(keys: tuple[Path, dict[str, str]]) -> None:
    path, tokens = keys
    now = [0.0]
    ring = KeyRing(read_key_file(path), path=path, reload_s=5, clock=lambda: now[0])
    ring.refresh()
    assert ring.verify(tokens["admin"].encode()) is not None
    write_key_file(path, [])
    now[0] = 4.9
    assert ring.verify(tokens["admin"].encode()) is not None  # not checked yet
    now[0] = 5.0
    assert ring.verify(tokens["admin"].encode()) is None


def test_auth_off_treats_everyone_as_admin() -> None:
    with TestClient(AccessMiddleware(tiny_app(), policy=AccessPolicy(None, enforce=False))) as c:
        assert c.delete("/users/u42").json() == {"role": "admin", "key": None}


def test_policy_refuses_mistakes(keys: tuple[Path, dict[str, str]]) -> None:
    ring = KeyRing.from_file(keys[0], reload_s=0)
    with pytest.raises(ValueError, match="superuser"):
        AccessPolicy(ring, routes={"POST /x": "superuser"})
    with pytest.raises(ValueError, match="both public and protected"):
        AccessPolicy(ring, routes={"GET /readyz": "admin"})
    with pytest.raises(ValueError, match="api_keys_file"):
        AccessPolicy(None)
    with pytest.raises(ValueError, match="METHOD /path"):
        RouteTable({"POST /a b": 1})


def test_route_table_matching() -> None:
    table = RouteTable({"DELETE /users/{id}": "a", "/demo/*": "b", "GET /x": "c", "/y": "d"})
    assert table.match("DELETE", "/users/abc") == "a"
    assert table.match("DELETE", "/users/abc/more") is None
    assert table.match("GET", "/users/abc") is None
    assert table.match("GET", "/demo/a/b.js") == "b" and table.match("GET", "/demo") is None
    assert table.match("HEAD", "/x") == "c" and table.match("POST", "/x") is None
    assert table.match("PATCH", "/y") == "d"
    assert "/demo" in PUBLIC_ROUTES and "/demo/*" in PUBLIC_ROUTES


def test_key_file_errors_say_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(KeyFileError, match="recstack-keys create"):
        KeyRing.from_file(missing, reload_s=5)
    loose = tmp_path / "loose.yaml"
    write_key_file(loose, [])
    os.chmod(loose, 0o666)
    with pytest.raises(KeyFileError, match="chmod 600"):
        KeyRing.from_file(loose, reload_s=5)
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("keys: [{name: a}]\n", "exactly the fields"),
        ("keys:\n- {name: a, role: root, sha256: " + "ab" * 32 + ", created: x}\n", "not one of"),
        ("keys:\n- {name: a, role: admin, sha256: my-key, created: x}\n", "64 lowercase hex"),
        ("keys: {a: 1}\n", "must be a list"),
        ("[1, 2]\n", "mapping with one 'keys' list"),
        ("keys: [\n", "not valid YAML"),
    ]:
        bad.write_text(text)
        os.chmod(bad, 0o600)
        with pytest.raises(KeyFileError, match=message):
            read_key_file(bad)
    _, a = new_key("admin", "same")
    _, b = new_key("collect", "same")
    with pytest.raises(KeyFileError, match="used twice"):
        api_keys.parse_entries({"keys": [a.as_dict(), b.as_dict()]}, "x")


def test_json_key_file(tmp_path: Path) -> None:
    token, entry = new_key("recommend", "backend")
    path = tmp_path / "keys.json"
    write_key_file(path, [entry])
    assert json.loads(path.read_text())["keys"][0]["sha256"] == api_keys.hash_key(token)
    assert KeyRing.from_file(path, reload_s=5).verify(token.encode()) == entry
    path.write_text("{")
    with pytest.raises(KeyFileError, match="not valid JSON"):
        read_key_file(path)


def test_page_facing_routes_without_a_key_are_the_cookies_visitor(keys: tuple[Path, dict[str, str]]) -> None:
    """A site's own pages call /events, /consent and /recommend without a key: the request gets role ``visitor``
    (the collector and /recommend then refuse any user_id from it); a malformed or unknown key is still a 401, and
    every other protected route still needs a key."""
    ring = KeyRing.from_file(keys[0], reload_s=0)
    with TestClient(AccessMiddleware(tiny_app(), policy=AccessPolicy(ring))) as c:
        for method, path in (("POST", "/events"), ("GET", "/consent"), ("POST", "/consent"), ("POST", "/recommend")):
            answer = c.request(method, path)
            assert answer.status_code == 200 and answer.json()["role"] == "visitor", (method, path)
        assert c.post("/events", headers={"authorization": "Bearer nope"}).status_code == 401
        assert c.post("/similar_items").status_code == 401
        assert c.delete("/users/u1").status_code == 401
