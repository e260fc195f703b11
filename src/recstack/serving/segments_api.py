"""Profiles and segments on the service: a small Starlette app routed before BentoML (like the collector) and behind
the same guards, keys and rate limits.

=====================================  ========  ==========================================================================
route                                  role      answer
=====================================  ========  ==========================================================================
GET /users/{id}/profile                analyst   the subject's profile hash (raw id pseudonymised as /recommend does); 404
GET /users/{id}/segments               analyst   the segments the subject is in now (one Redis round trip); 404 unknown
GET /segments                          analyst   every segment: rule, live size (ZCARD), last run, sizes, top items, overlap
GET /segments/{name}                   analyst   one of them
GET /segments/{name}/members           analyst   ``?cursor=&limit=`` (<= 1000) a page of member pseudonyms, ``next_cursor``
GET /segments/{name}/export.csv        analyst   every member pseudonym, streamed page by page (never all in memory)
POST /segments                         admin     ``{name, rule, dry_run, overwrite}``: validate; dry run: size now; else save
GET /dashboard/segments                public    the dashboard page (no data in it: it calls the routes above with a key)
=====================================  ========  ==========================================================================

Members are pseudonyms: the HMAC of the site's user id under the deployment's key (recstack.collect.pseudonymise),
never raw ids. A campaign tool maps them back by computing the same HMAC of its own ids (or keeping the pairs it
computed), which needs the key; nobody can reverse them without it. Visitors without a sign-in appear as their
cookie's pseudonym.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from recstack.collect.records import (
    StreamNames,
    counters_key,
    members_key,
    memberships_key,
    profile_key,
    segments_key,
    tombstone_key,
)
from recstack.serving.demo_site import CONTENT_TYPES, SAFE_NAME, SECURITY_HEADERS
from recstack.serving.online_store import RedisOnlineStore
from recstack.serving.schemas import MAX_ID_LENGTH, SEGMENT_NAME_PATTERN

logger = logging.getLogger(__name__)

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_CURSOR = 128
JSON_ROUTES: tuple[str, ...] = ("/segments",)
DASHBOARD = "/dashboard/segments"
STATIC_PREFIX = "/dashboard/static/"
UNAVAILABLE = {"error": "the online store (Redis) is unavailable; retry shortly", "field": "service"}


def routed_here(scope: Mapping[str, Any]) -> bool:
    """Whether a request is this app's: the segment routes, the dashboard, and ``GET /users/<id>/profile|segments``
    (other ``/users/`` requests, e.g. ``DELETE /users/<id>``, stay the collector's)."""
    path = scope.get("path", "")
    if path == "/segments" or path.startswith("/segments/") or path == DASHBOARD or path.startswith(STATIC_PREFIX):
        return True
    return (
        path.startswith("/users/")
        and path.endswith(("/profile", "/segments"))
        and scope.get("method", "GET") in ("GET", "HEAD")
    )


def dispatch(app: Any, first: Any) -> Any:
    """Requests :func:`routed_here` go to ``first`` (this app, guarded), the rest to ``app``."""

    async def route(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "http" and routed_here(scope):
            await first(scope, receive, send)
        else:
            await app(scope, receive, send)

    return route


class SaveSegment(BaseModel):
    """``POST /segments``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(pattern=SEGMENT_NAME_PATTERN, description="lower-case letters, digits and _")
    rule: Any = Field(description="a condition as configs/segments/*.yaml writes it, as JSON")
    dry_run: bool = Field(default=False, description="true: validate and count the members now; save nothing")
    overwrite: bool = Field(default=False, description="replace an API rule of the same name (YAML rules win)")


@dataclass(frozen=True)
class SegmentsApiConfig:
    """What the app needs from the service: where the keys are, how a raw id becomes the subject, the lake for dry
    runs, and the served items' titles (None while the worker's bundle is not loaded)."""

    names: StreamNames
    store: RedisOnlineStore
    subject: Callable[[str], str]
    redis_url: str
    lake: str | None
    items_path: str | None
    horizon_h: int
    export_page: int
    titles: Callable[[], Mapping[str, str] | None]
    static_dirs: tuple[Path, ...] = ()


def _error(status: int, field: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "field": field, **extra}, status_code=status)


def _unavailable() -> JSONResponse:
    return JSONResponse(UNAVAILABLE, status_code=503, headers={"retry-after": "1"})


def _user_id(request: Request) -> str | None:
    user_id = request.path_params["user_id"]
    if not user_id or len(user_id) > MAX_ID_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in user_id):
        return None
    return user_id


def _value(raw: bytes) -> Any:
    """A profile field: JSON when it is JSON (numbers, lists, maps), else the text."""
    text = raw.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _decode_profile(fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """A profile hash as typed values: recstack.profiles.online.decode_profile (by the profile schema, the one home of
    the encoding) when that module is installed, else each field as JSON when it parses, else as text."""
    try:
        from recstack.profiles.online import decode_profile
    except ImportError:
        return {k.decode("utf-8", "replace"): _value(v) for k, v in sorted(fields.items())}
    return dict(sorted(decode_profile(dict(fields)).items()))


def _json(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def rule_field(path: str, name: str) -> str:
    """A RuleError path (``segments.<name>.all[1].count.within``) in the request body's terms (``rule.all[1]...``)."""
    head = f"segments.{name}"
    if path.startswith(head):
        return "rule" + path[len(head) :]
    return "rule"


class SegmentsApi:
    """The routes' handlers over one :class:`SegmentsApiConfig`."""

    def __init__(self, config: SegmentsApiConfig) -> None:
        self.config = config
        self.names = config.names
        self._dry_run_slot = asyncio.Semaphore(1)  # a dry run scans the lake: one at a time per worker
        self._titles: Mapping[str, str] | None = None
        self._assets = _load_assets(config.static_dirs)

    # -- users ----------------------------------------------------------------------------------------------------

    async def profile(self, request: Request) -> Response:
        user_id = _user_id(request)
        if user_id is None:
            return _error(400, "user_id", "user_id must be 1-128 printable characters")
        subject = self.config.subject(user_id)
        names = self.names

        async def call(client) -> list:  # type: ignore[no-untyped-def]
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(profile_key(names, subject))
            pipe.smembers(memberships_key(names, subject))
            pipe.sismember(tombstone_key(names), subject)
            return await pipe.execute()

        replies = await self.config.store.call_async(call)
        if replies is None:
            return _unavailable()
        fields, segments, erased = replies
        if erased or not fields:
            return _error(
                404, "user_id", "no profile for this user (unknown, erased, or not built yet: recstack-profiles build)"
            )
        profile = _decode_profile(fields)
        return JSONResponse(
            {
                "user_id": user_id,
                "subject": subject,
                "profile": profile,
                "segments": sorted(m.decode() for m in segments),
            },
            headers={"cache-control": "no-store"},
        )

    async def user_segments(self, request: Request) -> Response:
        """One round trip: memberships, and whether the subject has a profile or counters (else it is unknown)."""
        user_id = _user_id(request)
        if user_id is None:
            return _error(400, "user_id", "user_id must be 1-128 printable characters")
        subject = self.config.subject(user_id)
        names = self.names

        async def call(client) -> list:  # type: ignore[no-untyped-def]
            pipe = client.pipeline(transaction=False)
            pipe.smembers(memberships_key(names, subject))
            pipe.exists(profile_key(names, subject), counters_key(names, subject))
            pipe.sismember(tombstone_key(names), subject)
            return await pipe.execute()

        replies = await self.config.store.call_async(call)
        if replies is None:
            return _unavailable()
        segments, known, erased = replies
        if erased or (not segments and not known):
            return _error(404, "user_id", "no profile, counters or segments for this user (unknown or erased)")
        return JSONResponse(
            {"user_id": user_id, "segments": sorted(m.decode() for m in segments)},
            headers={"cache-control": "no-store"},
        )

    # -- segments -------------------------------------------------------------------------------------------------

    def _item_titles(self) -> Mapping[str, str]:
        if self._titles is None:
            self._titles = self.config.titles()
        return self._titles or {}

    def _entry(self, name: str, meta: dict[str, Any], registered: dict[str, Any], size: int) -> dict[str, Any]:
        titles = self._item_titles()
        top_items = [
            {"item_id": str(pair[0]), "title": titles.get(str(pair[0]), str(pair[0])), "n": pair[1]}
            for pair in meta.get("top_items") or []
            if isinstance(pair, list) and len(pair) == 2
        ]
        top_categories = [
            {"category": str(pair[0]), "n": pair[1]}
            for pair in meta.get("top_categories") or []
            if isinstance(pair, list) and len(pair) == 2
        ]
        return {
            "name": name,
            "rule": registered.get("rule", meta.get("rule")),
            "source": registered.get("source", meta.get("source")),
            "saved_at": registered.get("saved_at"),
            "size": int(size),
            "last_run": meta.get("last_run"),
            "last_run_size": meta.get("size"),
            "sizes": meta.get("sizes") or [],
            "top_items": top_items,
            "top_categories": top_categories,
            "overlap": meta.get("overlap") or {},
        }

    async def list_segments(self, request: Request) -> Response:
        names = self.names

        async def read(client) -> list:  # type: ignore[no-untyped-def]
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(segments_key(names, "meta"))
            pipe.hgetall(segments_key(names, "rules"))
            return await pipe.execute()

        replies = await self.config.store.call_async(read)
        if replies is None:
            return _unavailable()
        meta = {k.decode(): _json(v) for k, v in replies[0].items()}
        rules = {k.decode(): _json(v) for k, v in replies[1].items()}
        ordered = sorted(set(meta) | set(rules))

        async def sizes(client) -> list:  # type: ignore[no-untyped-def]
            pipe = client.pipeline(transaction=False)
            for name in ordered:
                pipe.zcard(members_key(names, name))
            return await pipe.execute()

        counts = await self.config.store.call_async(sizes) if ordered else []
        if counts is None:
            return _unavailable()
        entries = [
            self._entry(name, meta.get(name, {}), rules.get(name, {}), n)
            for name, n in zip(ordered, counts, strict=True)
        ]
        return JSONResponse({"segments": entries}, headers={"cache-control": "no-store"})

    async def _known(self, name: str, client_calls: Callable[[Any], None]) -> list | None:
        """One round trip: whether ``name`` is a segment (in meta or rules), plus what ``client_calls`` queues."""
        names = self.names

        async def call(client) -> list:  # type: ignore[no-untyped-def]
            pipe = client.pipeline(transaction=False)
            pipe.hget(segments_key(names, "meta"), name)
            pipe.hget(segments_key(names, "rules"), name)
            client_calls(pipe)
            return await pipe.execute()

        return await self.config.store.call_async(call)

    async def one_segment(self, request: Request) -> Response:
        name = request.path_params["name"]
        replies = await self._known(name, lambda pipe: pipe.zcard(members_key(self.names, name)))
        if replies is None:
            return _unavailable()
        meta, registered, size = replies
        if meta is None and registered is None:
            return _unknown_segment(name)
        return JSONResponse(
            self._entry(name, _json(meta), _json(registered), size), headers={"cache-control": "no-store"}
        )

    async def members(self, request: Request) -> Response:
        name = request.path_params["name"]
        cursor = request.query_params.get("cursor", "")
        if len(cursor) > MAX_CURSOR or any(ord(c) < 33 or ord(c) == 127 for c in cursor):
            return _error(
                400, "cursor", f"cursor must be a next_cursor this endpoint returned (<= {MAX_CURSOR} characters)"
            )
        raw_limit = request.query_params.get("limit", str(DEFAULT_PAGE))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
            return _error(400, "limit", f"limit must be a whole number from 1 to {MAX_PAGE}, got {raw_limit[:20]!r}")
        limit = int(raw_limit)
        key = members_key(self.names, name)
        start = f"({cursor}" if cursor else "-"

        def queue(pipe) -> None:  # type: ignore[no-untyped-def]
            pipe.zrange(key, start, "+", bylex=True, offset=0, num=limit + 1)
            pipe.zcard(key)

        replies = await self._known(name, queue)
        if replies is None:
            return _unavailable()
        meta, registered, page, size = replies
        if meta is None and registered is None:
            return _unknown_segment(name)
        members = [m.decode() for m in page[:limit]]
        next_cursor = members[-1] if len(page) > limit else None
        return JSONResponse(
            {"segment": name, "size": size, "members": members, "next_cursor": next_cursor},
            headers={"cache-control": "no-store"},
        )

    async def export(self, request: Request) -> Response:
        """The members as CSV, read ``export_page`` at a time while the response streams: memory stays one page."""
        name = request.path_params["name"]
        key = members_key(self.names, name)
        replies = await self._known(
            name, lambda pipe: pipe.zrange(key, "-", "+", bylex=True, offset=0, num=self.config.export_page)
        )
        if replies is None:
            return _unavailable()
        meta, registered, first = replies
        if meta is None and registered is None:
            return _unknown_segment(name)
        page_size = self.config.export_page
        store = self.config.store

        async def rows() -> AsyncIterator[bytes]:
            yield b"pseudonym\r\n"
            page = first
            while page:
                out = io.StringIO()
                writer = csv.writer(out, lineterminator="\r\n")
                writer.writerows([m.decode("utf-8", "replace")] for m in page)
                yield out.getvalue().encode()
                if len(page) < page_size:
                    return
                cursor = page[-1].decode("utf-8", "replace")

                async def more(client, cursor=cursor):  # type: ignore[no-untyped-def]
                    return await client.zrange(key, f"({cursor}", "+", bylex=True, offset=0, num=page_size)

                page = await store.call_async(more)
                if page is None:
                    # The status line is sent: the only honest signal left is an incomplete response.
                    logger.warning("export of segment %r stopped: the online store became unavailable", name)
                    raise ConnectionError("the online store became unavailable during the export")

        return StreamingResponse(
            rows(),
            media_type="text/csv; charset=utf-8",
            headers={
                "content-disposition": f'attachment; filename="{name}-members.csv"',
                "cache-control": "no-store",
                "x-recstack-members": "pseudonyms",
            },
        )

    async def save(self, request: Request) -> Response:
        try:
            body = SaveSegment.model_validate_json(await request.body())
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first.get("loc", ())) or "body"
            return _error(400, field, first.get("msg", "invalid body"))
        from recstack.profiles.rules import RuleError, parse_rule

        try:
            segment = parse_rule(body.name, body.rule, self.config.horizon_h, source="api")
        except RuleError as error:
            return _error(400, rule_field(error.path, body.name), error.reason, path=error.path)
        if body.dry_run:
            return await self._dry_run(segment)
        replies = await self._known(body.name, lambda pipe: None)
        if replies is None:
            return _unavailable()
        existing = _json(replies[1])
        if existing.get("source") == "yaml":
            return _error(409, "name", f"segment {body.name!r} is declared in configs/segments/*.yaml; change it there")
        if replies[1] is not None and not body.overwrite:
            return _error(409, "name", f"segment {body.name!r} exists; send overwrite: true to replace it")
        try:
            saved = await run_in_threadpool(self._save_sync, segment, body.overwrite)
        except OSError as error:
            logger.warning("saving a segment failed: %s", error)
            return _unavailable()
        if not saved:
            return _error(
                409, "name", f"segment {body.name!r} was created meanwhile; send overwrite: true to replace it"
            )
        return JSONResponse(
            {
                "name": segment.name,
                "rule": segment.rule,
                "saved": True,
                "source": "api",
                "note": "members appear after the next recstack-segments run (and in real time with follow)",
            },
            status_code=201,
        )

    def _save_sync(self, segment: Any, overwrite: bool) -> bool:
        """The registry's one writer (recstack.profiles.segments_online.save_rule), on a short-lived sync client:
        saves are rare, and the version counter it bumps is what makes the real-time follower reload."""
        import redis

        from recstack.profiles.segments_online import save_rule

        client = redis.Redis.from_url(self.config.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return save_rule(client, self.names, segment, "api", overwrite=overwrite)
        except redis.RedisError as error:
            raise OSError(str(error)) from error
        finally:
            client.close()

    async def _dry_run(self, segment: Any) -> Response:
        lake = self.config.lake
        if not lake or not Path(lake).expanduser().is_dir():
            return _error(409, "dry_run", f"no event lake at {lake!r} to count members in; set segments_lake")
        if self._dry_run_slot.locked():
            return JSONResponse(
                {"error": "a dry run is already running in this worker; retry shortly", "field": "dry_run"},
                status_code=503,
                headers={"retry-after": "2"},
            )
        from recstack.profiles.segments_batch import dry_run_size, iso

        async with self._dry_run_slot:
            as_of = int(time.time() * 1000)
            started = time.perf_counter()
            try:
                size = await run_in_threadpool(
                    dry_run_size, lake, self.config.items_path, segment, as_of, self.config.horizon_h
                )
            except (ValueError, OSError, ImportError) as error:  # unreadable lake or items, or no duckdb: say which
                return _error(409, "dry_run", f"the dry run could not read its inputs: {error}")
        return JSONResponse(
            {
                "name": segment.name,
                "rule": segment.rule,
                "saved": False,
                "size": int(size),
                "as_of": iso(as_of),
                "seconds": round(time.perf_counter() - started, 3),
            }
        )

    # -- the dashboard --------------------------------------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        return self._asset("segments.html", request)

    async def static(self, request: Request) -> Response:
        return self._asset(request.path_params["name"], request)

    def _asset(self, name: str, request: Request) -> Response:
        found = self._assets.get(name)
        if found is None:
            hint = (
                " (the charting library is vendored by `make vendor`)" if name.startswith(("chart", "vendor")) else ""
            )
            return _error(404, "path", f"no dashboard file {name[:64]!r}{hint}")
        body, content_type, etag = found
        headers = {"etag": etag, "cache-control": "no-cache", **SECURITY_HEADERS_STR}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=content_type, headers=headers)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/users/{user_id:path}/profile", self.profile, methods=["GET"]),
                Route("/users/{user_id:path}/segments", self.user_segments, methods=["GET"]),
                Route("/segments", self.list_segments, methods=["GET"]),
                Route("/segments", self.save, methods=["POST"]),
                Route("/segments/{name}", self.one_segment, methods=["GET"]),
                Route("/segments/{name}/members", self.members, methods=["GET"]),
                Route("/segments/{name}/export.csv", self.export, methods=["GET"]),
                Route(DASHBOARD, self.dashboard, methods=["GET"]),
                Route(STATIC_PREFIX + "{name}", self.static, methods=["GET"]),
            ]
        )


