"""End to end: the student's side of a class in headless Chromium.

Leaving the class while sharing, a wrong or idle class code, a page that must
not show stale results or stale promises, and where the cursor goes after a
form error. One real server (gunicorn, threads) for the module.
"""
from __future__ import annotations

import time

import pytest

from tests.browser import watch
from tests.test_classroom_e2e import EMOTION, PASSWORD, SECONDS, new_teacher, open_student

try:
    from playwright.sync_api import expect
except ImportError:  # the playwright_session fixture skips (or fails in CI) and says why
    expect = None

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LEFT = "You left “Biology 7B”. Nothing more is sent from this browser."


@pytest.fixture(scope="module")
def server(server_factory):
    srv = server_factory("threading", CLASSROOM_PUSH_SECONDS="0.5")
    yield srv
    srv.stop()


def script_problems(problems: list[str]) -> list[str]:
    """The page's errors, less the console's note of a 4xx answer (those pages are meant to be 404, 410, 401)."""
    return [p for p in problems if "Failed to load resource" not in p]


def end_session(board) -> None:
    board.click("#end-session")
    expect(board.locator("#session-state")).to_have_text("no session running")


@pytest.mark.parametrize("how", ["button", "form without the page's script"])
def test_leaving_while_sharing_is_left_not_a_lost_connection(server, browser_factory, camera, how):
    _ctx, board, code = new_teacher(browser_factory, server)
    student, problems = open_student(browser_factory(camera), server.url, code, "Kim")
    expect(board.locator("#tiles .tile[data-status=active]")).to_have_count(1, timeout=15 * SECONDS)
    tile = board.locator("#tiles .tile")

    if how == "button":
        # The page stops the camera and says it leaves on its socket before it sends the form:
        # the form's sending is held back here until the dashboard has heard it.
        student.evaluate("""() => {
          window.heldSubmit = HTMLFormElement.prototype.submit;
          HTMLFormElement.prototype.submit = function () { window.submitted = this.id; };
        }""")
        student.click("#forget-form button[type=submit]")
        expect(tile).to_have_attribute("data-status", "left", timeout=10 * SECONDS)
        assert student.evaluate("() => document.getElementById('video').srcObject") is None
        expect(student.locator("#my-emotion")).to_have_text("–")
        student.wait_for_function("() => window.submitted === 'forget-form'")
        student.evaluate("() => window.heldSubmit.call(document.getElementById('forget-form'))")
    else:  # form.submit() skips the submit handler: the server alone must report a leave
        student.evaluate("() => HTMLFormElement.prototype.submit.call(document.getElementById('forget-form'))")
    student.wait_for_url("**/classroom")

    expect(tile).to_have_attribute("data-status", "left", timeout=10 * SECONDS)
    expect(tile).to_contain_text("stopped sharing")
    time.sleep(3)  # several pushes later: still a leave, and never an alert
    expect(tile).to_have_attribute("data-status", "left")
    expect(board.locator("#alerts")).not_to_contain_text("connection was lost")
    expect(board.locator("#kpi-students")).to_have_text("0")
    # The student is told, on the page where they can join again.
    expect(student.locator(".flash")).to_have_text(LEFT)
    expect(student.locator("#code")).to_be_visible()
    assert problems == []


# The browser's fake camera, passed through a track the test ends (window.unplugCamera()) as the browser ends an
# unplugged camera's: readyState "ended" and an "ended" event.
UNPLUGGABLE_CAMERA = """
const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (constraints) => {
  const real = await getUserMedia(constraints);
  const [track] = real.getVideoTracks();
  const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
  const passed = new MediaStreamTrackGenerator({ kind: "video" });
  const writer = passed.writable.getWriter();
  let plugged = true;
  (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      if (plugged) await writer.write(value).catch(() => {}); else value.close();
    }
  })();
  window.unplugCamera = () => { plugged = false; writer.close(); track.stop(); };
  return new MediaStream([passed]);
};
"""


def test_a_camera_that_stops_while_sharing_stops_the_sharing_and_says_so(server, browser_factory, camera):
    _ctx, board, code = new_teacher(browser_factory, server)
    student, problems = open_student(browser_factory(camera), server.url, code, "Kim",
                                     init_script=UNPLUGGABLE_CAMERA)
    tile = board.locator("#tiles .tile")
    expect(tile).to_have_attribute("data-status", "active", timeout=15 * SECONDS)

    student.evaluate("() => window.unplugCamera()")
    expect(student.locator("#status")).to_contain_text("The camera stopped", timeout=10 * SECONDS)
    expect(student.locator("#sharing")).to_have_attribute("data-state", "off")
    expect(student.locator("#sharing-text")).to_have_text("Not sharing")
    expect(student.locator("#start")).to_be_visible()
    expect(student.locator("#my-emotion")).to_have_text("–")
    expect(student.locator("#placeholder")).to_have_text("Camera stopped")
    # The teacher sees a student who stopped sharing, not a lost connection.
    expect(tile).to_have_attribute("data-status", "left", timeout=10 * SECONDS)
    expect(board.locator("#alerts")).not_to_contain_text("connection was lost")

    student.click("#start")  # the camera is back: sharing again
    expect(student.locator("#sharing")).to_have_attribute("data-state", "on", timeout=20 * SECONDS)
    expect(tile).to_have_attribute("data-status", "active", timeout=15 * SECONDS)
    assert problems == []


