"""The demo storefront in a real headless Chromium against a real server (collector mounted, consent required): the
consent banner decides whether anything is sent, clicks reach the event stream and change the shelf, and the privacy
link shows the notice with the lake's columns."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_support import Server, start_server, stop_server

from recstack.data.lake import EVENTS_SCHEMA, IMPRESSIONS_SCHEMA

pytestmark = [pytest.mark.slow, pytest.mark.redis]

CHROMIUM = Path("/usr/bin/chromium")
CLICKED = ("i2", "i6", "i10")  # one taste group of the tiny split (items i % 4 == 2)


def _chromium() -> Path:
    """Debian's chromium (Playwright's own browser download does not work offline); installed once if missing."""
    if not CHROMIUM.exists() and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=900, check=False)
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing and `apt-get install -y chromium` could not install it (needs root)")
    return CHROMIUM


@pytest.fixture(scope="module")
def lake(module_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The stream -> lake consumer as it runs beside a site (recstack-collect consume), on the shop's stream."""
    import os
    import signal
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("lake")
    log = folder.parent / "consume.log"
    argv = [
        str(Path(sys.executable).with_name("recstack-collect")),
        "consume",
        "consumer=shop",
        f"collector.stream={module_prefix}collect",
        f"collector.lake={folder}",
        "collector.flush_interval_s=0.2",
    ]
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    yield folder
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def _wait_lake(lake: Path, wanted, timeout: float = 30) -> list[dict]:  # type: ignore[no-untyped-def]
    """Until the lake's committed files hold rows satisfying ``wanted(rows)`` (the consumer flushes every 0.2 s)."""

    from recstack.data.lake import read_table

    deadline = time.monotonic() + timeout
    while True:
        rows = read_table(lake, "events").to_pylist()
        if wanted(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"the lake {lake} never held the expected rows; it holds {len(rows)} rows")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def shop(tiny_bundle: Path, module_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real service as a site runs it: consent required for storing events and for personalised answers."""
    from recstack.serving.api_keys import new_key, write_key_file

    log = tmp_path_factory.mktemp("shop") / "bentoml.log"
    keys = log.parent / "api_keys.yaml"
    write_key_file(keys, [new_key("admin", "shop-admin")[1]])
    srv = start_server(
        tiny_bundle,
        log,
        redis_url="redis://127.0.0.1:6379/0",
        redis_prefix=module_prefix,
        overrides=[
            "redis_timeout_s=1.0",
            "collector.consent_required=true",
            "consent_for_personalisation=true",
            # as deployed: keys and rate limits on; the page calls without a key, as its visitor cookie
            "auth=true",
            f"api_keys_file={keys}",
            "rate_limit=true",
            f"rate_limit_prefix={module_prefix}rl",
        ],
    )
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(executable), args=["--no-sandbox"])
        yield instance
        instance.close()


@pytest.fixture
def context(browser) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """A fresh profile per test: no visitor cookie, no consent cookie."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


class Requests:
    """Every request the browser makes, in order (page and context level, so beacons are seen too)."""

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        self.seen: list[tuple[str, str]] = []
        self.kinds: dict[str, list[str]] = {}
        context.on("request", self._record)

    def _record(self, request) -> None:  # type: ignore[no-untyped-def]
        self.seen.append((request.method, request.url))
        self.kinds.setdefault(request.url.split("?", 1)[0].rsplit("/", 1)[-1], []).append(request.resource_type)

    def to(self, path: str, method: str | None = None) -> list[tuple[str, str]]:
        return [(m, u) for m, u in self.seen if u.split("?", 1)[0].endswith(path) and method in (None, m)]

    def index(self, path: str, method: str | None = None) -> int:
        return self.seen.index(self.to(path, method)[0])


def _shelf_version(page) -> int:  # type: ignore[no-untyped-def]
    return int(page.evaluate("Number(document.body.dataset.shelfVersion || 0)"))


# Waits use selectors, not wait_for_function: the page's Content-Security-Policy forbids the eval it relies on.
def _wait_shelf_after(page, version: int) -> None:  # type: ignore[no-untyped-def]
    """Until the shelf has been redrawn after ``version`` (the page numbers its redraws in data-shelf-version)."""
    page.wait_for_selector(f"body[data-shelf-version]:not([data-shelf-version='{version}'])", state="attached")


def _wait_consent(page, state: str) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_selector(f"body[data-consent='{state}']", state="attached")


def _shelf(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.eval_on_selector_all("#shelf [data-item-id]", "nodes => nodes.map(n => n.dataset.itemId)")


def _open_shop(context, shop: Server):  # type: ignore[no-untyped-def]
    page = context.new_page()
    page.goto(f"{shop.base_url}/demo")
    page.wait_for_selector("#grid [data-item-id]")
    _wait_shelf_after(page, 0)
    return page


def _click_item(page, item_id: str, close: bool = True) -> None:  # type: ignore[no-untyped-def]
    """Select a product in the grid, wait until the shelf has been redrawn after it, close the detail panel."""
    version = _shelf_version(page)
    page.locator(f'#grid [data-item-id="{item_id}"]').click()
    _wait_shelf_after(page, version)
    if close:
        page.get_by_role("button", name="Close product details").click()


def test_accept_all_then_clicks_reach_the_stream_and_change_the_shelf(
    shop: Server, context, module_prefix: str, tmp_path: Path, lake: Path
) -> None:
    requests = Requests(context)
    page = _open_shop(context, shop)
    banner = page.get_by_role("dialog", name="Your privacy")
    assert banner.is_visible()
    before = _shelf(page)
    assert len(before) == 8
    page.screenshot(path=str(tmp_path / "banner.png"))

    version = _shelf_version(page)
    page.get_by_role("button", name="Accept all").click()
    _wait_consent(page, "analytics")
    assert banner.is_hidden()
    consent = {c["name"]: c for c in context.cookies()}
    assert "analytics=1&personalisation=1" in consent["rs_consent"]["value"] and consent["rs_vid"]["httpOnly"]
    _wait_shelf_after(page, version)

    for item in CLICKED[:-1]:
        _click_item(page, item)
    _click_item(page, CLICKED[-1], close=False)
    page.get_by_role("button", name="Add to cart").click()
    page.get_by_role("status").filter(has_text="Added to your cart").wait_for()
    page.screenshot(path=str(tmp_path / "detail.png"))
    page.get_by_role("button", name="Close product details").click()
    after = _shelf(page)
    assert after != before, "the shelf did not change after three clicks"
    assert not set(CLICKED) & set(after)  # just-clicked items are not recommended back
    assert "Picked for you" in page.locator("#shelf-source").inner_text()
    page.screenshot(path=str(tmp_path / "storefront.png"), full_page=True)

    rows = _wait_lake(lake, lambda rows: {r["item_id"] for r in rows if r["event_type"] == "click"} >= set(CLICKED))
    clicks = [r for r in rows if r["event_type"] == "click" and r["item_id"] in CLICKED]
    assert len({r["user_id"] for r in clicks}) == 1 and all(r["anonymous"] for r in clicks)  # one visitor pseudonym
    assert all(r["source"] == "api" and r["local_hour"] is not None and r["client_ts"] for r in clicks)
    assert len(clicks) == len({r["event_id"] for r in clicks}) == len(CLICKED)
    visitor = clicks[0]["user_id"]
    # the tracking pixel: one view per product opened
    assert [u.split("i=", 1)[1].split("&", 1)[0] for _, u in requests.to("/pixel.gif")] == list(CLICKED)
    _wait_lake(lake, lambda rows: {r["item_id"] for r in rows if r["source"] == "pixel"} >= set(CLICKED))
    # nothing went to /events before the choice was recorded
    assert requests.index("/consent", "POST") < requests.index("/events")

    # Leaving the page (pagehide): the last product's dwell and the page's scroll depth go out with sendBeacon.
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.goto(f"{shop.base_url}/privacy")

    def mine(rows: list[dict], kind: str) -> list[dict]:
        return [r for r in rows if r["user_id"] == visitor and r["event_type"] == kind]

    rows = _wait_lake(
        lake, lambda rows: mine(rows, "scroll") and {r["item_id"] for r in mine(rows, "dwell")} >= set(CLICKED)
    )
    scroll = mine(rows, "scroll")
    assert len(scroll) == 1 and scroll[0]["item_id"] == "page:/demo" and 0.9 <= scroll[0]["value"] <= 1
    assert all(r["value"] >= 0 for r in mine(rows, "dwell"))
    assert [r["item_id"] for r in mine(rows, "add_to_cart")] == [CLICKED[-1]]

    # every click is in the lake exactly once, stored by the consumer (stream_id), with no IP (dropped by default)
    assert sorted(r["item_id"] for r in mine(rows, "click")) == sorted(CLICKED)
    assert all(r["stream_id"] for r in rows) and not any(r["ip"] for r in rows)


def test_reject_all_sends_no_events(shop: Server, context) -> None:
    requests = Requests(context)
    page = _open_shop(context, shop)
    page.get_by_role("button", name="Reject all").click()
    _wait_consent(page, "none")
    assert "analytics=0&personalisation=0" in {c["name"]: c["value"] for c in context.cookies()}["rs_consent"]
    for item in CLICKED[:2]:
        _click_item(page, item)
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    assert "Popular right now" in page.locator("#shelf-source").inner_text()
    page.get_by_role("link", name="Privacy notice", exact=True).click()  # pagehide: the exit flush has nothing to send
    page.wait_for_url("**/privacy")
    assert requests.to("/events") == [] and requests.to("/pixel.gif") == []
    assert len(requests.to("/consent", "POST")) == 1

    # a new visit: the choice is remembered, the banner stays hidden
    again = _open_shop(context, shop)
    assert again.get_by_role("dialog", name="Your privacy").is_hidden()


def test_choose_analytics_only_keeps_the_shelf_unpersonalised(
    shop: Server, context, module_prefix: str, lake: Path
) -> None:
    requests = Requests(context)
    page = _open_shop(context, shop)
    before = _shelf(page)
    page.get_by_role("button", name="Choose", exact=True).click()
    page.get_by_label("Analytics").check()
    assert not page.get_by_label("Personalisation").is_checked()
    page.get_by_role("button", name="Save my choices").click()
    _wait_consent(page, "analytics")
    assert "analytics=1&personalisation=0" in {c["name"]: c["value"] for c in context.cookies()}["rs_consent"]
    _click_item(page, "i3")  # an item no other test here clicks, so its rows name this visitor
    assert _shelf(page) == before  # without personalisation the shelf stays popular ...
    assert "Popular right now" in page.locator("#shelf-source").inner_text()
    rows = _wait_lake(lake, lambda rows: any(r["item_id"] == "i3" and r["event_type"] == "click" for r in rows))
    visitor = next(r["user_id"] for r in rows if r["item_id"] == "i3")  # ... while analytics stores the click
    assert requests.index("/consent", "POST") < requests.index("/events")

    # What the page does on leaving (the accept-all test leaves for real): the queue goes out with sendBeacon, which
    # Debian's Chromium allows for an application/json Blob on the same origin (a beacon is a "ping" request).
    with page.expect_request(lambda r: r.url.endswith("/events") and r.resource_type == "ping"):
        page.evaluate("window.dispatchEvent(new PageTransitionEvent('pagehide'))")
    rows = _wait_lake(
        lake,
        lambda rows: {r["event_type"] for r in rows if r["user_id"] == visitor} >= {"click", "view", "dwell", "scroll"},
    )
    assert [r["item_id"] for r in rows if r["user_id"] == visitor and r["event_type"] == "dwell"] == ["i3"]


def test_privacy_link_in_the_banner_lists_the_lake_columns(shop: Server, context) -> None:
    requests = Requests(context)
    page = _open_shop(context, shop)
    page.get_by_role("dialog", name="Your privacy").get_by_role("link", name="Read the privacy notice").click()
    page.wait_for_url("**/privacy")
    assert page.get_by_role("heading", name="Privacy notice", level=1).is_visible()
    listed = page.eval_on_selector_all("table code", "nodes => nodes.map(n => n.textContent)")
    assert sorted(listed) == sorted(EVENTS_SCHEMA.names + IMPRESSIONS_SCHEMA.names)  # events, then impressions
    page.go_back()
    _wait_consent(page, "unset")
    assert page.get_by_role("dialog", name="Your privacy").is_visible()  # no choice was made
    assert requests.to("/consent", "POST") == [] and requests.to("/events") == []
