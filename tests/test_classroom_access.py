"""Access control on every classroom page, the API and the CSV: the class's teacher only."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from app.classroom.models import Classroom, ClassSession, Student, new_code
from app.extensions import db, socketio
from tests.classroom_fixtures import create_class, join, register

READS = ["/classes/{code}", "/classes/{code}/present", "/classes/{code}/history", "/classes/{code}/sessions/{sid}",
         "/classes/{code}/export.csv", "/classes/{code}/export.csv?by=student", "/api/v1/classes/{code}/mood"]
WRITES = ["/classes/{code}/end", "/classes/{code}/start", "/classes/{code}/settings", "/classes/{code}/delete"]


def session_id(app, code) -> int:
    with app.app_context():
        return db.session.scalar(select(ClassSession.id).join(Classroom).where(Classroom.code == code))


def who(request, capp, teacher, name):
    if name == "anonymous":
        return capp.test_client()
    if name == "student":
        return request.getfixturevalue("student")
    return request.getfixturevalue("other_teacher").client


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("visitor", ["anonymous", "student", "other teacher"])
def test_reads_are_refused_to_everyone_but_the_teacher(request, capp, teacher, path, visitor):
    url = path.format(code=teacher.code, sid=session_id(capp, teacher.code))
    resp = who(request, capp, teacher, visitor).get(url)
    if visitor == "other teacher":
        assert resp.status_code == 403
    elif url.startswith("/api/") or ".csv" in url:
        assert resp.status_code == 401
    else:  # a page: to the log-in form, and back afterwards
        assert resp.status_code == 302 and "/login?next=" in resp.headers["Location"]
    assert "Biology 7B" not in resp.get_data(as_text=True)  # nothing of the class leaks
    if url.startswith("/api/"):
        assert resp.is_json and "students" not in resp.json


@pytest.mark.parametrize("path", READS)
def test_the_teacher_can_read(capp, teacher, student, path):
    url = path.format(code=teacher.code, sid=session_id(capp, teacher.code))
    resp = teacher.client.get(url)
    assert resp.status_code == 200
    if url.endswith(".csv") or "export.csv?" in url:
        assert resp.mimetype == "text/csv"
    page = resp.get_data(as_text=True)
    if path == "/classes/{code}":
        assert 'Class mood now <span class="muted small">(last 10 s)</span>' in page
    if path.startswith("/classes/{code}/sessions/"):
        assert "<h2>Class mood over the whole session</h2>" in page
    if path in ("/classes/{code}", "/classes/{code}/sessions/{sid}"):
        for element in ('id="dist-chart"', 'id="timeline-chart"', 'id="tiles"', 'id="aggregate-note"'):
            assert element in page, element


@pytest.mark.parametrize("path", WRITES)
@pytest.mark.parametrize("visitor", ["anonymous", "student", "other teacher"])
def test_writes_are_refused_and_change_nothing(request, capp, teacher, path, visitor):
    resp = who(request, capp, teacher, visitor).post(path.format(code=teacher.code),
                                                    data={"confirm": "y", "aggregate_only": "y"})
    assert resp.status_code in ((403,) if visitor == "other teacher" else (302, 401))
    if resp.status_code == 302:
        assert "/login" in resp.headers["Location"]
    with capp.app_context():
        classroom = db.session.scalar(select(Classroom).where(Classroom.code == teacher.code))
        assert classroom is not None and not classroom.aggregate_only
        assert classroom.running_session() is not None


def test_unknown_class_is_404_for_a_teacher(teacher):
    assert teacher.client.get("/classes/NOPE99").status_code == 404
    resp = teacher.client.get("/api/v1/classes/NOPE99/mood")
    assert resp.status_code == 404 and resp.is_json


def test_another_classes_session_is_404(capp, teacher, other_teacher):
    other = session_id(capp, other_teacher.code)
    assert teacher.client.get(f"/classes/{teacher.code}/sessions/{other}").status_code == 404
    assert teacher.client.get(f"/classes/{teacher.code}/export.csv?session={other}").status_code == 404
    assert teacher.client.get(f"/api/v1/classes/{teacher.code}/mood?session={other}").status_code == 404


@pytest.mark.parametrize("query, status", [("session=abc", 400), ("session=0", 404), ("session=-1", 404),
                                           ("session=" + "9" * 30, 404), ("session=2147483648", 404)])
def test_session_parameter_out_of_range_is_404_and_not_a_number_400(capp, teacher, query, status):
    capp.config["PROPAGATE_EXCEPTIONS"] = False  # a crash must show as the 500 a client would get
    assert teacher.client.get(f"/api/v1/classes/{teacher.code}/mood?{query}").status_code == status
    assert teacher.client.get(f"/classes/{teacher.code}/export.csv?{query}").status_code == status


def test_api_mood_contract(teacher, student):
    body = teacher.client.get(f"/api/v1/classes/{teacher.code}/mood").json
    assert set(body) >= {"students", "distribution", "engagement", "timeline"}
    assert list(body["distribution"]) == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert isinstance(body["students"], int) and isinstance(body["timeline"], list)


# -- joining ------------------------------------------------------------------------------------

def code_form(resp) -> tuple[str, str]:
    """The value and the error of the page's class-code field (the /classroom form)."""
    html = resp.get_data(as_text=True)
    assert 'id="code-form"' in html and 'action="/join"' in html, html[:500]
    value = re.search(r'<input[^>]*id="code"[^>]*value="([^"]*)"', html)
    error = re.search(r'<span class="field-error" role="alert">([^<]*)</span>', html)
    return value.group(1) if value else "", error.group(1) if error else ""


