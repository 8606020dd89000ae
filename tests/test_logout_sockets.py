"""A teacher's log-out (or another log-in in the same browser) closes that login's open dashboard sockets.

A dashboard socket keeps the Flask session it connected with: without the
fix it went on getting the class's live summaries, student names included,
and could join the teacher's other classes after the log-out. The last test
runs two real processes sharing a Redis message queue: the log-out on one
closes the dashboard on the other.
"""
from __future__ import annotations

import time

import cv2
import pytest

import app.classroom.events as classroom_events
from app.classroom.events import LOGIN_KEY
from app.classroom.service import NAMESPACE, room
from app.extensions import socketio
from tests.classroom_fixtures import STUDENT_AUTH, classroom_app, create_class, join, login, register, send_frame
from tests.imagegen import encode, fit_frame


@pytest.fixture(scope="module")
def frame(faces_dir) -> bytes:
    return encode(fit_frame(cv2.imread(str(faces_dir / "obama.jpg"))), ".jpg", quality=70)


def board_of(open_, client, code):
    """A dashboard socket of ``client``'s login, joined to class ``code``."""
    board = open_(client, namespace=NAMESPACE)
    assert board.is_connected(NAMESPACE)
    ack = board.emit("dashboard_join", {"code": code}, namespace=NAMESPACE, callback=True)
    assert ack.get("ok") is True, ack
    return board


def sent_to(board, name):
    """The ``name`` events the server sent to ``board`` so far (read even once it is disconnected), then forgotten."""
    got = [e for e in board.queue if e["name"] == name]
    board.queue.clear()
    return got


def in_room(board, code) -> bool:
    sid = socketio.server.manager.sid_from_eio_sid(board.eio_sid, NAMESPACE)
    return sid is not None and any(s == sid for s, _ in socketio.server.manager.get_participants(NAMESPACE, room(code)))


def streaming(capp, open_, code, frame, name="Zelda Secretname"):
    """A student of class ``code`` with one frame counted."""
    client = capp.test_client()
    assert join(client, code, name).status_code == 302
    sc = open_(client, auth=STUDENT_AUTH)
    assert send_frame(sc, 0, frame)["name"] == "faces"
    return sc


def test_logout_disconnects_the_dashboard_and_nothing_more_reaches_it(capp, teacher, sockets, frame):
    service = capp.extensions["classroom"]
    board = board_of(sockets, teacher.client, teacher.code)
    kid = streaming(capp, sockets, teacher.code, frame)
    service.tick(force=True)
    assert [t["name"] for t in sent_to(board, "mood")[0]["args"][0]["per_student"]] == ["Zelda Secretname"]

    assert teacher.client.post("/logout").status_code == 302
    send_frame(kid, 1, frame)
    service.tick(force=True)
    told = sent_to(board, "logged_out")
    assert sent_to(board, "mood") == [], "a summary reached the logged-out dashboard"
    assert not board.is_connected(NAMESPACE), "the dashboard socket is still open after the log-out"
    assert not in_room(board, teacher.code)
    assert told, "the dashboard was not told why"


def test_a_dashboard_of_an_ended_login_cannot_join_any_class(capp, teacher, sockets, monkeypatch):
    """Even before its disconnect arrives (relayed from another process, say), the socket is refused."""
    other = create_class(teacher.client, "Biology 2")
    board = board_of(sockets, teacher.client, teacher.code)
    monkeypatch.setattr(socketio.server, "disconnect", lambda *a, **k: None)  # the disconnect is on its way
    assert teacher.client.post("/logout").status_code == 302
    assert board.is_connected(NAMESPACE)
    for code in (other, teacher.code):
        ack = board.emit("dashboard_join", {"code": code}, namespace=NAMESPACE, callback=True)
        assert "ok" not in ack and "summary" not in ack and "logged out" in ack["error"], ack


def test_the_old_session_cookie_cannot_open_a_dashboard_after_logout(capp, teacher, sockets):
    copy = capp.test_client()
    copy.set_cookie("session", teacher.client.get_cookie("session").value)
    assert board_of(sockets, copy, teacher.code)  # the copy is the same login, while it lasts
    assert teacher.client.post("/logout").status_code == 302
    assert not sockets(copy, namespace=NAMESPACE).is_connected(NAMESPACE)
    assert not sockets(teacher.client, namespace=NAMESPACE).is_connected(NAMESPACE)


