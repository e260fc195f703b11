"""Who may call what: an ASGI middleware that checks ``Authorization: Bearer <key>`` against a role per route.

* a protected route without a key, with a malformed header, or with an unknown (revoked, mistyped) key: 401 with
  ``WWW-Authenticate: Bearer``; a key whose role does not cover the route: 403. Bodies have http_guards' shape
  ``{"error": ..., "field": "authorization"}`` and never contain the token. No input makes it raise.
* ``admin`` keys pass everywhere; a route missing from the table needs ``admin`` (fail closed: an endpoint added
  later without a table entry is not open to every key holder).
* public routes pass without a key. A valid key sent to a public route still tags the request with its role (an
  admin's ``GET /readyz`` gets details); an invalid one there is ignored, not refused (browsers and proxies send
  headers of their own to public pages).
* ``OPTIONS`` passes: CORS preflights never carry credentials, and no endpoint acts on them.

The caller's role reaches the app in the ASGI scope: ``scope["state"]["recstack_role"]`` (``None`` when no valid
key was sent) and the key's name in ``scope["state"]["recstack_key"]``; in Starlette / BentoML that is
``request.state.recstack_role``. Use :func:`caller_role` rather than the raw keys.

Place it inside http_guards' ErrorShapeMiddleware (which logs one INFO line per 4xx) and RequestGuardMiddleware (so
unknown paths stay 404 and oversized headers 431 before any key is looked at), and outside the rate limiter, which
limits per key by the name set here.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from recstack.collect.purposes import ROLE_STATE, VISITOR
from recstack.serving.api_keys import ADMIN, ANALYST, COLLECT, RECOMMEND, ROLES, KeyRing, well_formed
from recstack.serving.http_guards import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("recstack.auth")

KEY_STATE = "recstack_key"
"""``scope["state"]`` key holding the verified key's name (what rate limits count per key)."""

ROUTE_ROLES: Mapping[str, str] = {
    "POST /events": COLLECT,
    "POST /identify": COLLECT,
    "POST /consent": COLLECT,
    "GET /consent": COLLECT,
    "POST /recommend": RECOMMEND,
    "POST /similar_items": RECOMMEND,
    "DELETE /users/{id}": ADMIN,
    "POST /items": ADMIN,
    "POST /admin/reload": ADMIN,
    "GET /admin/metadata": ADMIN,
    # profiles and segments (segments_api): reading them is an analyst's job; saving a rule (POST /segments) is admin
    "GET /users/{id}/profile": ANALYST,
    "GET /users/{id}/segments": ANALYST,
    "GET /segments": ANALYST,
    "GET /segments/{name}": ANALYST,
    "GET /segments/{name}/members": ANALYST,
    "GET /segments/{name}/export.csv": ANALYST,
}
"""recstack's routes and the role each needs (admin keys pass everywhere; unlisted routes need admin)."""

VISITOR_ROUTES: tuple[str, ...] = ("POST /events", "GET /consent", "POST /consent", "POST /recommend")
"""Routes a site's own pages call without a key: such a request gets role ``visitor`` and may act only as the cookie's
visitor (the collector and /recommend refuse a user_id from it with a 401), like the public pixel."""

PUBLIC_ROUTES: tuple[str, ...] = (
    "GET /pixel.gif",  # rate-limited per IP instead (rate_limit.py)
    "/demo",
    "/demo/*",
    # the dashboard's page and scripts hold no data: the page asks for a key and calls the analyst routes with it
    "GET /dashboard/segments",
    "GET /dashboard/static/*",
    "/privacy",
    "/collector/openapi.json",
    "/livez",
    "/healthz",
    "/readyz",  # without an admin key it answers only ready / not ready (the service decides, by role)
    "/metrics",  # scraped by Prometheus, which holds no key; it shows counts, no user data
    # The API documentation is public for now: it documents the API, exposes no data, and keys are what protect the
    # endpoints. Move /docs and /schema.json into ROUTE_ROLES (admin) if the schema itself should stay private.
    "GET /",  # BentoML's Swagger UI page, the same documentation as /docs
    "/docs",
    "/docs.json",
    "/schema.json",
    "/static_content/*",  # BentoML's Swagger UI assets, loaded by /docs
)
"""Routes that need no key."""