@pytest.mark.parametrize("how", ["typed", "opened"])
def test_join_unknown_code_gives_the_code_form_again(capp, how):
    client = capp.test_client()
    resp = client.post("/join", data={"code": " zzzz-22 "}) if how == "typed" else client.get("/join/zzzz-22")
    assert resp.status_code == 404
    assert code_form(resp) == ("ZZZZ22", "No class has the code ZZZZ22: check it with your teacher.")
    assert "Not Found" not in resp.get_data(as_text=True)  # not the dead-end error page


@pytest.mark.parametrize("typed", ["---", "  - ", "!!", "ü", "\u00b2", "ABC", "ABCDEFG", "OOOOOO", "ABC 23I"])
def test_join_code_that_cannot_be_a_code_is_refused_in_the_form(capp, typed):
    resp = capp.test_client().post("/join", data={"code": typed})
    assert resp.status_code == 400 and "6 characters" in resp.get_data(as_text=True)


def test_guessing_codes_is_rate_limited_but_reloading_is_not(capp, teacher, student):
    capp.config["JOIN_RATE_LIMIT"] = "5 per minute"
    for _ in range(8):  # a joined student reloading their pages is not guessing
        assert student.get(f"/join/{teacher.code}/live").status_code == 200
        assert student.get(f"/join/{teacher.code}").status_code == 200
    guesser = capp.test_client()
    codes = [guesser.open(f"/join/{new_code()}" + ("/live" if i % 2 else ""), method="HEAD" if i % 3 else "GET")
             .status_code for i in range(6)]
    assert codes == [404] * 5 + [429]
    resp = guesser.get(f"/join/{teacher.code}")  # now even a right guess reveals nothing
    assert resp.status_code == 429 and "Biology 7B" not in resp.get_data(as_text=True)
    assert guesser.get(f"/join/{teacher.code}/live").status_code == 429


def test_join_ended_session_gives_a_clear_error(capp, teacher, student):
    teacher.client.post(f"/classes/{teacher.code}/end")
    client = capp.test_client()
    why = "The class “Biology 7B” has no session running now: wait for your teacher to start it, then try again."
    for resp in (client.post("/join", data={"code": teacher.code}), client.get(f"/join/{teacher.code}"),
                 student.get(f"/join/{teacher.code}/live")):  # typed, opened, or the student's page reloaded
        assert resp.status_code == 410
        assert code_form(resp) == (teacher.code, why)
    assert join(client, teacher.code).status_code == 410


def test_wrong_codes_typed_count_against_the_guess_limit(capp, teacher):
    capp.config["JOIN_RATE_LIMIT"] = "5 per minute"
    guesser = capp.test_client()
    resp = guesser.post("/join", data={"code": " " + teacher.code.lower() + " "})  # right: not a wrong guess
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/join/{teacher.code}")
    codes = [guesser.post("/join", data={"code": new_code()}).status_code for _ in range(3)]
    codes += [guesser.get(f"/join/{new_code()}").status_code for _ in range(2)]
    assert codes == [404] * 5
    for resp in (guesser.post("/join", data={"code": teacher.code}), guesser.get(f"/join/{teacher.code}")):
        assert resp.status_code == 429 and "Biology 7B" not in resp.get_data(as_text=True)


def test_join_needs_consent_and_a_name(capp, teacher):
    client = capp.test_client()
    page = client.get(f"/join/{teacher.code.lower()}")
    assert page.status_code == 302  # normalised to the canonical code
    page = client.get(f"/join/{teacher.code}").get_data(as_text=True)
    assert "Never a picture" in page and "consent" in page
    resp = client.post(f"/join/{teacher.code}", data={"display_name": "Sam"})
    assert resp.status_code == 400 and "Tick the box" in resp.get_data(as_text=True)
    resp = client.post(f"/join/{teacher.code}", data={"display_name": "   ", "consent": "y"})
    assert resp.status_code == 400
    with capp.app_context():
        assert db.session.scalar(select(func.count(Student.id))) == 0
    # Without having joined, the student page sends you to the join form: nothing starts before consent.
    resp = client.get(f"/join/{teacher.code}/live")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/join/{teacher.code}")


def test_joined_student_gets_the_student_page(capp, teacher, student):
    page = student.get(f"/join/{teacher.code}/live").get_data(as_text=True)
    assert "Sharing with" in page or "Not sharing" in page
    assert 'data-class="Biology 7B"' in page
    with capp.app_context():
        s = db.session.scalar(select(Student))
        assert s.display_name == "Sam" and s.consent_at is not None


