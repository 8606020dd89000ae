"""End to end: the live page when the network drops, after Stop, and when the phone is turned.

One real server (gunicorn, threads) for the module; headless Chromium.
"""
from __future__ import annotations

import re

import pytest

from tests.browser import watch

try:
    from playwright.sync_api import expect
except ImportError:  # the playwright_session fixture skips (or fails in CI) and says why
    expect = None

pytestmark = pytest.mark.browser
SECONDS = 1000
# Counts the nodes added to the live region that says the faces in view (a screen reader reads out each change).
COUNT_LIST_CHANGES = """
window.listChanges = 0;
document.addEventListener("DOMContentLoaded", () => new MutationObserver((ms) => {
  for (const m of ms) window.listChanges += m.addedNodes.length;
}).observe(document.getElementById("faces-live"), { childList: true, subtree: true, characterData: true }));
"""
# A camera that is turned from landscape to portrait two seconds after it opens.
TURNING_CAMERA = """
navigator.mediaDevices.getUserMedia = async () => {
  const c = document.createElement("canvas"); c.width = 640; c.height = 480;
  const g = c.getContext("2d");
  setInterval(() => { g.fillStyle = "#888"; g.fillRect(0, 0, c.width, c.height); }, 33);
  setTimeout(() => { c.width = 480; c.height = 640; }, 2000);
  return c.captureStream(30);
};
"""


@pytest.fixture(scope="module")
def server(server_factory):
    srv = server_factory("threading")
    yield srv
    srv.stop()


def test_live_page_shows_no_stale_figures_and_keeps_the_keyboard(server, browser_factory, camera):
    context = browser_factory(camera).new_context()
    page = context.new_page()
    page.add_init_script(COUNT_LIST_CHANGES)
    page.goto(server.url + "/live")
    page.focus("#toggle")
    page.keyboard.press("Enter")
    expect(page.locator("#overlay")).to_have_attribute("data-faces", "1", timeout=20 * SECONDS)
    expect(page.locator("#toggle")).to_be_focused()
    expect(page.locator("#rtt")).not_to_have_text("–", timeout=10 * SECONDS)

    # The same face, answer after answer (its percentage may move): the live region is not rewritten.
    expect(page.locator("#faces-live")).to_have_text(re.compile(r"^Face 1: \w+$"))
    page.evaluate("() => { window.listChanges = 0; }")
    page.wait_for_timeout(2000)
    assert page.evaluate("() => window.listChanges") == 0

    # The connection drops: no figures or boxes from before.
    context.set_offline(True)
    expect(page.locator("#status")).to_have_attribute("data-kind", "warn", timeout=15 * SECONDS)
    for stat in ("#fps", "#rtt", "#server-ms"):
        expect(page.locator(stat)).to_have_text("–")
    expect(page.locator("#overlay")).to_have_attribute("data-faces", "0")
    context.set_offline(False)
    expect(page.locator("#rtt")).not_to_have_text("–", timeout=20 * SECONDS)

    page.keyboard.press("Enter")  # stop
    expect(page.locator("#toggle")).to_have_text("Start camera")
    for stat in ("#fps", "#rtt", "#server-ms"):
        expect(page.locator(stat)).to_have_text("–")


def test_live_page_follows_a_turned_camera(server, browser_factory):
    page = browser_factory().new_page()
    problems = watch(page)
    page.add_init_script(TURNING_CAMERA)
    page.goto(server.url + "/live")
    page.click("#toggle")
    for shape in ("640 / 480", "480 / 640"):  # landscape, then portrait
        page.wait_for_function("(shape) => document.getElementById('stage').style.aspectRatio === shape",
                               arg=shape, timeout=10 * SECONDS)
    video = page.locator("#video")
    width, height = video.evaluate("v => [v.clientWidth, v.clientHeight]")
    assert height > width
    assert problems == []
