"""Classroom Socket.IO events: students streaming real frames, teachers' dashboards, every refusal."""
from __future__ import annotations

import time

import cv2
import pytest

import app.classroom.events as classroom_events
from app.classroom.aggregate import negative_share
from app.classroom.service import NAMESPACE, ClassroomService
from app.extensions import socketio
from tests.classroom_fixtures import STUDENT_AUTH, classroom_app, create_class, join, register, send_frame
from tests.imagegen import encode, fit_frame


@pytest.fixture(scope="module")
def frame(faces_dir) -> bytes:
    return encode(fit_frame(cv2.imread(str(faces_dir / "obama.jpg"))), ".jpg", quality=70)


def sid_of(sc, namespace="/"):
    return socketio.server.manager.sid_from_eio_sid(sc.eio_sid, namespace)


def events(sc, name, namespace=None):
    return [e for e in sc.get_received(namespace) if e["name"] == name]


def send_frames(sc, frame, n=3):
    got = [send_frame(sc, seq, frame) for seq in range(n)]
    assert all(e["name"] == "faces" and len(e["args"][0]["faces"]) == 1 for e in got), got


def streaming_students(capp, open_, teacher, frame, *names):
    """One socket per named student, joined to the teacher's class, each with one frame counted."""
    sockets = []
    for name in names:
        client = capp.test_client()
        join(client, teacher.code, name)
        sc = open_(client, auth=STUDENT_AUTH)
        send_frames(sc, frame, 1)
        sockets.append(sc)
    return sockets


def dashboard(open_, teacher):
    sc = open_(teacher.client, namespace=NAMESPACE)
    assert sc.is_connected(NAMESPACE)
    ack = sc.emit("dashboard_join", {"code": teacher.code}, namespace=NAMESPACE, callback=True)
    assert ack["ok"], ack
    return sc, ack["summary"]


def test_student_frames_reach_the_teachers_dashboard(capp, teacher, student, sockets, frame):
    service = capp.extensions["classroom"]
    board, first = dashboard(sockets, teacher)
    assert first["students"] == 0 and first["session"]["running"]
    sc = sockets(student, auth=STUDENT_AUTH)
    assert sc.is_connected()
    assert service.student_of(sid_of(sc)) is not None
    send_frames(sc, frame)
    service.tick(force=True)
    (mood,) = events(board, "mood", NAMESPACE)
    summary = mood["args"][0]
    assert summary["students"] == 1 and summary["faces"] == 1
    assert sum(summary["distribution"].values()) == pytest.approx(1.0, abs=1e-3)
    assert summary["engagement"] > 0
    (tile,) = summary["per_student"]
    assert tile["name"] == "Sam" and tile["status"] == "active" and tile["label"] in summary["distribution"]
    # The same figures through the API.
    api = teacher.client.get(f"/api/v1/classes/{teacher.code}/mood").json
    assert api["students"] == 1 and api["distribution"] == summary["distribution"]


def test_live_page_streams_do_not_count(capp, teacher, student, sockets, frame):
    service = capp.extensions["classroom"]
    board, _ = dashboard(sockets, teacher)
    plain = sockets(student)  # the student's own browser, but the live page (no classroom auth)
    send_frames(plain, frame)
    assert service.student_of(sid_of(plain)) is None
    assert plain.emit("classroom_leave", callback=True) == {"ok": False}
    service.tick(force=True)
    summary = events(board, "mood", NAMESPACE)[0]["args"][0]
    assert summary["students"] == 0 and summary["frames"] == 0


def test_student_cannot_choose_another_class(capp, teacher, other_teacher, student, sockets, frame):
    service = capp.extensions["classroom"]
    mine, _ = dashboard(sockets, teacher)
    theirs, _ = dashboard(sockets, other_teacher)
    sc = sockets(student, auth={**STUDENT_AUTH, "code": other_teacher.code, "session": 2, "class": other_teacher.code})
    send_frames(sc, frame)
    service.tick(force=True)
    assert events(mine, "mood", NAMESPACE)[0]["args"][0]["students"] == 1
    assert events(theirs, "mood", NAMESPACE)[0]["args"][0]["students"] == 0


