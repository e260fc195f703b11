"""The collector's HTTP side: a Starlette app with ``POST /events``, ``GET /pixel.gif``, ``POST /identify``,
``POST``/``GET /consent`` and ``GET /privacy``.

It is mounted in the recommender service by default (serving/service.py: one ``recstack-serve`` runs everything) and
is its own BentoML service too (serving/collector.py) for sites that scale intake apart from recommendations.

Every request: validate (4xx naming the field), minimise at the door (recstack.collect.intake), check consent and
erasure for each subject (events of subjects without ``analytics`` consent are not stored, and counted by reason),
then append one stream entry; ``recstack-collect consume`` moves entries into the lake. Redis unavailable: 503 with
``Retry-After``. The visitor cookie (random 128-bit id, HttpOnly, first party) is read or set on every answer.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from recstack.collect.events import MAX_ID, BadEvent, parse_events
from recstack.collect.intake import ClientContext, Intake
from recstack.collect.openapi import PATH as OPENAPI_PATH
from recstack.collect.openapi import collector_openapi
from recstack.collect.producer import ERASED, NO_CONSENT, STORED, Producer, StaleConsent, Unavailable
from recstack.collect.purposes import CONSENT_COOKIE, PURPOSES, ROLE_STATE, VISITOR
from recstack.collect.settings import CollectSettings

# The smallest transparent 1x1 GIF (43 bytes), the classic tracking pixel.
PIXEL_GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
VISITOR_HEX = 32  # 128-bit random visitor ids
Counter = Callable[[str, str, int], None]
"""``count(outcome, reason, n)``: accepted / dropped events for /metrics (outcome accepted|dropped)."""


def _no_count(outcome: str, reason: str, n: int) -> None:
    return None


class IdentifyRequest(BaseModel):
    """``POST /identify``: this visitor (cookie, or ``anonymous_id``) is the signed-in ``user_id``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    user_id: str = Field(min_length=1, max_length=MAX_ID, pattern=r"^[^\x00-\x1f\x7f]+$")
    anonymous_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID, pattern=r"^[^\x00-\x1f\x7f]+$")


class ConsentRequest(BaseModel):
    """``POST /consent``: the purposes a user (``user_id``) or this visitor (cookie) agrees to; unnamed ones are no."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    user_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID, pattern=r"^[^\x00-\x1f\x7f]+$")
    purposes: dict[str, bool]
    policy_version: str | None = Field(
        default=None, max_length=64, description="the notice version shown; current if omitted"
    )
    timestamp: float | int | None = Field(default=None, description="when the choice was made, epoch s (replay guard)")


def _error(status: int, field: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def _is_visitor(request: Request) -> bool:
    """A keyless call from a site's page (serving's access middleware): it may act only as the cookie's visitor."""
    state = request.scope.get("state")
    return isinstance(state, dict) and state.get(ROLE_STATE) == VISITOR


def _visitor_only(field: str) -> JSONResponse:
    return _error(
        401,
        "authorization",
        f"{field} needs an API key with role 'collect' (send 'Authorization: Bearer <key>'); without a key a page acts "
        "only as its visitor cookie",
        {"WWW-Authenticate": 'Bearer realm="recstack"'},
    )


def _unavailable(error: Unavailable) -> JSONResponse:
    return _error(503, "body", f"{error}; retry later", {"Retry-After": str(error.retry_after_s)})