def test_the_old_session_cookie_opens_no_teacher_page_after_logout(capp, teacher):
    """A copy of the session cookie (another tab's, a stolen one) is logged out with the browser that logged out."""
    copy = capp.test_client()
    copy.set_cookie("session", teacher.client.get_cookie("session").value)
    pages = ["/classes", f"/classes/{teacher.code}", f"/classes/{teacher.code}/history"]
    assert all(copy.get(page).status_code == 200 for page in pages)  # the copy is the same login, while it lasts
    assert teacher.client.post("/logout").status_code == 302
    for page in pages:
        resp = copy.get(page)
        assert resp.status_code == 302 and resp.headers["Location"].startswith("/login"), page
        # The cookie the copy gets back (re-signed: it carries a flashed message) no longer names anyone, so it
        # cannot outlive the server's record of the log-out.
        with copy.session_transaction() as cookie:
            assert "_user_id" not in cookie and LOGIN_KEY not in cookie, dict(cookie)
    assert copy.get(f"/classes/{teacher.code}/export.csv").status_code == 401
    assert copy.get(f"/api/v1/classes/{teacher.code}/mood").status_code == 401
    resp = copy.post(f"/classes/{teacher.code}/end")  # cannot end the class either
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")
    # Logging in again, from the same browser, opens the pages again.
    assert login(copy, teacher.email).status_code == 302
    assert copy.get("/classes").status_code == 200


def test_the_old_session_cookie_stays_logged_out_after_a_restart(tmp_path):
    """The log-out is kept in the database: the same server restarted (same database, same secret key, no
    Redis) still refuses a copy of the logged-out session cookie, pages and dashboard alike."""
    url = f"sqlite:///{tmp_path / 'classroom.sqlite3'}"
    before = classroom_app(url)
    web = before.test_client()
    assert register(web, "ann@example.org", "Ann").status_code == 302
    code = create_class(web)
    cookie = web.get_cookie("session").value
    assert web.post("/logout").status_code == 302
    before.extensions["classroom"].stop()

    after = classroom_app(url)  # the restarted process: nothing of the log-out in its memory
    try:
        copy = after.test_client()
        copy.set_cookie("session", cookie)
        resp = copy.get("/classes")
        assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")
        assert copy.get(f"/classes/{code}/export.csv").status_code == 401
        assert not socketio.test_client(after, namespace=NAMESPACE, flask_test_client=copy).is_connected(NAMESPACE)
        # Logging in again works, and opens the pages.
        assert login(copy, "ann@example.org").status_code == 302
        assert copy.get("/classes").status_code == 200
    finally:
        after.extensions["classroom"].stop()


def test_another_teacher_logging_in_in_the_same_browser_does_not_inherit_the_dashboard(capp, teacher, sockets,
                                                                                         frame):
    service = capp.extensions["classroom"]
    assert register(capp.test_client(), "otto@example.org", "Otto").status_code == 302
    board = board_of(sockets, teacher.client, teacher.code)
    streaming(capp, sockets, teacher.code, frame)

    assert login(teacher.client, "otto@example.org").status_code == 302  # no log-out in between
    assert not board.is_connected(NAMESPACE) and sent_to(board, "logged_out")
    service.tick(force=True)
    assert sent_to(board, "mood") == []
    # The browser's new dashboard socket is Otto's: Ann's class is not his.
    otto = sockets(teacher.client, namespace=NAMESPACE)
    ack = otto.emit("dashboard_join", {"code": teacher.code}, namespace=NAMESPACE, callback=True)
    assert "summary" not in ack and ack["error"] == "only the class's teacher can open its dashboard"
    assert board_of(sockets, teacher.client, create_class(teacher.client, "Chemistry"))


def test_logging_out_elsewhere_leaves_this_login_open_and_logging_in_again_works(capp, teacher, sockets, frame):
    service = capp.extensions["classroom"]
    laptop = capp.test_client()
    assert login(laptop, teacher.email).status_code == 302  # the same teacher, another browser
    here = board_of(sockets, teacher.client, teacher.code)
    there = board_of(sockets, laptop, teacher.code)
    streaming(capp, sockets, teacher.code, frame)

    assert laptop.post("/logout").status_code == 302
    assert not there.is_connected(NAMESPACE)
    assert here.is_connected(NAMESPACE) and sent_to(here, "logged_out") == []
    service.tick(force=True)
    assert len(sent_to(here, "mood")) == 1
    assert login(laptop, teacher.email).status_code == 302  # a new login of that browser
    assert board_of(sockets, laptop, teacher.code)


def test_a_session_logged_in_without_a_login_id_gets_one_before_its_dashboard(capp, teacher, sockets):
    """A session from before login ids: its dashboard is refused until a classroom page gives it one."""
    with teacher.client.session_transaction() as cookie:
        del cookie[LOGIN_KEY]
    assert not sockets(teacher.client, namespace=NAMESPACE).is_connected(NAMESPACE)
    assert teacher.client.get(f"/classes/{teacher.code}").status_code == 200
    board = board_of(sockets, teacher.client, teacher.code)
    assert teacher.client.post("/logout").status_code == 302
    assert not board.is_connected(NAMESPACE)