T = TypeVar("T")
_UNSET: Any = object()
_CACHE_LIMIT = 1024


class RouteTable(Generic[T]):
    """``"METHOD /path"`` or ``"/path"`` (any method) -> value. A ``{name}`` segment matches one path segment, a
    trailing ``/*`` anything below the prefix. ``HEAD`` matches the ``GET`` entries. Exact paths are one dict lookup;
    pattern results are cached (bounded)."""

    def __init__(self, entries: Mapping[str, T] | Collection[str], value: T | None = None) -> None:
        pairs = entries.items() if isinstance(entries, Mapping) else ((spec, value) for spec in entries)
        self._exact: dict[tuple[str | None, str], T] = {}
        self._patterns: list[tuple[str | None, re.Pattern[str], T]] = []
        for spec, item in pairs:
            method, path = _parse_spec(spec)
            if "{" in path or path.endswith("/*"):
                self._patterns.append((method, _compile(path, spec), item))  # type: ignore[arg-type]
            else:
                self._exact[(method, path)] = item  # type: ignore[assignment]
        self._cache: dict[tuple[str, str], Any] = {}

    def match(self, method: str, path: str) -> T | None:
        if method == "HEAD":
            method = "GET"
        exact = self._exact
        found = exact.get((method, path), _UNSET)
        if found is _UNSET:
            found = exact.get((None, path), _UNSET)
        if found is not _UNSET:
            return found
        if not self._patterns:
            return None
        cached = self._cache.get((method, path), _UNSET)
        if cached is not _UNSET:
            return cached
        result = None
        for wanted, pattern, item in self._patterns:
            if (wanted is None or wanted == method) and pattern.fullmatch(path):
                result = item
                break
        if len(self._cache) < _CACHE_LIMIT:
            self._cache[(method, path)] = result
        return result


def _parse_spec(spec: str) -> tuple[str | None, str]:
    parts = spec.split()
    if len(parts) == 1:
        method, path = None, parts[0]
    elif len(parts) == 2:
        method, path = parts[0].upper(), parts[1]
    else:
        raise ValueError(f"route {spec!r} is not 'METHOD /path' or '/path'")
    if not path.startswith("/"):
        raise ValueError(f"route {spec!r}: the path must start with '/'")
    return method, path


def _compile(path: str, spec: str) -> re.Pattern[str]:
    prefix, below = (path[:-2], True) if path.endswith("/*") else (path, False)
    parts = []
    for segment in prefix.split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            parts.append("[^/]+")
        elif "{" in segment or "}" in segment or "*" in segment:
            raise ValueError(f"route {spec!r}: a parameter must be a whole segment, and '*' only '/*' at the end")
        else:
            parts.append(re.escape(segment))
    return re.compile("/".join(parts) + ("/.*" if below else ""))


@dataclass(frozen=True)
class AccessPolicy:
    """What :class:`AccessMiddleware` enforces. ``routes``: ``"METHOD /path"`` -> the role it needs; ``public``: the
    routes that need no key. ``enforce=False`` (``auth: false``, for local experiments only) lets every request
    through as ``admin``; ``key_ring`` may then be ``None``."""

    key_ring: KeyRing | None
    routes: Mapping[str, str] = field(default_factory=lambda: dict(ROUTE_ROLES))
    public: Collection[str] = PUBLIC_ROUTES
    visitor: Collection[str] = VISITOR_ROUTES
    enforce: bool = True

    def __post_init__(self) -> None:
        for spec, role in self.routes.items():
            if role not in ROLES:
                raise ValueError(f"route {spec!r} needs role {role!r}, which is not one of {', '.join(ROLES)}")
        public = RouteTable(self.public, True)
        clash = [spec for spec in self.routes if public.match(_parse_spec(spec)[0] or "GET", _parse_spec(spec)[1])]
        if clash:
            raise ValueError(f"routes both public and protected: {', '.join(clash)}; list each in one place")
        if self.enforce and self.key_ring is None:
            raise ValueError("auth is on but there is no key ring: set api_keys_file (recstack-keys create ...)")


