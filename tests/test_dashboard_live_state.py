"""The teacher's dashboard shows live state only while it is live.

Figures marked stale while the connection is lost or no summary comes; a
join that is not answered, or that the database fails, asked again; a class
deleted or a session ended in another tab; a reconnection that finds another
session; "no session yet"; alerts changed one by one; the export of the
session shown. Socket.IO test-client and page tests first, then headless
Chromium against one real server (gunicorn, threads) for the module; its
students are plain Socket.IO clients (no camera, no model).
"""
from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete
from sqlalchemy.exc import OperationalError

import app.classroom.events as classroom_events
from app.classroom.models import ClassSession, Student
from app.classroom.service import NAMESPACE, room
from app.extensions import db, socketio
from tests.browser import watch
from tests.classroom_fixtures import STUDENT_AUTH
from tests.test_classroom_e2e import SECONDS, new_teacher

try:
    from playwright.sync_api import expect
except ImportError:  # the playwright_session fixture skips (or fails in CI) and says why
    expect = None

BOARD = re.compile(r'<section id="board"[^>]*>', re.S)
BANNER = re.compile(r'id="ended-banner"[^>]*>(.*?)</p>', re.S)
EXPORT = re.compile(r'href="([^"]+)"\s+id="export"')
STALE = re.compile(r"(^|\s)stale(\s|$)")


def db_down(*_args, **_kwargs):
    raise OperationalError("SELECT", {}, Exception("database is locked"))


def in_chromium(test):
    """Mark a test as one that drives headless Chromium (slow)."""
    return pytest.mark.slow(pytest.mark.browser(test))


def in_room(sc, code) -> bool:
    sid = socketio.server.manager.sid_from_eio_sid(sc.eio_sid, NAMESPACE)
    return any(s == sid for s, _ in socketio.server.manager.get_participants(NAMESPACE, room(code)))


# -- Socket.IO test client and pages --------------------------------------------------------------

@pytest.mark.parametrize("where", ["the class look-up", "the summary"])
def test_a_join_the_database_fails_is_answered_logged_and_can_be_asked_again(capp, teacher, sockets, caplog,
                                                                            monkeypatch, where):
    board = sockets(teacher.client, namespace=NAMESPACE)
    if where == "the class look-up":
        monkeypatch.setattr(db.session, "scalar", db_down)
    else:
        monkeypatch.setattr(classroom_events, "summary", db_down)
    with caplog.at_level(logging.WARNING, logger="moodlens.classroom.events"):
        ack = board.emit("dashboard_join", {"code": teacher.code}, namespace=NAMESPACE, callback=True)
    assert ack == {"error": "the database did not answer", "retry": True}
    assert any("database did not answer" in r.getMessage() and teacher.code in r.getMessage()
               for r in caplog.records), caplog.text
    assert not in_room(board, teacher.code)  # no pushes to a page that has no snapshot
    monkeypatch.undo()
    ack = board.emit("dashboard_join", {"code": teacher.code}, namespace=NAMESPACE, callback=True)
    assert ack["ok"] and ack["summary"]["session"]["running"] and in_room(board, teacher.code)


def test_joining_a_deleted_class_says_it_is_gone(capp, teacher, sockets):
    board = sockets(teacher.client, namespace=NAMESPACE)
    assert board.emit("dashboard_join", {"code": teacher.code}, namespace=NAMESPACE, callback=True)["ok"]
    teacher.client.post(f"/classes/{teacher.code}/delete", data={"confirm": "y"})
    ack = board.emit("dashboard_join", {"code": teacher.code}, namespace=NAMESPACE, callback=True)
    assert ack == {"error": "unknown class code", "gone": True}


def test_the_banner_tells_no_session_yet_from_a_past_one(capp, teacher):
    teacher.client.post(f"/classes/{teacher.code}/end")
    html = teacher.client.get(f"/classes/{teacher.code}").get_data(as_text=True)
    assert BANNER.search(html).group(1).strip() == "No session is running: the figures below are from the last session."
    with capp.app_context():  # retention deleted them all
        db.session.execute(delete(Student))
        db.session.execute(delete(ClassSession))
        db.session.commit()
    html = teacher.client.get(f"/classes/{teacher.code}").get_data(as_text=True)
    banner = BANNER.search(html).group(1).strip()
    assert banner.startswith("No session yet") and "last session" not in banner
    assert 'data-session=""' in BOARD.search(html).group(0)


