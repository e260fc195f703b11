"""The segment dashboard in a real headless Chromium against a real server (keys on) over segments a real batch run
published: the page asks for a key, draws sizes over time, the overlap heat map and a segment's top items and
categories with the vendored Chart.js, and looks a profile up by the site's user id."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from segments_support import PSEUDO, Seeded, publish_runs, start, write_inputs
from serving_support import REPO, Server, stop_server
from test_storefront_browser import _chromium

pytestmark = [pytest.mark.slow, pytest.mark.redis]

VENDOR = REPO / "serving" / "static" / "vendor"


@pytest.fixture(scope="module")
def vendored() -> Path:
    """`make vendor`'s step (pinned Chart.js from the npm registry, SHA-256 checked); a no-op when already done."""
    done = subprocess.run(
        [sys.executable, str(REPO / "serving" / "vendor.py")], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0 and not (VENDOR / "chart.umd.min.js").is_file():
        pytest.fail(f"could not vendor the charting library: {done.stdout}{done.stderr}")
    return VENDOR


@pytest.fixture(scope="module")
def dashboard(
    tiny_bundle: Path, vendored: Path, module_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Seeded]]:
    root = tmp_path_factory.mktemp("dash")
    seeded = write_inputs(root)
    publish_runs(seeded, module_prefix, root / "out")
    srv = start(tiny_bundle, seeded, module_prefix, root / "bentoml.log")
    yield srv, seeded
    stop_server(srv)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(_chromium()), args=["--no-sandbox"])
        yield instance
        instance.close()


def _marks(page, canvas: str) -> int:  # type: ignore[no-untyped-def]
    """Pixels Chart.js painted on a canvas (not transparent)."""
    return int(
        page.evaluate(
            """(id) => { const c = document.getElementById(id); const d = c.getContext('2d')
                 .getImageData(0, 0, c.width, c.height).data; let n = 0;
                 for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""",
            canvas,
        )
    )


def test_dashboard_draws_the_segments_and_looks_up_a_profile(
    dashboard: tuple[Server, Seeded], browser, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server, seeded = dashboard
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    # (the 404s of the unknown user's lookup are logged by Chromium as failed loads: those are expected)
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
    )
    page.goto(f"{server.base_url}/dashboard/segments")
    page.wait_for_selector("body[data-state='needs-key']", state="attached")
    assert "Enter an API key" in page.get_by_role("status").first.inner_text()

    page.get_by_label("API key (analyst or admin)").fill(seeded.keys["analyst"])
    page.get_by_role("button", name="Use key").click()
    page.wait_for_selector("body[data-state='loaded']", state="attached")
    assert page.locator("#library-missing").is_hidden()
    rows = page.eval_on_selector_all("#segments-rows tr", "rows => rows.map(r => r.dataset.segment)")
    assert rows == ["action_fans", "active", "drama_fans"]
    # every chart drew marks: two runs x three segments, a 3 x 3 heat map, the picked segment's bars
    assert page.get_attribute("#sizes-chart", "data-points") == "6"
    assert page.get_attribute("#overlap-chart", "data-points") == "9"
    for canvas in ("sizes-chart", "overlap-chart", "items-chart", "categories-chart"):
        assert page.get_attribute(f"#{canvas}", "data-rendered") == "true", canvas
        assert _marks(page, canvas) > 500, canvas
    assert page.locator("#segment-pick").input_value() == "action_fans"
    page.get_by_role("button", name="drama_fans").click()
    assert page.locator("#segment-pick").input_value() == "drama_fans"
    assert page.get_attribute("#items-chart", "data-points") == "7"
    assert page.get_attribute("#categories-chart", "data-points") == "2"
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    page.get_by_label("User id").fill("carol")
    page.get_by_role("button", name="Look up").click()
    page.wait_for_selector("body[data-lookup='found']", state="attached")
    assert page.locator("#lookup-segments").inner_text() == "active, drama_fans"
    assert page.locator("#lookup-subject").inner_text() == PSEUDO.user("carol")
    assert "25-34" in page.locator("#lookup-rows").inner_text()
    page.get_by_label("User id").fill("nobody")
    page.get_by_role("button", name="Look up").click()
    page.wait_for_selector("body[data-lookup='missing']", state="attached")
    assert "No profile or segments" in page.locator("#lookup-status").inner_text()
    assert errors == [], errors  # no CSP violation, no script error
    context.close()


def test_a_wrong_key_says_so(dashboard: tuple[Server, Seeded], browser) -> None:  # type: ignore[no-untyped-def]
    server, seeded = dashboard
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.base_url}/dashboard/segments")
    page.get_by_label("API key (analyst or admin)").fill(seeded.keys["recommend"])
    page.get_by_role("button", name="Use key").click()
    page.wait_for_selector("body[data-state='error']", state="attached")
    assert "needs role 'analyst'" in page.locator("#status").inner_text()
    context.close()
