"""End to end: a teacher's dashboard and two students with fake cameras in headless Chromium.

The real server (gunicorn, threads) on a free loopback port; each student's
camera plays a real face photo. Also refreshes the README's classroom
screenshots in docs/screenshots/.
"""
from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

import pytest

from tests.browser import SERVER_MODES, make_fake_camera, watch
from tests.conftest import ROOT, require

try:
    from playwright.sync_api import expect
except ImportError:  # the playwright_session fixture skips (or fails in CI) and says why
    expect = None

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOTS = ROOT / "docs" / "screenshots"
SECONDS = 1000  # Playwright timeouts are in milliseconds
PASSWORD = "correct horse battery"
TEACHERS = itertools.count()  # a new e-mail address for each teacher a test registers
EMOTION = re.compile(r"^(angry|disgust|fear|happy|sad|surprise|neutral)$")


@pytest.fixture(scope="module")
def cameras(faces_dir, tmp_path_factory) -> dict[str, Path]:
    """Fake webcams: Obama's portrait, and the top half of Biden's full-length one (head and shoulders,
    as a webcam sees a student; the whole portrait leaves a face too small for the live detector)."""
    import cv2

    out = tmp_path_factory.mktemp("cameras")
    biden = cv2.imread(str(require(faces_dir / "biden.jpg")))
    cv2.imwrite(str(out / "biden-top.png"), biden[: biden.shape[0] // 2])
    return {"obama": make_fake_camera(require(faces_dir / "obama.jpg"), out / "obama.y4m"),
            "biden": make_fake_camera(out / "biden-top.png", out / "biden.y4m")}


def open_teacher(browser, url: str, email: str = "rivera@example.org"):
    """Register a teacher, create a class; returns (context, dashboard page, join code)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(url + "/register")
    page.fill("#name", "Ms Rivera")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.fill("#confirm", PASSWORD)
    page.click("#register-form button[type=submit]")
    page.wait_for_url("**/classes")
    page.fill("#name", "Biology 7B")
    page.click("#new-class button[type=submit]")
    page.wait_for_url("**/classes/*")
    code = page.inner_text("#join-code").strip()
    assert len(code) == 6
    return context, page, code


def new_teacher(browser_factory, server):
    """A new teacher, in a new browser, with a new class (its session running): (context, dashboard page, code)."""
    return open_teacher(browser_factory(), server.url, email=f"teacher{next(TEACHERS)}@example.org")


def open_student(browser, url: str, code: str, name: str, screenshot: Path | None = None,
                 init_script: str | None = None):
    """Join class ``code`` with consent; returns the student page (streaming).

    ``init_script``: JavaScript run in the page before its own (e.g. a slower camera).
    """
    page = browser.new_context(viewport={"width": 1000, "height": 900}).new_page()
    if init_script:
        page.add_init_script(init_script)
    problems = watch(page)
    page.goto(f"{url}/join/{code}")
    expect(page.locator("#notice")).to_contain_text("Never a picture")
    page.fill("#display_name", name)
    page.check("#consent")
    if screenshot:
        page.screenshot(path=str(screenshot), full_page=True)
    page.click("#join-submit")
    page.wait_for_url("**/live?start=1")
    expect(page.locator("#sharing")).to_have_attribute("data-state", "on", timeout=20 * SECONDS)
    expect(page.locator("#sharing-text")).to_have_text("Sharing with Biology 7B")
    expect(page.locator("#my-emotion")).to_have_text(EMOTION, timeout=20 * SECONDS)
    # Coloured by the palette's CSS: its class names the emotion shown (read at once: the result changes).
    page.wait_for_function("""() => {
      const el = document.getElementById("my-emotion");
      return el.className === `emo emo-${el.textContent}`;
    }""", timeout=5 * SECONDS)
    return page, problems


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_dashboard_follows_two_students_and_stops_when_the_session_ends(mode, server_factory,
                                                                        browser_factory, cameras):
    server = server_factory(mode, CLASSROOM_PUSH_SECONDS="1.0", CLASSROOM_STALE_SECONDS="6",
                            CLASSROOM_TIMELINE_STEP="2")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = mode == "threading"  # the production mode's pages are the README's pictures
    teacher_ctx, board, code = open_teacher(browser_factory(), server.url)
    board_problems = watch(board)
    expect(board.locator("#board")).to_have_attribute("data-state", "live")

    # Two students, each with a camera showing a different real face.
    alice, alice_problems = open_student(browser_factory(cameras["obama"]), server.url, code, "Alice",
                                         screenshot=SCREENSHOTS / "classroom-join.png" if shots else None)
    bob, bob_problems = open_student(browser_factory(cameras["biden"]), server.url, code, "Bob")

    # Within a few seconds the dashboard shows both, and a non-empty distribution.
    expect(board.locator("#kpi-students")).to_have_text("2", timeout=15 * SECONDS)
    expect(board.locator("#tiles .tile[data-status=active]")).to_have_count(2, timeout=15 * SECONDS)
    values = [float(v) for v in board.eval_on_selector_all("#dist-list li", "els => els.map(e => e.dataset.value)")]
    assert len(values) == 7 and sum(values) == pytest.approx(1.0, abs=0.01)
    assert board.locator("#tiles .tile-name").all_inner_texts() == ["Alice", "Bob"]
    time.sleep(6)  # a few timeline points for the screenshot
    if shots:
        board.screenshot(path=str(SCREENSHOTS / "classroom-dashboard.png"), full_page=True)
        alice.screenshot(path=str(SCREENSHOTS / "classroom-student.png"), full_page=True)

    # The API agrees with the page.
    api = teacher_ctx.request.get(f"{server.url}/api/v1/classes/{code}/mood").json()
    assert api["students"] == 2 and sum(api["distribution"].values()) == pytest.approx(1.0, abs=0.01)
    assert api["timeline"]

    # Bob stops sharing: one student left, no alert about him.
    bob.click("#stop")
    expect(bob.locator("#sharing")).to_have_attribute("data-state", "off")
    expect(board.locator("#kpi-students")).to_have_text("1", timeout=10 * SECONDS)

    # The teacher ends the session from a second tab: the watching dashboard stops updating.
    control = teacher_ctx.new_page()
    control_problems = watch(control)
    control.goto(f"{server.url}/classes/{code}")
    control.click("#end-session")
    expect(control.locator("#session-state")).to_have_text("no session running")
    expect(board.locator("#board")).to_have_attribute("data-state", "ended", timeout=10 * SECONDS)
    expect(board.locator("#ended-banner")).to_be_visible()
    updates = board.get_attribute("#board", "data-updates")
    time.sleep(3)
    assert board.get_attribute("#board", "data-updates") == updates
    # Alice's page was told, and her camera is off.
    expect(alice.locator("#sharing")).to_have_attribute("data-state", "off", timeout=10 * SECONDS)
    expect(alice.locator("#status")).to_contain_text("ended the session")
    assert alice.evaluate("() => document.getElementById('video').srcObject") is None

    # The history has the session, with its charts and both students.
    control.goto(f"{server.url}/classes/{code}/history")
    control.click("#sessions a:text('view')")
    expect(control.locator("#report")).to_have_attribute("data-state", "loaded", timeout=10 * SECONDS)
    expect(control.locator("#tiles .tile")).to_have_count(2)
    values = [float(v) for v in control.eval_on_selector_all("#dist-list li", "els => els.map(e => e.dataset.value)")]
    assert sum(values) == pytest.approx(1.0, abs=0.01)

    # The session's time series is there to export.
    csv_text = teacher_ctx.request.get(f"{server.url}/classes/{code}/export.csv").text()
    assert csv_text.startswith("time,students,frames") and len(csv_text.splitlines()) > 3
    assert board_problems == [] and alice_problems == [] and bob_problems == [] and control_problems == []