@pytest.mark.parametrize("visitor", ["anonymous", "the class's teacher"])
def test_student_connection_refused_without_a_joined_running_session(capp, teacher, sockets, visitor):
    client = capp.test_client() if visitor == "anonymous" else teacher.client  # logged in, but no student
    sc = sockets(client, auth=STUDENT_AUTH)
    assert not sc.is_connected()


def test_a_dashboard_that_leaves_gets_no_more_summaries(capp, teacher, student, sockets, frame):
    service = capp.extensions["classroom"]
    board, _ = dashboard(sockets, teacher)
    send_frames(sockets(student, auth=STUDENT_AUTH), frame, 1)
    service.tick(force=True)
    assert events(board, "mood", NAMESPACE)
    assert board.emit("dashboard_leave", {"code": teacher.code}, namespace=NAMESPACE, callback=True) == {"ok": True}
    service.tick(force=True)
    assert events(board, "mood", NAMESPACE) == []


def test_student_connection_refused_after_the_session_ended(capp, teacher, student, sockets):
    teacher.client.post(f"/classes/{teacher.code}/end")
    sc = sockets(student, auth=STUDENT_AUTH)
    assert not sc.is_connected()


def test_dashboard_socket_refuses_anonymous_and_students(capp, teacher, student, sockets):
    assert not sockets(capp.test_client(), namespace=NAMESPACE).is_connected(NAMESPACE)
    assert not sockets(student, namespace=NAMESPACE).is_connected(NAMESPACE)


def test_other_teacher_cannot_join_the_dashboard(capp, teacher, other_teacher, student, sockets, frame):
    service = capp.extensions["classroom"]
    spy = sockets(other_teacher.client, namespace=NAMESPACE)
    for data in ({"code": teacher.code}, {"code": teacher.code.lower()}, {"code": "NOPE22"}, {}, "junk", None,
                 {"code": 5}, {"code": [teacher.code]}):
        ack = spy.emit("dashboard_join", data, namespace=NAMESPACE, callback=True)
        assert "error" in ack and "summary" not in ack
    assert spy.emit("dashboard_leave", {"code": ["x"]}, namespace=NAMESPACE, callback=True) == {"ok": True}
    sc = sockets(student, auth=STUDENT_AUTH)
    send_frames(sc, frame, 1)
    service.tick(force=True)
    assert events(spy, "mood", NAMESPACE) == []


def test_leave_is_not_an_alert_but_a_lost_connection_is(capp, teacher, sockets, frame):
    service = capp.extensions["classroom"]
    board, _ = dashboard(sockets, teacher)
    a, b = streaming_students(capp, sockets, teacher, frame, "Lea", "Dan")
    assert a.emit("classroom_leave", callback=True) == {"ok": True}
    a.disconnect()
    b.disconnect()  # no classroom_leave first: the teacher is told
    service.tick(force=True)
    summary = events(board, "mood", NAMESPACE)[-1]["args"][0]
    assert summary["students"] == 0
    messages = [al["message"] for al in summary["alerts"]]
    assert any("Dan" in m and "lost" in m for m in messages) and not any("Lea" in m for m in messages)
    assert {t["name"]: t["status"] for t in summary["per_student"]} == {"Dan": "lost", "Lea": "left"}


def test_ending_the_session_stops_everything(capp, teacher, student, sockets, frame):
    service = capp.extensions["classroom"]
    board, _ = dashboard(sockets, teacher)
    sc = sockets(student, auth=STUDENT_AUTH)
    send_frames(sc, frame, 2)
    assert teacher.client.post(f"/classes/{teacher.code}/end").status_code == 302
    assert events(board, "session_ended", NAMESPACE)
    assert events(sc, "classroom_ended")
    assert service.student_of(sid_of(sc)) is None
    # Frames sent after the end count nowhere, and no more summaries are pushed.
    assert send_frame(sc, 9, frame)["name"] == "faces"  # analysed and answered, but counted nowhere
    service.tick(force=True)
    assert events(board, "mood", NAMESPACE) == []
    # What was sent before the end was stored.
    csv_text = teacher.client.get(f"/classes/{teacher.code}/export.csv").get_data(as_text=True)
    assert len(csv_text.strip().splitlines()) >= 2
    body = teacher.client.get(f"/api/v1/classes/{teacher.code}/mood").json
    assert body["session"]["running"] is False and sum(body["distribution"].values()) > 0.99
    # The stored summary has the negative share too (the dashboard shows it once the session ended).
    assert body["negative"] == pytest.approx(negative_share(body["distribution"]), abs=1e-3)