class Collector:
    """The collector's state for one process: settings, the door (Intake), the Redis side (Producer)."""

    def __init__(
        self,
        settings: CollectSettings,
        intake: Intake,
        count: Counter = _no_count,
        notice: Callable[[], str] | None = None,
    ) -> None:
        self.settings = settings
        self.intake = intake
        self.producer = Producer(settings)
        self.count = count
        self.notice = notice

    # -- cookies -------------------------------------------------------------------------------------------------
    def visitor(self, request: Request) -> tuple[str, bool]:
        """``(visitor id, new)``: the cookie's id when well formed, else a fresh random one (oversized or tampered
        cookies are replaced, never parsed further)."""
        raw = request.cookies.get(self.settings.cookie_name, "")
        if len(raw) == VISITOR_HEX and all(c in "0123456789abcdef" for c in raw):
            return raw, False
        return secrets.token_hex(VISITOR_HEX // 2), True

    def set_visitor(self, response: Response, visitor: str) -> None:
        s = self.settings
        response.set_cookie(
            s.cookie_name,
            visitor,
            max_age=s.cookie_max_age_s,
            path="/",
            httponly=True,
            secure=s.cookie_secure or s.cookie_samesite == "none",
            samesite=s.cookie_samesite,
        )

    def client(self, request: Request, visitor: str, source: str) -> ClientContext:
        ip = request.client.host if request.client else None
        return ClientContext(
            user_agent=request.headers.get("user-agent"),
            ip=ip,
            visitor_id=visitor,
            referrer=request.headers.get("referer"),
            source=source,
        )

    # -- storing -------------------------------------------------------------------------------------------------
    async def store(self, rows: list[dict]) -> dict:
        """Consent and erasure checks and one stream entry, in one Redis call. Returns the response body."""
        _, status = await self.producer.store_events(rows)
        kept = [row for row in rows if status[row["user_id"]] == STORED]
        dropped = {
            "no_analytics_consent": sum(status[row["user_id"]] == NO_CONSENT for row in rows),
            "erased": sum(status[row["user_id"]] == ERASED for row in rows),
        }
        if kept:
            self.count("accepted", "stored", len(kept))
        for reason, n in dropped.items():
            if n:
                self.count("dropped", reason, n)
        body: dict = {"accepted": len(kept), "dropped": sum(dropped.values())}
        reasons = [reason for reason, n in dropped.items() if n]
        if reasons:
            body["reason"] = ",".join(reasons)
        body["event_ids"] = [row["event_id"] for row in kept]
        return body

    # -- endpoints -----------------------------------------------------------------------------------------------
    async def events(self, request: Request) -> Response:
        if not _is_json(request):
            return _error(415, "content-type", "POST /events takes application/json only")
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return _error(400, "body", f"the body is not valid JSON: {error}")
        visitor, new = self.visitor(request)
        try:
            events, batch = parse_events(body, self.settings.max_batch)
            if _is_visitor(request) and any(e.user_id or e.anonymous_id for e in events):
                return _visitor_only("an event with user_id or anonymous_id")
            rows = self.intake.rows(events, self.client(request, visitor, "api"), _now_ms(), batch)
        except BadEvent as error:
            self.count("rejected", "invalid", len(body["events"]) if batch_like(body) else 1)
            return _error(error.status, error.field, str(error))
        try:
            result = await self.store(rows)
        except Unavailable as error:
            return _unavailable(error)
        response = JSONResponse(result, status_code=202)
        if new:
            self.set_visitor(response, visitor)
        return response

    async def pixel(self, request: Request) -> Response:
        """``GET /pixel.gif?e=view&i=<item>[&u=<user>][&v=<value>][&tz=<offset>][&r=<referrer>][&id=<event id>]``.
        Always the GIF (an image tag cannot show an error); a bad or refused hit is counted, not stored."""
        visitor, new = self.visitor(request)
        response = Response(PIXEL_GIF, media_type="image/gif", headers={"Cache-Control": "no-store, max-age=0"})
        if new:
            self.set_visitor(response, visitor)
        q = request.query_params
        fields: dict = {"event_type": q.get("e", "view")}
        for key, name in (("i", "item_id"), ("u", "user_id"), ("r", "referrer"), ("id", "event_id")):
            if q.get(key):
                fields[name] = q[key]
        try:
            if q.get("v"):
                fields["value"] = float(q["v"])
            if q.get("tz"):
                fields["tz_offset_min"] = int(q["tz"])
            if q.get("t"):
                fields["timestamp"] = float(q["t"])
            events, _ = parse_events(fields, 1)
            rows = self.intake.rows(events, self.client(request, visitor, "pixel"), _now_ms(), False)
            await self.store(rows)
        except (BadEvent, ValueError):
            self.count("rejected", "invalid_pixel", 1)
        except Unavailable:
            self.count("dropped", "store_unavailable", 1)  # the one place a refusal cannot be answered with a 503
        return response

    async def identify(self, request: Request) -> Response:
        if not _is_json(request):
            return _error(415, "content-type", "POST /identify takes application/json only")
        try:
            req = IdentifyRequest.model_validate_json(await request.body())
        except ValidationError as error:
            return _validation_error(error)
        visitor, new = self.visitor(request)
        anonymous = req.anonymous_id or (None if new else visitor)
        if anonymous is None:
            return _error(400, "anonymous_id", "anonymous_id is required when the request has no visitor cookie")
        pseudo = self.intake.pseudo
        row = {
            "anonymous_id": pseudo.visitor(anonymous),
            "user_id": pseudo.user(req.user_id),
            "received_ts": _now_ms(),
        }
        try:
            admission = await self.producer.admit([row["user_id"]])
            if row["user_id"] in admission.erased:
                return JSONResponse({"linked": False, "reason": "erased"}, status_code=202)
            await self.producer.append("aliases", [row])
        except Unavailable as error:
            return _unavailable(error)
        return JSONResponse({"linked": True}, status_code=202)

    def consent_subject(self, request: Request, user_id: str | None) -> tuple[str, str, bool]:
        """``(pseudonym, visitor, new cookie)``: the user's when a user_id is given, else this visitor's."""
        visitor, new = self.visitor(request)
        pseudo = self.intake.pseudo
        return (pseudo.user(user_id) if user_id else pseudo.visitor(visitor)), visitor, new

    async def consent(self, request: Request) -> Response:
        if request.method == "GET":
            user_id = request.query_params.get("user_id")
            if user_id and _is_visitor(request):
                return _visitor_only("a user's consent")
            subject, visitor, new = self.consent_subject(request, user_id)
            try:
                state = await self.producer.get_consent(subject)
            except Unavailable as error:
                return _unavailable(error)
            state["current_policy_version"] = self.settings.policy_version
            response = JSONResponse(state)
        else:
            if not _is_json(request):
                return _error(415, "content-type", "POST /consent takes application/json only")
            try:
                req = ConsentRequest.model_validate_json(await request.body())
            except ValidationError as error:
                return _validation_error(error)
            if req.user_id and _is_visitor(request):
                return _visitor_only("a user's consent")
            unknown = sorted(set(req.purposes) - set(PURPOSES))
            if unknown:
                return _error(400, "purposes", f"unknown purpose(s) {unknown}; the purposes are {list(PURPOSES)}")
            subject, visitor, new = self.consent_subject(request, req.user_id)
            stamp = int(req.timestamp * 1000) if req.timestamp is not None else None
            try:
                state = await self.producer.set_consent(
                    subject, req.purposes, req.policy_version or self.settings.policy_version, stamp
                )
            except StaleConsent as error:
                return _error(409, error.field, str(error))
            except Unavailable as error:
                return _unavailable(error)
            response = JSONResponse(state)
            if not req.user_id:  # the banner reads this to know a choice was made (it holds no id)
                choice = "&".join(f"{p}={int(state['purposes'][p])}" for p in PURPOSES)
                response.set_cookie(
                    CONSENT_COOKIE,
                    quote(choice, safe="=&"),
                    max_age=self.settings.cookie_max_age_s,
                    path="/",
                    httponly=False,
                    secure=self.settings.cookie_secure or self.settings.cookie_samesite == "none",
                    samesite=self.settings.cookie_samesite,
                )
        if new:
            self.set_visitor(response, visitor)
        return response

    async def privacy(self, request: Request) -> Response:
        if self.notice is None:
            return _error(404, "path", "no privacy notice is configured")
        return HTMLResponse(self.notice(), headers={"Cache-Control": "no-cache"})

    async def erase(self, request: Request) -> Response:
        """``DELETE /users/{user_id}`` (admin role): at once, for every worker, the user is treated as erased (a
        tombstone checked by /recommend, the collector and the consumer), and their recent activity, consent and
        profile keys are removed from Redis. The lake is rewritten by ``recstack-collect erase`` and the next export
        drops them (recstack.collect.lake_admin, recstack.export). Idempotent: an unknown id is also 204."""
        user_id = request.path_params["user_id"]
        if not user_id or len(user_id) > MAX_ID or any(ord(c) < 32 or ord(c) == 127 for c in user_id):
            return _error(400, "user_id", "user_id must be 1-128 printable characters")
        subject = self.intake.pseudo.user(user_id)
        try:
            await self.producer.erase(subject)
        except Unavailable as error:
            return _unavailable(error)
        return Response(status_code=204)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(collector_openapi(self.settings.max_batch, IdentifyRequest, ConsentRequest))

    def app(self) -> Starlette:
        routes = [
            Route("/events", self.events, methods=["POST"]),
            Route("/pixel.gif", self.pixel, methods=["GET"]),
            Route("/identify", self.identify, methods=["POST"]),
            Route("/consent", self.consent, methods=["GET", "POST"]),
            Route("/privacy", self.privacy, methods=["GET"]),
            Route(OPENAPI_PATH, self.openapi, methods=["GET"]),
            Route("/users/{user_id:path}", self.erase, methods=["DELETE"]),
        ]
        middleware = []
        if self.settings.cors_origins:
            from starlette.middleware import Middleware
            from starlette.middleware.cors import CORSMiddleware

            # Credentials (the visitor cookie) only for the listed origins; JSON bodies need a preflight, which
            # Starlette answers for them and refuses for anyone else.
            middleware.append(
                Middleware(
                    CORSMiddleware,
                    allow_origins=list(self.settings.cors_origins),
                    allow_methods=["GET", "POST"],
                    allow_headers=["content-type", "authorization"],
                    allow_credentials=True,
                    max_age=600,
                )
            )
        return Starlette(routes=routes, middleware=middleware)


def batch_like(body: object) -> bool:
    return isinstance(body, dict) and isinstance(body.get("events"), list)


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json"


def _validation_error(error: ValidationError) -> JSONResponse:
    first = error.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    return _error(400, field, f"{field}: {first['msg']}")


def _now_ms() -> int:
    return int(time.time() * 1000)


def build_collector(
    settings: CollectSettings,
    vocabulary_path: str,
    count: Counter = _no_count,
    notice: Callable[[], str] | None = None,
) -> Collector:
    """A collector for one deployment: reads the pseudonymisation key (a clear error without one), the vocabulary
    and the optional GeoIP file once."""
    from recstack.collect.geo import GeoLookup
    from recstack.collect.pseudonymise import Pseudonymiser
    from recstack.collect.vocabulary import Vocabulary

    geo = GeoLookup(settings.geoip_db) if settings.geoip_db else None
    intake = Intake(settings, Pseudonymiser(settings.hmac_key()), Vocabulary.load(vocabulary_path), geo)
    return Collector(settings, intake, count, notice)
