"""The storefront middleware: /demo, its static files (by exact name only) and the catalogue, in front of an app
arranged as serving/service.py arranges BentoML's (unknown paths collapsed, the request guard answering them 404)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from recstack.bundle.reader import Bundle
from recstack.serving.demo_site import CatalogueItem, DemoSiteMiddleware, catalogue_of, service_catalogue
from recstack.serving.http_guards import RequestGuardMiddleware, collapse_unknown_paths
from recstack.serving.pipeline import Pipeline

STATIC = Path(__file__).resolve().parents[2] / "serving" / "static"
ITEMS = [CatalogueItem("i1", "Drama <b>one</b>", ("Drama",)), CatalogueItem("i2", "Comedy two", ())]


async def _recommend(request) -> JSONResponse:  # type: ignore[no-untyped-def]
    return JSONResponse({"from": "app"})


def _app(catalogue=lambda: ITEMS, static_dir: Path = STATIC):  # type: ignore[no-untyped-def]
    """Outermost first, as in serving/service.py: the storefront before the guard that 404s collapsed paths."""
    app = Starlette(
        routes=[Route("/recommend", _recommend, methods=["POST"])],
        middleware=[
            Middleware(DemoSiteMiddleware, catalogue=catalogue, static_dir=static_dir),
            Middleware(RequestGuardMiddleware, json_routes=["/recommend"], max_header_bytes=16384),
        ],
    )
    return collapse_unknown_paths(app)


def _raw(app, path: str, method: str = "GET") -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    """One request with the path exactly as given (an HTTP client would normalise ``..`` away)."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "headers": [],
        "query_string": b"",
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_page_and_every_file_it_references() -> None:
    with TestClient(_app()) as http:
        page = http.get("/demo")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        refs = re.findall(r'(?:src|href)="(/demo/static/[^"]+)"', page.text)
        assert sorted(refs) == ["/demo/static/demo.css", "/demo/static/demo.js"]
        kinds = {"/demo/static/demo.css": "text/css", "/demo/static/demo.js": "text/javascript"}
        for ref in refs:
            answer = http.get(ref)
            assert answer.status_code == 200 and answer.headers["content-type"].startswith(kinds[ref])
            assert answer.content == (STATIC / ref.rsplit("/", 1)[1]).read_bytes()
        assert http.get("/demo/").text == page.text
        assert 'href="/privacy"' in page.text  # the banner links the notice
        # nothing is loaded from anywhere else (there is no internet, and no CDN)
        assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text)


def test_head_and_revalidation() -> None:
    with TestClient(_app()) as http:
        full = http.get("/demo/static/demo.js")
        head = http.head("/demo/static/demo.js")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(full.content)) and head.headers["etag"] == full.headers["etag"]
        again = http.get("/demo/static/demo.js", headers={"if-none-match": full.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


def test_catalogue_is_503_until_loaded_then_encoded_once() -> None:
    calls: list[int] = []

    def catalogue() -> list[CatalogueItem] | None:
        calls.append(1)
        return None if len(calls) == 1 else ITEMS

    with TestClient(_app(catalogue)) as http:
        first = http.get("/demo/catalogue.json")
        assert first.status_code == 503 and first.json()["field"] == "service" and first.headers["retry-after"]
        body = http.get("/demo/catalogue.json").json()
        assert http.get("/demo/catalogue.json").json() == body
    assert body == {
        "items": [
            {"item_id": "i1", "title": "Drama <b>one</b>", "categories": ["Drama"]},
            {"item_id": "i2", "title": "Comedy two", "categories": []},
        ]
    }
    assert len(calls) == 2  # the pipeline is read-only: once loaded, never asked again


@pytest.mark.parametrize(
    "path",
    [
        "/demo/static/../../pyproject.toml",
        "/demo/static/..%2F..%2Fpyproject.toml",
        "/demo/static/%2e%2e/service.py",
        "/demo/static//etc/passwd",
        "/demo/static/",
        "/demo/static",
        "/demo/static/demo.js/..",
        "/demo/static/./demo.js",
        "/demo/static/sub/demo.js",
        "/demo/staticdemo.js",
        "/demo/static/DEMO.JS",
        "/demo/static/demo.js%00.html",
        "/demo/nothing",
    ],
)
def test_only_named_static_files_are_served(path: str) -> None:
    status, body = _raw(_app(), path)
    assert status == 404 and b'"field": "path"' in body


def test_unsafe_files_in_the_folder_are_not_served(tmp_path: Path) -> None:
    (tmp_path / "demo.html").write_text("<!doctype html><p>hi</p>")
    (tmp_path / "secret.py").write_text("KEY = 1")
    (tmp_path / ".hidden.js").write_text("1")
    (tmp_path / "link.js").symlink_to(Path(__file__))
    app = _app(static_dir=tmp_path)
    assert _raw(app, "/demo")[0] == 200
    for name in ("secret.py", ".hidden.js", "link.js"):
        assert _raw(app, f"/demo/static/{name}")[0] == 404, name


def test_a_folder_without_the_page_is_an_error_that_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DemoSiteMiddleware(_recommend, catalogue=lambda: ITEMS, static_dir=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"no demo\.html"):
        DemoSiteMiddleware(_recommend, catalogue=lambda: ITEMS, static_dir=tmp_path)


def test_other_methods_and_paths() -> None:
    with TestClient(_app()) as http:
        post = http.post("/demo", json={})
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD" and post.json()["field"] == "method"
        assert http.post("/recommend", json={}).json() == {"from": "app"}  # the service's own routes are untouched
        for path in ("/demox", "/nope", "/static/demo.js"):
            answer = http.get(path)
            assert answer.status_code == 404 and answer.json()["field"] == "path", path


def test_catalogue_of_a_pipeline_is_most_popular_first(tiny_bundle: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    pipeline = Pipeline.from_bundle(bundle)
    items = catalogue_of(pipeline)
    assert len(items) == min(48, pipeline.n_items)
    assert [i.item_id for i in items[:10]] == [str(pipeline.item_ids[r]) for r in pipeline.popularity.overall[:10]]
    table = bundle.items.set_index("item_id")
    for item in items:
        assert item.title == table.loc[item.item_id, "title"]
        assert list(item.categories) == list(table.loc[item.item_id, "categories"])
    assert len({i.item_id for i in items}) == len(items)
    assert [i.item_id for i in catalogue_of(pipeline, limit=5)] == [i.item_id for i in items[:5]]


def test_service_catalogue_outside_a_worker_is_none() -> None:
    assert service_catalogue() is None