def test_a_dashboard_connecting_while_its_login_ends_is_refused(capp, teacher, sockets, monkeypatch):
    """The log-out lands between the socket's identity check and its registration: the socket is refused."""
    with capp.app_context():
        registry = classroom_events.dashboard_logins()
    add = registry.add

    def add_as_the_login_ends(login_id, sid):
        registry.end(login_id)
        return add(login_id, sid)

    monkeypatch.setattr(registry, "add", add_as_the_login_ends)
    assert not sockets(teacher.client, namespace=NAMESPACE).is_connected(NAMESPACE)


# -- two processes -------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.redis
def test_logout_on_one_process_closes_the_dashboard_on_the_other(tmp_path, model_copy, redis_server):
    import requests
    from socketio.exceptions import ConnectionError as Refused

    from tests.browser import ServerProcess
    from tests.live_clients import Probe
    from tests.live_clients import teacher as new_teacher

    env = {"SOCKETIO_MESSAGE_QUEUE": redis_server.url, "DATABASE_URL": f"sqlite:///{tmp_path / 'shared.sqlite3'}"}
    first = ServerProcess("threading", workdir=tmp_path / "a", model_path=model_copy, env=env, threads=8).start()
    try:
        second = ServerProcess("threading", workdir=tmp_path / "b", model_path=model_copy,
                               env={**env, "DB_AUTO_UPGRADE": "0"}, threads=8).start()
    except Exception:
        first.stop()
        raise
    boards: list[Probe] = []
    try:
        web, code = new_teacher(first.url)  # logged in through the first process
        cookie = web.cookie_header()
        boards.append(Probe(second.url, headers=cookie, namespaces=[NAMESPACE]).connect())
        board = boards[0]
        assert board.call("dashboard_join", {"code": code}, namespace=NAMESPACE)["ok"] is True

        started = time.monotonic()
        assert web.form("/classes", {}, action="/logout").status_code == 302
        assert board.wait_for("logged_out", timeout=10) is not None, "the other process's dashboard was not told"
        assert board.wait_disconnected(10), "the other process did not close the dashboard"
        assert time.monotonic() - started < 10
        # The old cookie opens no dashboard, and no teacher page, on either process.
        for server in (second, first):
            page = requests.get(server.url + "/classes", headers=cookie, allow_redirects=False, timeout=10)
            assert page.status_code == 302 and page.headers["Location"].startswith("/login"), server.url
            probe = Probe(server.url, headers=cookie, namespaces=[NAMESPACE])
            boards.append(probe)
            with pytest.raises(Refused):
                probe.connect(wait_timeout=5)
            assert any("logged out" in str(m) for m in probe.connect_errors), probe.connect_errors
        assert "Traceback" not in first.log_text() + second.log_text()
    finally:
        for probe in boards:
            probe.close()
        second.stop()
        first.stop()


def test_a_redis_failure_of_the_login_calls_is_not_a_class_summary_outage(caplog):
    """The login bookkeeping keeps its own outage record: its failed calls neither mark the class-summary link
    down (merged summaries would stop for its retry interval) nor count in that link's log lines."""
    from types import SimpleNamespace

    from app.classroom.cluster import ClusterLink
    from tests.browser import free_port

    link = ClusterLink(f"redis://127.0.0.1:{free_port()}/0", push_every=1.5)  # nothing listens there
    logins = classroom_events.DashboardLogins(SimpleNamespace(cluster=link), ttl=60)
    with caplog.at_level("WARNING"):
        assert logins.add("some-login", "sid-1") is True  # Redis away: only this process's record counts
    assert logins.outage.down_since is not None
    assert link.outage.down_since is None and link.available
    assert any(r.getMessage().startswith("dashboard logins: Redis at") for r in caplog.records)
    link.close()


@pytest.mark.redis
def test_a_log_out_the_database_did_not_record_is_still_seen_by_the_other_processes(capp, redis_server, monkeypatch):
    """The database write of a log-out failed: another process still refuses the login (Redis has it)."""
    from sqlalchemy.exc import OperationalError

    from app.classroom.cluster import ClusterLink
    from app.extensions import db

    service = capp.extensions["classroom"]
    service.cluster = ClusterLink(redis_server.url, push_every=service.push_every, process_id="this")
    try:
        here = classroom_events.DashboardLogins(service, ttl=60)
        there = classroom_events.DashboardLogins(service, ttl=60)  # another process: its own memory
        with capp.app_context():
            real_commit = db.session.commit

            def failing_commit():
                raise OperationalError("INSERT", {}, Exception("disk I/O error"))

            monkeypatch.setattr(db.session, "commit", failing_commit)
            here.end("login-1")
            monkeypatch.setattr(db.session, "commit", real_commit)
            assert there.ended("login-1") is True
            assert there.ended("login-2") is False
    finally:
        service.cluster.close()
        service.cluster = None
