"""End to end: what the teacher's dashboard, session report and projector view show, in headless Chromium.

A gap in the mood timeline when nobody shared, times in the viewer's own time
zone, charts that shrink with the window, figures that agree with each other,
empty states, an ended session's dashboard without the join code, a projector
view that fits one screen. One real server (gunicorn, threads) for the module.
"""
from __future__ import annotations

import itertools
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.browser import watch
from tests.test_classroom_e2e import SECONDS, new_teacher, open_student

try:
    from playwright.sync_api import expect
except ImportError:  # the playwright_session fixture skips (or fails in CI) and says why
    expect = None

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STEP = 1  # seconds per timeline point on this server: a short pause makes a gap of several points
CLOCK = re.compile(r"^\d\d:\d\d:\d\d$")  # 24-hour local time, as every time on these pages

# The timeline chart's points of one emotion: [[x, y], ...] (y null: no data there).
TIMELINE = "() => Chart.getChart('timeline-chart').data.datasets[3].data.map((p) => [p.x, p.y])"
# The timeline's time axis labels as drawn (none when the axis hides them).
AXIS_LABELS = """() => {
  const x = Chart.getChart('timeline-chart').scales.x;
  return x.options.ticks.display === false ? [] : x.ticks.map((t) => String(t.label));
}"""
NO_SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth <= window.innerWidth"


@pytest.fixture(scope="module")
def server(server_factory):
    srv = server_factory("threading", CLASSROOM_PUSH_SECONDS="0.5", CLASSROOM_TIMELINE_STEP=str(STEP))
    yield srv
    srv.stop()


def end_session(context, url: str, code: str):
    """End the class's session from a second tab; returns that tab (on the dashboard)."""
    control = context.new_page()
    control.goto(f"{url}/classes/{code}")
    control.click("#end-session")
    expect(control.locator("#session-state")).to_have_text("no session running")
    return control


def open_report(page, url: str, code: str):
    """Open the class's latest session's report from its history, loaded."""
    page.goto(f"{url}/classes/{code}/history")
    page.click("#sessions a:text('view')")
    expect(page.locator("#report")).to_have_attribute("data-state", "loaded", timeout=10 * SECONDS)


def assert_gap(points: list[list], step: int = STEP) -> None:
    """A null point between two stretches of data, and no line drawn across missing buckets."""
    gaps = [i for i, (_, y) in enumerate(points) if y is None]
    assert gaps and 0 < gaps[0] < len(points) - 1, points
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if y0 is not None and y1 is not None:
            assert x1 - x0 <= step, f"a line over {x1 - x0} s without data: {points}"


def test_the_timeline_leaves_a_gap_while_nobody_shares(server, browser_factory, camera):
    teacher_ctx, board, code = new_teacher(browser_factory, server)
    problems = watch(board)
    student, student_problems = open_student(browser_factory(camera), server.url, code, "Alice")
    expect(board.locator("#kpi-faces")).to_have_text("1", timeout=15 * SECONDS)
    board.wait_for_function("() => Chart.getChart('timeline-chart').data.datasets[3].data.length >= 3",
                            timeout=15 * SECONDS)

    student.click("#stop")
    expect(student.locator("#sharing")).to_have_attribute("data-state", "off")
    # Nobody connected: no figure of "now" is left over from the seconds before (faces, mood, engagement).
    expect(board.locator("#kpi-students")).to_have_text("0", timeout=10 * SECONDS)
    for kpi in ("#kpi-faces", "#kpi-engagement", "#kpi-negative"):
        expect(board.locator(kpi)).to_have_text("–")
    expect(board.locator("#dist-empty")).to_be_visible()
    assert board.eval_on_selector_all("#dist-list strong", "els => els.map((e) => e.textContent)") == ["–"] * 7

    board.wait_for_timeout(4 * STEP * SECONDS)
    student.click("#start")
    expect(student.locator("#sharing")).to_have_attribute("data-state", "on", timeout=10 * SECONDS)
    expect(board.locator("#kpi-faces")).to_have_text("1", timeout=15 * SECONDS)
    board.wait_for_function("""() => {
      const d = Chart.getChart('timeline-chart').data.datasets[3].data;
      const gap = d.findIndex((p) => p.y === null);
      return gap > 0 && d.length - gap > 3;
    }""", timeout=15 * SECONDS)
    assert_gap(board.evaluate(TIMELINE))

    # The report of the ended session has the same gap.
    control = end_session(teacher_ctx, server.url, code)
    open_report(control, server.url, code)
    assert_gap(control.evaluate(TIMELINE))
    assert problems == [] and student_problems == []