def test_the_student_page_shows_nothing_stale(server, browser_factory, camera):
    _ctx, board, code = new_teacher(browser_factory, server)
    alice, alice_problems = open_student(browser_factory(camera), server.url, code, "Alice")
    bob, bob_problems = open_student(browser_factory(camera), server.url, code, "Bob")
    # Stop sharing: no result from before, and the video area says why it is dark.
    bob.click("#stop")
    expect(bob.locator("#sharing")).to_have_attribute("data-state", "off")
    expect(bob.locator("#my-emotion")).to_have_text("–")
    expect(bob.locator("#placeholder")).to_be_visible()
    expect(bob.locator("#placeholder")).to_have_text("Sharing stopped")
    names_shown = "Your teacher sees your display name and current emotion, and the class's combined mood."
    expect(alice.locator("#who-sees")).to_have_text(names_shown)

    # The teacher switches aggregate-only on: Alice, sharing, is told at once; Bob, whose page says
    # the same as before the switch, as soon as he shares again.
    board.check("#aggregate_only")
    board.click("#settings-form button[type=submit]")
    expect(board.locator(".flash")).to_contain_text("Aggregate-only mode is on")
    expect(alice.locator("#who-sees")).to_contain_text("aggregate-only", timeout=5 * SECONDS)
    expect(alice.locator("#who-sees")).to_contain_text("not your name or your emotion")
    expect(bob.locator("#who-sees")).to_have_text(names_shown)
    bob.click("#start")
    expect(bob.locator("#sharing")).to_have_attribute("data-state", "on", timeout=10 * SECONDS)
    expect(bob.locator("#who-sees")).to_contain_text("aggregate-only", timeout=5 * SECONDS)
    expect(bob.locator("#my-emotion")).to_have_text(EMOTION, timeout=20 * SECONDS)

    # The session ends: nothing stale on either page.
    end_session(board)
    for page in (alice, bob):
        expect(page.locator("#status")).to_contain_text("ended the session", timeout=10 * SECONDS)
        expect(page.locator("#my-emotion")).to_have_text("–")
        expect(page.locator("#placeholder")).to_have_text("Camera off")
        expect(page.locator("#placeholder")).to_be_visible()
    assert alice_problems == [] and bob_problems == []


def test_a_wrong_or_idle_class_code_gives_the_code_form_again(server, browser_factory):
    _ctx, board, code = new_teacher(browser_factory, server)
    page = browser_factory().new_page()
    problems = watch(page)
    page.goto(server.url + "/classroom")
    page.fill("#code", "zzzz-zz")
    page.click("#code-form button[type=submit]")
    expect(page.locator("#code-form .field-error")).to_have_text(
        "No class has the code ZZZZZZ: check it with your teacher.")
    expect(page.locator("#code")).to_have_value("ZZZZZZ")
    expect(page.locator("#code")).to_be_focused()
    expect(page.locator("h1")).to_have_text("Join a class")

    end_session(board)
    page.fill("#code", code)
    page.click("#code-form button[type=submit]")
    expect(page.locator("#code-form .field-error")).to_have_text(
        "The class “Biology 7B” has no session running now: wait for your teacher to start it, then try again.")
    # The join link of that class, opened (a student reloading it, say), explains the same with the form.
    page.goto(f"{server.url}/join/{code}")
    expect(page.locator("#code-form .field-error")).to_contain_text("has no session running now")
    expect(page.locator("#code")).to_have_value(code)
    assert script_problems(problems) == []


@pytest.mark.parametrize("form, fill, focused", [
    ("register", {"#name": "Ms Rivera", "#email": "not an address", "#password": PASSWORD, "#confirm": PASSWORD},
     "#email"),
    ("register", {"#name": "Ms Rivera", "#email": "rivera@example.org", "#password": PASSWORD, "#confirm": "x"},
     "#confirm"),
    ("login", {"#email": "nobody@example.org", "#password": "wrong password"}, "#password"),
])
def test_after_a_form_error_the_cursor_is_in_the_first_field_to_fix(server, browser_factory, form, fill, focused):
    page = browser_factory().new_page()
    problems = watch(page)
    page.goto(f"{server.url}/{form}")
    for selector, value in fill.items():
        page.fill(selector, value)
    page.click(f"#{form}-form button[type=submit]")
    expect(page.locator(f"{focused}[aria-invalid=true]")).to_be_visible()
    expect(page.locator(focused)).to_be_focused()
    assert script_problems(problems) == []
