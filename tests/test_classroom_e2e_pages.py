"""End to end: the student page and the dashboard in the awkward moments.

A quick Stop and Start, a camera the student does not allow, a dashboard that
was offline when the session ended. One real server (gunicorn, threads) for the
module; headless Chromium with a fake camera.
"""
from __future__ import annotations

import time

import pytest

from tests.browser import watch
from tests.test_classroom_e2e import SECONDS, new_teacher, open_student

try:
    from playwright.sync_api import expect
except ImportError:  # the playwright_session fixture skips (or fails in CI) and says why
    expect = None

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The camera takes 0.8 s to open, as a real one may: a Start then outlasts the old 300 ms grace of a Stop.
SLOW_CAMERA = """{
  const open = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (c) => { await new Promise((r) => setTimeout(r, 800)); return open(c); };
}"""


@pytest.fixture(scope="module")
def server(server_factory):
    srv = server_factory("threading", CLASSROOM_PUSH_SECONDS="0.5")
    yield srv
    srv.stop()


def end_session(context, url: str, code: str) -> None:
    """End the class's session from another tab (its own context, so it works while ``context`` is offline)."""
    control = context.browser.new_context(storage_state=context.storage_state()).new_page()
    control.goto(f"{url}/classes/{code}")
    control.click("#end-session")
    expect(control.locator("#session-state")).to_have_text("no session running")


def students_connected(context, url: str, code: str) -> int:
    return context.request.get(f"{url}/api/v1/classes/{code}/mood").json()["students"]


def test_a_student_who_stops_and_starts_at_once_still_hears_the_session_end(server, browser_factory,
                                                                            camera):
    teacher_ctx, _board, code = new_teacher(browser_factory, server)
    student, problems = open_student(browser_factory(camera), server.url, code, "Alice", init_script=SLOW_CAMERA)

    student.click("#stop")
    student.wait_for_timeout(100)
    student.click("#start")
    expect(student.locator("#sharing")).to_have_attribute("data-state", "on", timeout=10 * SECONDS)
    expect(student.locator("#stop")).to_be_focused()  # the keyboard stays on the toolbar
    expect(student.locator("#fps")).not_to_have_text("–", timeout=10 * SECONDS)
    assert students_connected(teacher_ctx, server.url, code) == 1

    end_session(teacher_ctx, server.url, code)
    expect(student.locator("#status")).to_contain_text("ended the session", timeout=10 * SECONDS)
    expect(student.locator("#sharing")).to_have_attribute("data-state", "off")
    assert student.evaluate("() => document.getElementById('video').srcObject") is None
    expect(student.locator("#fps")).to_have_text("–")  # no stale figures
    assert problems == []


def test_a_student_who_denies_the_camera_is_not_counted(server, browser_factory):
    teacher_ctx, _board, code = new_teacher(browser_factory, server)
    # A camera exists but the permission prompt is not accepted: headless Chromium denies it.
    page = browser_factory(fake_device=True, fake_ui=False).new_page()
    problems = watch(page)
    page.goto(f"{server.url}/join/{code}")
    page.fill("#display_name", "Bob")
    page.check("#consent")
    page.click("#join-submit")
    page.wait_for_url("**/live?start=1")
    expect(page.locator("#status")).to_contain_text("Camera access was denied", timeout=10 * SECONDS)
    expect(page.locator("#sharing")).to_have_attribute("data-state", "off")
    expect(page.locator("#start")).to_be_visible()
    deadline = time.monotonic() + 5
    while students_connected(teacher_ctx, server.url, code) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert students_connected(teacher_ctx, server.url, code) == 0
    assert problems == []


def test_a_dashboard_back_online_after_the_session_ended_says_so(server, browser_factory):
    teacher_ctx, board, code = new_teacher(browser_factory, server)
    expect(board.locator("#board")).to_have_attribute("data-state", "live")

    teacher_ctx.set_offline(True)
    expect(board.locator("#alerts")).to_contain_text("Cannot reach the server", timeout=15 * SECONDS)
    end_session(teacher_ctx, server.url, code)  # the push that says so is missed
    teacher_ctx.set_offline(False)

    expect(board.locator("#board")).to_have_attribute("data-state", "ended", timeout=20 * SECONDS)
    expect(board.locator("#ended-banner")).to_be_visible()
    expect(board.locator("#ended-banner")).to_contain_text("The session has ended")