def test_a_student_connecting_while_the_session_ends_is_turned_away(capp, teacher, student, sockets, frame,
                                                                   monkeypatch):
    service = capp.extensions["classroom"]
    board, first = dashboard(sockets, teacher)
    real = classroom_events.current_student

    def checked_then_ended():  # the teacher ends the session right after the student's check
        got = real()
        assert teacher.client.post(f"/classes/{teacher.code}/end").status_code == 302
        return got

    monkeypatch.setattr(classroom_events, "current_student", checked_then_ended)
    sc = sockets(student, auth=STUDENT_AUTH)
    assert not sc.is_connected()
    assert service.find(first["session"]["id"]) is None
    service.tick(force=True)
    assert events(board, "mood", NAMESPACE) == []


def test_aggregate_only_switched_on_elsewhere_reaches_the_pushing_process(capp, teacher, sockets, frame):
    service = capp.extensions["classroom"]
    board, _ = dashboard(sockets, teacher)
    _, b = streaming_students(capp, sockets, teacher, frame, "Sam", "Dan")
    b.disconnect()  # a lost connection: an alert that names Dan
    service.tick(force=True)
    assert "Dan" in repr(events(board, "mood", NAMESPACE)[-1]["args"][0]["alerts"])
    # The switch is handled by another process, which has no live part of this session.
    capp.extensions["classroom"] = ClassroomService(capp)
    try:
        assert teacher.client.post(f"/classes/{teacher.code}/settings", data={"aggregate_only": "y"}).status_code == 302
    finally:
        capp.extensions["classroom"] = service
    body = teacher.client.get(f"/api/v1/classes/{teacher.code}/mood").json
    assert "per_student" not in body and "Dan" not in repr(body) and "Sam" not in repr(body)
    service.tick(force=True)
    mood = events(board, "mood", NAMESPACE)[-1]["args"][0]
    assert mood["class"]["aggregate_only"] is True and "per_student" not in mood
    assert "Dan" not in repr(mood) and "Sam" not in repr(mood)
    assert any(al["kind"] == "lost" and al["message"] == "1 student's connection was lost." for al in mood["alerts"])


def test_the_ticker_pushes_on_its_own(tmp_path, faces_dir, frame):
    app = classroom_app(f"sqlite:///{tmp_path / 'db.sqlite3'}", CLASSROOM_TICKER=True, CLASSROOM_PUSH_SECONDS=0.3,
                        CLASSROOM_FLUSH_SECONDS=0.3)
    service = app.extensions["classroom"]
    teacher_client, student_client = app.test_client(), app.test_client()
    register(teacher_client, "ann@example.org")
    code = create_class(teacher_client)
    join(student_client, code)
    board = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=teacher_client)
    sc = socketio.test_client(app, flask_test_client=student_client, auth=STUDENT_AUTH)
    try:
        assert board.emit("dashboard_join", {"code": code}, namespace=NAMESPACE, callback=True)["ok"]
        deadline = time.monotonic() + 10
        pushed = []
        while time.monotonic() < deadline and not [p for p in pushed if p["args"][0]["faces"]]:
            sc.emit("frame", {"seq": 1, "image": frame})
            time.sleep(0.2)
            pushed += events(board, "mood", NAMESPACE)
        assert pushed and pushed[-1]["args"][0]["students"] == 1
        time.sleep(1.5)  # a finished second has been flushed by the ticker, not by us
        assert service.writer.stats["written"] >= 1
    finally:
        sc.disconnect()
        board.disconnect(namespace=NAMESPACE)
        service.stop()