def test_student_of_one_class_is_not_a_student_of_another(capp, teacher, other_teacher, student):
    resp = student.get(f"/join/{other_teacher.code}/live")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/join/{other_teacher.code}")


def test_a_deleted_students_cookie_never_becomes_a_student_of_another_class(capp, teacher, student):
    with student.session_transaction() as cookie:
        old = dict(cookie)
    teacher.client.post(f"/classes/{teacher.code}/delete", data={"confirm": "y"})
    otto = capp.test_client()
    register(otto, "otto@example.org", "Otto")
    code = create_class(otto, "Chemistry 9A")
    vera = capp.test_client()
    assert join(vera, code, "Vera").status_code == 302
    assert vera.get(f"/join/{code}/live").status_code == 200
    sc = socketio.test_client(capp, flask_test_client=vera, auth={"classroom": "student"})
    assert sc.is_connected()  # the new class's session streams, whatever id it was given
    sc.disconnect()
    # Sam's old browser (its cookie names a student that no longer exists) is not Vera, nor anyone.
    for browser in (student, capp.test_client()):
        with browser.session_transaction() as cookie:
            cookie.update(old)
        resp = browser.get(f"/join/{code}/live")
        assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/join/{code}")
        sc = socketio.test_client(capp, flask_test_client=browser, auth={"classroom": "student"})
        assert not sc.is_connected()


def test_a_forged_student_cookie_is_refused(capp, teacher, student):
    with capp.app_context():
        (sam,) = db.session.scalars(select(Student)).all()
    for forged in (sam.id, [sam.id, "guess"], {"id": sam.id}, "1"):
        browser = capp.test_client()
        with browser.session_transaction() as cookie:
            cookie["classroom_student"] = forged
        assert browser.get(f"/join/{teacher.code}/live").status_code == 302


def test_starting_twice_at_once_leaves_one_running_session(capp, teacher, monkeypatch):
    capp.config["PROPAGATE_EXCEPTIONS"] = False
    teacher.client.post(f"/classes/{teacher.code}/end")
    assert teacher.client.post(f"/classes/{teacher.code}/start").status_code == 302
    # The second click's request checked before the first one's session was stored.
    monkeypatch.setattr(Classroom, "running_session", lambda self: None)
    assert teacher.client.post(f"/classes/{teacher.code}/start").status_code == 302
    monkeypatch.undo()
    with capp.app_context():
        running = db.session.scalars(select(ClassSession).where(ClassSession.ended_at.is_(None))).all()
        assert len(running) == 1


# -- aggregate-only -------------------------------------------------------------------------------

def test_aggregate_only_class_exports_and_reports_no_student(capp, teacher):
    code = create_class(teacher.client, "Quiet class", aggregate_only=True)
    join(capp.test_client(), code, "Secret Name")
    body = teacher.client.get(f"/api/v1/classes/{code}/mood").json
    assert "per_student" not in body and "Secret Name" not in repr(body)
    assert teacher.client.get(f"/classes/{code}/export.csv?by=student").status_code == 403
    assert "Secret Name" not in teacher.client.get(f"/classes/{code}/export.csv").get_data(as_text=True)
    teacher.client.post(f"/classes/{code}/end")
    sid = session_id(capp, code)
    body = teacher.client.get(f"/api/v1/classes/{code}/mood?session={sid}").json
    assert "per_student" not in body and "Secret Name" not in repr(body)
    assert "Secret Name" not in teacher.client.get(f"/classes/{code}/sessions/{sid}").get_data(as_text=True)


def test_aggregate_only_is_sticky_for_a_session(capp, teacher, student):
    teacher.client.post(f"/classes/{teacher.code}/settings", data={"aggregate_only": "y"})
    assert "per_student" not in teacher.client.get(f"/api/v1/classes/{teacher.code}/mood").json
    teacher.client.post(f"/classes/{teacher.code}/settings", data={})  # switched off again ...
    body = teacher.client.get(f"/api/v1/classes/{teacher.code}/mood").json
    assert "per_student" not in body  # ... but not for the session that was aggregate-only
    assert teacher.client.get(f"/classes/{teacher.code}/export.csv?by=student").status_code == 403


def test_delete_class_removes_everything(capp, teacher, student):
    resp = teacher.client.post(f"/classes/{teacher.code}/delete", data={})
    assert resp.status_code == 302  # no confirmation: nothing deleted
    with capp.app_context():
        assert db.session.scalar(select(func.count(Classroom.id))) == 1
    teacher.client.post(f"/classes/{teacher.code}/delete", data={"confirm": "y"})
    with capp.app_context():
        assert db.session.scalar(select(func.count(Classroom.id))) == 0
        assert db.session.scalar(select(func.count(ClassSession.id))) == 0
        assert db.session.scalar(select(func.count(Student.id))) == 0
    assert teacher.client.get(f"/classes/{teacher.code}").status_code == 404
    assert student.get(f"/join/{teacher.code}").status_code == 404
