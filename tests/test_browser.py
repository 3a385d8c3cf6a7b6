"""The real UI in headless Chromium: upload a photo, wait for the results, take a screenshot."""

import os
import shutil
from pathlib import Path

import pytest

from dldl_core.examples import example_photos

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does it)")


def _launch(p):
    """Debian's Chromium, headless, with nothing of its own on the network (so the page can go idle)."""
    return p.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync"],
    )


def _shown(page, image: str) -> None:
    """Wait for the first ``image`` element and check that its picture loaded."""
    shown = page.locator(image).first
    shown.wait_for(timeout=30_000)
    assert shown.evaluate("img => img.complete && img.naturalWidth") > 100


def _screenshot(page, variable: str, default: Path) -> None:
    """A full-page screenshot at $``variable`` (to look at) or ``default``; a blank page is small."""
    shot = Path(os.environ.get(variable, default))
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000


def test_upload_and_see_results(tmp_path, app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = _launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(app_url, wait_until="load")
        # grayscale, the head turned 55 degrees: the README's screenshot, with the novelty flag shown
        page.locator("input[type=file]").first.set_input_files(str(example_photos()["cameraman (grayscale)"]))
        page.get_by_text("1 face found").wait_for(timeout=120_000)
        _shown(page, "#annotated img")
        for plot in ("#age-chart img", "#pose-chart img"):
            _shown(page, plot)
        _screenshot(page, "DLDL_SCREENSHOT", tmp_path / "app.png")
        browser.close()


def test_street_scene_tab(tmp_path, app_url):
    from playwright.sync_api import sync_playwright

    from dldl_core.examples import scene_photos

    with sync_playwright() as p:
        browser = _launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        page.goto(app_url, wait_until="load")
        page.get_by_role("tab", name="Street scene").click()
        page.locator("input[type=file]").last.set_input_files(str(scene_photos()["rocket on its pad"]))
        page.get_by_text("Mean uncertainty").wait_for(timeout=120_000)
        for image in ("#seg-overlay img", "#seg-uncertainty img"):
            shown = page.locator(image).first
            shown.wait_for(timeout=30_000)
            assert shown.evaluate("img => img.complete && img.naturalWidth") == 640
        assert page.locator("#seg-legend").inner_text().count("%") == 11
        _screenshot(page, "DLDL_SCREENSHOT_SCENE", tmp_path / "scene.png")
        browser.close()


def test_video_tab(tmp_path, app_url):
    from playwright.sync_api import sync_playwright

    from tests.test_video import write_clip

    clip = tmp_path / "two.mp4"
    write_clip(clip, 2, frames=10)
    with sync_playwright() as p:
        browser = _launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        page.goto(app_url, wait_until="load")
        page.get_by_role("tab", name="Video").click()
        page.locator("#video-input input[type=file]").set_input_files(str(clip))
        page.locator("#video-input video").wait_for(timeout=60_000)  # the upload is shown before it is analysed
        page.get_by_role("button", name="Analyze").last.click()
        page.get_by_text("2 face tracks").wait_for(timeout=180_000)
        video = page.locator("#video-annotated video").first
        video.wait_for(timeout=30_000)
        page.wait_for_function("v => v.readyState >= 1 && v.videoWidth === 320", arg=video.element_handle(), timeout=30_000)
        _shown(page, "#video-chart img")
        _screenshot(page, "DLDL_SCREENSHOT_VIDEO", tmp_path / "video.png")
        browser.close()