def caller_role(scope: Mapping[str, Any]) -> str | None:
    """The verified role of the request's key (``collect`` / ``recommend`` / ``admin``), or ``None``."""
    state = scope.get("state")
    return state.get(ROLE_STATE) if isinstance(state, Mapping) else None


def caller_key(scope: Mapping[str, Any]) -> str | None:
    """The verified key's name, or ``None``."""
    state = scope.get("state")
    return state.get(KEY_STATE) if isinstance(state, Mapping) else None


_MISSING = "missing"
_CHALLENGE = b'Bearer realm="recstack"'


def _bearer(headers: Any) -> tuple[bytes | None, str | None]:
    """``(token, None)`` for one well-formed ``Authorization: Bearer <token>``, else ``(None, why)``."""
    values = [value for name, value in headers if name == b"authorization"]
    if not values:
        return None, _MISSING
    if len(values) > 1:
        return None, "more than one Authorization header; send one: 'Authorization: Bearer <key>'"
    scheme, _, token = values[0].strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None, "the Authorization header must be 'Bearer <key>'"
    token = token.strip()
    why = well_formed(token)
    return (None, why) if why else (token, None)


class AccessMiddleware:
    """Enforces an :class:`AccessPolicy`; see the module docstring for the answers and the scope keys it sets."""

    def __init__(self, app: ASGIApp, *, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy
        self._ring = policy.key_ring
        self._roles: RouteTable[str] = RouteTable(policy.routes)
        self._public: RouteTable[bool] = RouteTable(policy.public, True)
        self._visitor: RouteTable[bool] = RouteTable(policy.visitor, True)
        if not policy.enforce:
            logger.warning("auth is off: every request is treated as admin (auth: false is for local experiments)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        if not self.policy.enforce:
            state[ROLE_STATE] = ADMIN
            state[KEY_STATE] = None
            await self.app(scope, receive, send)
            return
        token, why = _bearer(scope.get("headers", ()))
        entry = self._ring.verify(token) if token is not None else None  # type: ignore[union-attr]
        state[ROLE_STATE] = entry.role if entry is not None else None
        state[KEY_STATE] = entry.name if entry is not None else None
        method = scope.get("method", "GET")
        path = scope.get("path", "")
        if method == "OPTIONS" or self._public.match(method, path):
            await self.app(scope, receive, send)
            return
        required = self._roles.match(method, path) or ADMIN
        if why == _MISSING and self._visitor.match(method, path):
            state[ROLE_STATE] = VISITOR  # no key on a page-facing route: the cookie's visitor only
            await self.app(scope, receive, send)
            return
        if entry is not None and (entry.role == required or entry.role == ADMIN):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation; no HTTP answer exists here
            return
        if entry is not None:
            await self._deny(
                send,
                403,
                f"this API key has role {entry.role!r}; this endpoint needs role {required!r}"
                + ("" if required == "admin" else " (or admin)"),
                b'Bearer realm="recstack", error="insufficient_scope"',
            )
        elif why == _MISSING:
            await self._deny(
                send,
                401,
                f"this endpoint needs an API key with role {required!r}: send 'Authorization: Bearer <key>'",
                _CHALLENGE,
            )
        elif why is not None:
            await self._deny(send, 401, why, b'Bearer realm="recstack", error="invalid_request"')
        else:
            await self._deny(
                send,
                401,
                "API key not recognised (mistyped or revoked); ask an admin for a key",
                b'Bearer realm="recstack", error="invalid_token"',
            )

    @staticmethod
    async def _deny(send: Send, status: int, message: str, challenge: bytes) -> None:
        body = {"error": message, "field": "authorization"}
        await send_error(send, status, body, [(b"www-authenticate", challenge)])


async def send_error(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    """A JSON error like ``http_guards.send_json``, with extra headers (``WWW-Authenticate``, ``Retry-After``)."""
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