def test_times_are_the_viewers_local_time_everywhere(server, browser_factory, camera):
    teacher_ctx, _board, code = new_teacher(browser_factory, server)
    zone = "America/New_York"
    local = teacher_ctx.browser.new_context(storage_state=teacher_ctx.storage_state(), timezone_id=zone,
                                            locale="en-US", viewport={"width": 1280, "height": 1000})
    board = local.new_page()
    problems = watch(board)
    board.goto(f"{server.url}/classes/{code}")
    started = board.locator(".class-head time")  # "running since ..."
    utc = datetime.fromisoformat(started.get_attribute("datetime").replace("Z", "+00:00"))
    expect(started).to_have_text(utc.astimezone(ZoneInfo(zone)).strftime("%H:%M"))  # not "23:34 UTC"

    student, _ = open_student(browser_factory(camera), server.url, code, "Alice")
    expect(board.locator("#kpi-faces")).to_have_text("1", timeout=15 * SECONDS)
    board.wait_for_function("() => Chart.getChart('timeline-chart').data.datasets[3].data.length >= 3",
                            timeout=15 * SECONDS)
    labels = board.evaluate(AXIS_LABELS)
    assert labels and all(CLOCK.match(label) for label in labels), labels  # 24-hour, no AM/PM
    assert CLOCK.match(board.inner_text("#kpi-when"))

    control = end_session(local, server.url, code)
    ended = control.locator("#kpi-when time")
    utc_end = datetime.fromisoformat(ended.get_attribute("datetime").replace("Z", "+00:00"))
    expect(ended).to_have_text(utc_end.astimezone(ZoneInfo(zone)).strftime("%H:%M:%S"))
    open_report(control, server.url, code)
    title = control.inner_text("h1")
    assert "UTC" not in title and utc.astimezone(ZoneInfo(zone)).strftime("%H:%M") in title, title
    labels = control.evaluate(AXIS_LABELS)
    assert labels and all(CLOCK.match(label) for label in labels), labels
    control.goto(f"{server.url}/classes/{code}/history")
    first = control.locator("#sessions tbody tr").first.locator("time").first
    expect(first).not_to_contain_text("UTC")
    assert utc.astimezone(ZoneInfo(zone)).strftime("%H:%M") in first.inner_text(), first.inner_text()
    assert problems == []
    student.close()


def test_an_empty_session_says_nothing_was_recorded(server, browser_factory):
    teacher_ctx, board, code = new_teacher(browser_factory, server)
    problems = watch(board)
    expect(board.locator("#board")).to_have_attribute("data-updates", re.compile(r"^[1-9]"), timeout=10 * SECONDS)
    for note in ("#tiles-empty", "#timeline-empty", "#dist-empty"):
        expect(board.locator(note)).to_be_visible()
    for kpi in ("#kpi-faces", "#kpi-engagement", "#kpi-negative"):
        expect(board.locator(kpi)).to_have_text("–")
    assert board.evaluate(AXIS_LABELS) == []  # not 00:00:00 ... 00:00:01 of 1 January 1970

    control = end_session(teacher_ctx, server.url, code)
    open_report(control, server.url, code)
    for note in ("#timeline-empty", "#dist-empty"):
        expect(control.locator(note)).to_be_visible()
    expect(control.locator("#timeline-empty")).to_have_text("Nothing was recorded in this session.")
    for kpi in ("#kpi-engagement", "#kpi-negative"):
        expect(control.locator(kpi)).to_have_text("–")
    assert control.evaluate(AXIS_LABELS) == []
    assert problems == []