def test_the_export_link_names_the_session_shown(capp, teacher):
    html = teacher.client.get(f"/classes/{teacher.code}").get_data(as_text=True)
    shown = re.search(r'data-session="(\d+)"', BOARD.search(html).group(0)).group(1)
    assert EXPORT.search(html).group(1) == f"/classes/{teacher.code}/export.csv?session={shown}"
    teacher.client.post(f"/classes/{teacher.code}/end")
    teacher.client.post(f"/classes/{teacher.code}/start")  # a newer session: the newest is the CSV's default
    html = teacher.client.get(f"/classes/{teacher.code}").get_data(as_text=True)
    newer = re.search(r'data-session="(\d+)"', BOARD.search(html).group(0)).group(1)
    assert newer != shown and EXPORT.search(html).group(1).endswith(f"?session={newer}")
    assert teacher.client.get(f"/classes/{teacher.code}/export.csv?session={shown}").status_code == 200


# -- In Chromium ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(server_factory):
    # Silent students' cameras raise no alert within a test (its students send no frame).
    srv = server_factory("threading", CLASSROOM_PUSH_SECONDS="0.5", CLASSROOM_STALE_SECONDS="120")
    yield srv
    srv.stop()


@pytest.fixture
def students(server):
    """``join(code, name) -> Probe``: a student's stream (a Socket.IO client, no camera); all closed after."""
    from tests.live_clients import Probe, student

    opened = []

    def join(code: str, name: str):
        web = student(server.url, code, name)
        probe = Probe(server.url, headers=web.cookie_header(), auth=STUDENT_AUTH).connect()
        opened.append(probe)
        return probe

    yield join
    for probe in opened:
        if probe.sio.connected:
            probe.close()


def control_tab(context, url: str, code: str):
    """The class's dashboard in a context of its own with the same login (it works while ``context`` is offline)."""
    page = context.browser.new_context(storage_state=context.storage_state()).new_page()
    page.goto(f"{url}/classes/{code}")
    return page


def end_and_start(control, code: str, start: bool = False) -> None:
    control.click("#end-session")
    expect(control.locator("#session-state")).to_have_text("no session running")
    if start:
        control.click("#start-session")
        expect(control.locator("#session-state")).to_have_text("running")


def live(board, updates: int = 1) -> None:
    """Wait until the dashboard has drawn ``updates`` summaries."""
    board.wait_for_function(f"() => Number(document.getElementById('board').dataset.updates) >= {updates}",
                            timeout=15 * SECONDS)


def routed_board(context, url: str, code: str, to_page=None, to_server=None):
    """A new dashboard page whose Socket.IO WebSocket passes through ``to_page(message)`` (server -> page)
    and ``to_server(message)`` (page -> server): each returns whether to forward the message."""
    def route(ws):
        upstream = ws.connect_to_server()
        if to_page:
            upstream.on_message(lambda m: ws.send(m) if to_page(m) else None)
        if to_server:
            ws.on_message(lambda m: upstream.send(m) if to_server(m) else None)

    context.route_web_socket(re.compile(r"/socket\.io/"), route)
    page = context.new_page()
    page.goto(f"{url}/classes/{code}")
    return page


@in_chromium
def test_a_lost_connection_marks_the_figures_stale_until_it_is_back(server, browser_factory):
    teacher_ctx, board, _code = new_teacher(browser_factory, server)
    live(board)
    expect(board.locator("#link-status")).to_be_hidden()

    teacher_ctx.set_offline(True)
    status = board.get_by_role("status").locator("#link-status")  # read out
    expect(status).to_be_visible(timeout=10 * SECONDS)
    expect(status).to_contain_text("reconnecting")
    expect(board.locator("#board")).to_have_class(STALE)
    expect(board.locator("#kpi-when-label")).to_have_text("Figures from")
    assert f"The figures below are from {board.inner_text('#kpi-when')}." in status.inner_text()

    teacher_ctx.set_offline(False)
    expect(status).to_be_hidden(timeout=20 * SECONDS)
    expect(board.locator("#board")).not_to_have_class(STALE)
    expect(board.locator("#kpi-when-label")).to_have_text("Updated")
    expect(board.locator("#board")).to_have_attribute("data-state", "live")


