"""The demo storefront (``GET /demo``): a product grid, a "Recommended for you" shelf and the collector's tracker.

An ASGI middleware like :class:`recstack.serving.http_guards.ReadinessMiddleware`, so the page is served by the same
worker as ``/recommend`` and ``/events`` (same origin: the visitor cookie and ``navigator.sendBeacon`` need no CORS)
without adding BentoML routes. It answers three kinds of path and passes everything else on:

* ``GET /demo``: ``demo.html`` from the static folder;
* ``GET /demo/static/<name>``: only the files the folder held when the middleware was built, looked up by exact name
  (so ``..``, encoded or not, and any other path cannot reach the file system);
* ``GET /demo/catalogue.json``: the products, most popular first, from the ``catalogue`` callable (encoded once).

Unknown paths reach middlewares rewritten by :func:`~recstack.serving.http_guards.collapse_unknown_paths`; this one
reads the original path, so it must sit outside (be added before) ``RequestGuardMiddleware``, which answers them 404.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recstack.serving.http_guards import ORIGINAL_PATH, ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from recstack.serving.pipeline import Pipeline

PREFIX = "/demo"
CATALOGUE_SIZE = 48

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
}
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Everything the page uses is same-origin (no CDN); inline scripts and styles are refused, so injected markup is inert.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


@dataclass(frozen=True)
class CatalogueItem:
    item_id: str
    title: str
    categories: tuple[str, ...]


def catalogue_of(pipeline: Pipeline, limit: int = CATALOGUE_SIZE) -> list[CatalogueItem]:
    """Up to ``limit`` items of a pipeline, most popular first (then the rest in catalogue order)."""
    names = sorted(pipeline.category_ids, key=pipeline.category_ids.__getitem__)
    order: list[int] = []
    seen: set[int] = set()
    for row in [*pipeline.popularity.overall.tolist(), *range(pipeline.n_items)]:
        if len(order) >= limit:
            break
        if row not in seen:
            seen.add(row)
            order.append(int(row))
    return [
        CatalogueItem(
            item_id=str(pipeline.item_ids[row]),
            title=str(pipeline.item_titles[row]),
            categories=tuple(names[c] for c in pipeline.category_matrix[row].nonzero()[0].tolist() if c < len(names)),
        )
        for row in order
    ]


def service_catalogue() -> list[CatalogueItem] | None:
    """The catalogue of the current BentoML service's pipeline; None while the worker has not loaded its bundle."""
    import bentoml

    try:
        service = bentoml.get_current_service()
    except Exception:
        return None
    pipeline = getattr(service, "pipeline", None)
    return None if pipeline is None else catalogue_of(pipeline)


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: bytes
    etag: bytes


def _asset(body: bytes, content_type: bytes) -> _Asset:
    return _Asset(body, content_type, b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"')


def load_static(directory: Path) -> dict[str, _Asset]:
    """The servable files of ``directory`` by name: regular files (not links) with a safe name and a known type."""
    if not directory.is_dir():
        raise FileNotFoundError(f"demo static folder {directory} does not exist; it ships as serving/static")
    assets = {}
    for path in sorted(directory.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix.lower())
        if content_type and SAFE_NAME.match(path.name) and path.is_file() and not path.is_symlink():
            assets[path.name] = _asset(path.read_bytes(), content_type)
    if "demo.html" not in assets:
        raise FileNotFoundError(f"{directory} has no demo.html; the storefront cannot be served")
    return assets


class DemoSiteMiddleware:
    """Serves the storefront under :data:`PREFIX`; ``catalogue`` returns the products (None: not loaded yet, 503)."""

    def __init__(
        self, app: ASGIApp, *, catalogue: Callable[[], Sequence[CatalogueItem] | None], static_dir: str | Path
    ) -> None:
        self.app = app
        self.catalogue = catalogue
        self.assets = load_static(Path(static_dir))
        self._catalogue_asset: _Asset | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get(ORIGINAL_PATH) or scope.get("path", "")
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, _error(f"{path[:80]!r} only answers GET", "method"), [(b"allow", b"GET, HEAD")])
            return
        asset = self._find(path)
        if asset is None:
            if path == PREFIX + "/catalogue.json":
                error = _error("the catalogue is not loaded yet (the worker is starting); retry shortly", "service")
                await _respond(send, 503, error, [(b"retry-after", b"1")])
                return
            await _respond(send, 404, _error(f"no demo file at {path[:80]!r}", "path"))
            return
        if _header(scope, b"if-none-match") == asset.etag:
            await _respond(send, 304, _Asset(b"", asset.content_type, asset.etag))
            return
        await _respond(send, 200, asset, head=method == "HEAD")

    def _find(self, path: str) -> _Asset | None:
        if path in (PREFIX, PREFIX + "/"):
            return self.assets["demo.html"]
        if path == PREFIX + "/catalogue.json":
            return self._catalogue()
        name = path.removeprefix(PREFIX + "/static/")
        return self.assets.get(name) if name != path else None

    def _catalogue(self) -> _Asset | None:
        """Encoded once: the pipeline is read-only for the worker's life."""
        if self._catalogue_asset is None:
            items = self.catalogue()
            if items is None:
                return None
            body = {
                "items": [{"item_id": i.item_id, "title": i.title, "categories": list(i.categories)} for i in items]
            }
            payload = json.dumps(body, separators=(",", ":")).encode()
            self._catalogue_asset = _asset(payload, b"application/json")
        return self._catalogue_asset


def _error(message: str, field: str) -> _Asset:
    return _asset(json.dumps({"error": message, "field": field}).encode(), b"application/json")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


async def _respond(
    send: Send, status: int, asset: _Asset, extra: list[tuple[bytes, bytes]] | None = None, *, head: bool = False
) -> None:
    headers = [
        (b"content-type", asset.content_type),
        (b"content-length", str(len(asset.body)).encode()),
        (b"cache-control", b"no-cache"),  # revalidated each time (cheap: the ETag) so a redeploy shows at once
        *SECURITY_HEADERS,
        *(extra or []),
    ]
    if status in (200, 304):
        headers.append((b"etag", asset.etag))
    if status == 304:
        headers = [h for h in headers if h[0] != b"content-length"]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head or status == 304 else asset.body})