def test_the_dashboard_shrinks_with_the_window(server, browser_factory):
    _ctx, board, _code = new_teacher(browser_factory, server)
    expect(board.locator("#board")).to_have_attribute("data-updates", re.compile(r"^[1-9]"), timeout=10 * SECONDS)
    board.wait_for_timeout(500)  # the charts drawn at 1280 px
    for width in (1000, 850, 700):
        board.set_viewport_size({"width": width, "height": 900})
        board.wait_for_timeout(400)  # Chart.js resizes on the next animation frames
        assert board.evaluate(NO_SIDEWAYS_SCROLL), (width, board.evaluate("document.documentElement.scrollWidth"))


def test_an_ended_session_no_longer_offers_its_join_code(server, browser_factory):
    teacher_ctx, board, code = new_teacher(browser_factory, server)
    expect(board.locator("#join-code")).to_be_visible()
    end_session(teacher_ctx, server.url, code)

    # The dashboard that watched it end...
    expect(board.locator("#board")).to_have_attribute("data-state", "ended", timeout=10 * SECONDS)
    expect(board.locator("#join-code")).to_be_hidden()
    expect(board.locator("#join-qr")).to_be_hidden()
    expect(board.locator("#session-state")).to_have_text("session ended")
    expect(board.locator("#kpi-when-label")).to_have_text("Session ended")
    # ... and once reloaded.
    board.reload()
    expect(board.locator("#session-state")).to_have_text("no session running")
    assert board.locator("#join-code, #join-qr").count() == 0
    expect(board.locator("#kpi-when-label")).to_have_text("Session ended")
    expect(board.locator("#kpi-when")).to_have_text(CLOCK)
    expect(board.locator("#kpi-faces")).to_have_text("–", timeout=10 * SECONDS)


def test_logging_out_in_another_tab_takes_the_students_off_the_dashboard(server, browser_factory, camera):
    teacher_ctx, board, code = new_teacher(browser_factory, server)
    student, _problems = open_student(browser_factory(camera), server.url, code, "Alice")
    expect(board.locator("#tiles .tile-name")).to_have_text(["Alice"], timeout=20 * SECONDS)
    other_tab = teacher_ctx.new_page()
    other_tab.goto(f"{server.url}/classes")
    other_tab.click("#logout")
    expect(other_tab.locator(".flash")).to_contain_text("You are logged out")

    expect(board.locator("#board")).to_have_attribute("data-state", "logged-out", timeout=10 * SECONDS)
    expect(board.locator("#ended-banner")).to_have_text(re.compile(r"^You are logged out"))
    expect(board.locator("#tiles .tile-name")).to_have_count(0)
    expect(board.locator("#join-code")).to_be_hidden()
    student.close()


def test_the_projector_view_fits_one_screen_with_a_legible_link(server, browser_factory):
    teacher_ctx, _board, code = new_teacher(browser_factory, server)
    page = teacher_ctx.new_page()
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{server.url}/classes/{code}/present")
    link = page.get_by_text(f"{server.url}/join/{code}", exact=True)  # for those who cannot scan the QR code
    expect(link).to_be_visible()
    assert page.evaluate("document.documentElement.scrollHeight") <= 800
    style = link.evaluate("""(el) => {
      const s = getComputedStyle(el);
      return { size: parseFloat(s.fontSize), colour: s.color };
    }""")
    assert style["size"] >= 28 and style["colour"] == "rgb(232, 236, 243)", style  # big, in the text colour
    page.set_viewport_size({"width": 390, "height": 800})  # a phone: stacked, nothing sideways
    page.wait_for_timeout(200)
    assert page.evaluate(NO_SIDEWAYS_SCROLL)