@in_chromium
def test_figures_that_stop_coming_are_marked_stale_until_they_come_again(server, browser_factory):
    teacher_ctx, first, code = new_teacher(browser_factory, server)
    first.close()
    pushes = {"pass": True}
    board = routed_board(teacher_ctx, server.url, code, to_page=lambda m: pushes["pass"] or '["mood"' not in str(m))
    problems = watch(board)
    live(board, 3)

    pushes["pass"] = False  # the connection stays up (pings pass), the summaries no longer come
    status = board.locator("#link-status")
    expect(status).to_contain_text("No update from the server", timeout=10 * SECONDS)
    expect(status).to_contain_text(re.compile(r"The figures below are from \d\d:\d\d:\d\d\."))
    expect(board.locator("#board")).to_have_class(STALE)

    pushes["pass"] = True
    expect(status).to_be_hidden(timeout=10 * SECONDS)
    expect(board.locator("#board")).not_to_have_class(STALE)
    expect(board.locator("#kpi-when-label")).to_have_text("Updated")
    assert problems == []


@in_chromium
def test_an_unanswered_join_is_asked_again_and_the_page_says_so(server, browser_factory):
    teacher_ctx, first, code = new_teacher(browser_factory, server)
    first.close()
    joins = {"pass": False}
    board = routed_board(teacher_ctx, server.url, code,
                         to_server=lambda m: joins["pass"] or "dashboard_join" not in str(m))
    problems = watch(board)
    status = board.locator("#link-status")
    expect(status).to_contain_text(re.compile(r"no answer from the server\); trying again in \d+ s"),
                                   timeout=15 * SECONDS)
    assert board.get_attribute("#board", "data-updates") == "0"

    joins["pass"] = True
    live(board)
    expect(status).to_be_hidden()
    expect(board.locator("#board")).to_have_attribute("data-state", "live")
    assert problems == []


@in_chromium
def test_a_class_deleted_in_another_tab_leaves_nothing_of_it(server, browser_factory, students):
    teacher_ctx, board, code = new_teacher(browser_factory, server)
    problems = watch(board)
    students(code, "Sam")
    students(code, "Dan").close()  # a lost connection: an alert that names Dan
    expect(board.locator("#alerts")).to_contain_text("Dan's connection was lost", timeout=15 * SECONDS)
    assert sorted(board.locator("#tiles .tile-name").all_inner_texts()) == ["Dan", "Sam"]

    control = teacher_ctx.new_page()
    control.goto(f"{server.url}/classes/{code}")
    control.check("#confirm")
    control.click("#delete-class")
    control.wait_for_url("**/classes")

    expect(board.locator("#board")).to_have_attribute("data-state", "deleted", timeout=10 * SECONDS)
    banner = board.locator("#ended-banner")
    expect(banner).to_contain_text("This class was deleted")
    expect(banner).not_to_contain_text("Reload")
    expect(board.locator("#tiles .tile")).to_have_count(0)
    expect(board.locator("#alerts li")).to_have_count(0)
    text = board.inner_text("main")
    assert "Sam" not in text and "Dan" not in text, text
    assert board.evaluate("() => Chart.getChart('timeline-chart').data.datasets.every((d) => !d.data.length)")
    for kpi in ("#kpi-students", "#kpi-engagement", "#kpi-negative"):
        expect(board.locator(kpi)).to_have_text("–")
    for gone in ("#export", "#history", "#delete-form"):
        expect(board.locator(gone)).to_be_hidden()
    banner.get_by_role("link", name="Back to your classes").click()
    board.wait_for_url(f"{server.url}/classes")
    assert problems == []