SECURITY_HEADERS_STR = {k.decode(): v.decode() for k, v in SECURITY_HEADERS}


def _unknown_segment(name: str) -> JSONResponse:
    return _error(404, "name", f"no segment named {name[:64]!r}; GET /segments lists them")


def _load_assets(directories: tuple[Path, ...]) -> dict[str, tuple[bytes, str, str]]:
    """The dashboard's files by name (regular files with a safe name and a known type), read once."""
    import hashlib

    assets: dict[str, tuple[bytes, str, str]] = {}
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            content_type = CONTENT_TYPES.get(path.suffix.lower())
            if content_type and SAFE_NAME.match(path.name) and path.is_file() and not path.is_symlink():
                body = path.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                assets[path.name] = (body, content_type.decode(), etag)
    return assets


def service_titles() -> Mapping[str, str] | None:
    """Item id -> title of the current BentoML service's bundle; None while the worker has not loaded it."""
    import bentoml

    try:
        service = bentoml.get_current_service()
    except Exception:
        return None
    pipeline = getattr(service, "pipeline", None)
    if pipeline is None:
        return None
    return dict(zip(pipeline.item_ids.tolist(), pipeline.item_titles.tolist(), strict=True))


def build(settings: Any, pseudonymise: Callable[[str], str] | None, static_root: Path) -> SegmentsApi:
    """The app of a service's settings (recstack.serving.settings.ServeSettings). ``pseudonymise``: the collector's
    user pseudonymiser, None when the collector is off (the online keys then hold the ids as sent, as /recommend's
    do). ``static_root``: serving/static (the page in ``dashboard/``, the charting library in ``vendor/``)."""
    return SegmentsApi(
        SegmentsApiConfig(
            names=settings.collector.names,
            store=RedisOnlineStore(settings.redis_store()),
            subject=pseudonymise or (lambda user_id: user_id),
            redis_url=settings.redis_url,
            lake=settings.segments_lake,
            items_path=settings.segments_items_path,
            horizon_h=settings.segments_horizon_days * 24,
            export_page=settings.segments_export_page,
            titles=service_titles,
            static_dirs=(static_root / "dashboard", static_root / "vendor"),
        )
    )