@in_chromium
def test_a_session_ended_in_another_tab_leaves_no_live_figure(server, browser_factory, students):
    teacher_ctx, first, code = new_teacher(browser_factory, server)
    first.close()
    # This browser's clock is two hours fast: the end time shown must be the server's.
    teacher_ctx.clock.install(time=datetime.now(timezone.utc) + timedelta(hours=2))
    board = teacher_ctx.new_page()
    problems = watch(board)
    board.goto(f"{server.url}/classes/{code}")
    students(code, "Sam")
    expect(board.locator("#kpi-students")).to_have_text("1", timeout=15 * SECONDS)
    expect(board.locator("#kpi-engagement")).to_have_text("0%")  # connected, nothing sent
    expect(board.locator("#tiles .tile .muted")).to_have_text(["face not in view"])

    control = teacher_ctx.new_page()
    control.goto(f"{server.url}/classes/{code}")
    end_and_start(control, code)

    expect(board.locator("#board")).to_have_attribute("data-state", "ended", timeout=10 * SECONDS)
    for kpi in ("#kpi-students", "#kpi-faces", "#kpi-engagement", "#kpi-negative"):
        expect(board.locator(kpi)).not_to_have_text(re.compile(r"^[1-9]|%$"))  # no count or share of "now"
    expect(board.locator("#dist-chart").locator("xpath=ancestor::div[contains(@class, 'panel')][1]//h2")) \
        .to_have_text("Class mood over the session")
    tile = board.locator("#tiles .tile")
    expect(tile).to_have_attribute("data-status", "")
    expect(tile.locator(".muted")).not_to_have_text(re.compile(r"seen|face not in view|active"))
    api = teacher_ctx.request.get(f"{server.url}/api/v1/classes/{code}/mood").json()
    server_end = datetime.fromisoformat(api["session"]["ended"].replace("Z", "+00:00"))
    shown = datetime.fromisoformat(board.get_attribute("#kpi-when time", "datetime").replace("Z", "+00:00"))
    assert abs((shown - server_end).total_seconds()) <= 1, (shown, server_end)
    assert problems == []


@in_chromium
@pytest.mark.parametrize("shown", ["no session running", "a running session"])
def test_a_reconnection_never_shows_another_session(server, browser_factory, students, shown):
    teacher_ctx, board, code = new_teacher(browser_factory, server)
    control = control_tab(teacher_ctx, server.url, code)
    if shown == "no session running":
        end_and_start(control, code)
        board.reload()
        expect(board.locator("#session-state")).to_have_text("no session running")
    live(board)
    expect(board.locator("#board")).to_have_attribute("data-session", re.compile(r"^\d+$"))

    teacher_ctx.set_offline(True)
    expect(board.locator("#alerts")).to_contain_text("Cannot reach the server", timeout=20 * SECONDS)
    if shown == "no session running":
        control.click("#start-session")
    else:
        end_and_start(control, code, start=True)
    expect(control.locator("#session-state")).to_have_text("running")
    students(code, "Newcomer")  # in the new session
    teacher_ctx.set_offline(False)

    banner = board.locator("#ended-banner")
    expect(banner).to_contain_text("A new session is running — reload to see it", timeout=20 * SECONDS)
    expect(board.locator("#board")).to_have_attribute("data-state", "other-session")
    expect(board.locator("#session-state")).to_have_text(
        "no session running" if shown == "no session running" else "session ended")
    expect(board.locator("#kpi-students")).not_to_have_text("1")
    assert "Newcomer" not in board.inner_text("main")
    board.wait_for_timeout(1500)  # three pushes of the new session: none is drawn
    expect(board.locator("#kpi-students")).not_to_have_text("1")
    banner.get_by_role("link", name="reload to see it").click()
    expect(board.locator("#tiles .tile-name")).to_have_text(["Newcomer"], timeout=15 * SECONDS)


@in_chromium
def test_an_alert_is_added_and_removed_alone(server, browser_factory, students):
    _ctx, board, code = new_teacher(browser_factory, server)
    problems = watch(board)
    alice, bob = students(code, "Alice"), students(code, "Bob")
    expect(board.locator("#tiles .tile-name")).to_have_text(["Alice", "Bob"], timeout=15 * SECONDS)
    alice.close()
    first = board.locator("#alerts li")
    expect(first).to_have_text(["Alice's connection was lost."], timeout=15 * SECONDS)
    # Mark Alice's item, and record every item the list gains or loses from now on.
    board.evaluate("""() => {
      const list = document.getElementById("alerts");
      list.firstElementChild.dataset.mark = "kept";
      window.alertChanges = [];
      new MutationObserver((records) => records.forEach((r) => {
        r.addedNodes.forEach((n) => window.alertChanges.push(`+${n.textContent}`));
        r.removedNodes.forEach((n) => window.alertChanges.push(`-${n.textContent}`));
      })).observe(list, { childList: true });
    }""")
    bob.close()
    expect(board.locator("#alerts li")).to_have_text(["Alice's connection was lost.", "Bob's connection was lost."],
                                                     timeout=15 * SECONDS)
    board.wait_for_timeout(1500)  # a few more pushes with the same alerts
    assert board.get_attribute("#alerts li:first-child", "data-mark") == "kept"
    assert board.evaluate("() => window.alertChanges") == ["+Bob's connection was lost."]
    assert problems == []
