"""The student's side of a class, server half: leaving the class, and what the page says the teacher sees."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app.classroom.models import ClassSession
from app.extensions import db
from tests.classroom_fixtures import STUDENT_AUTH, join


def received(sc, name):
    return [e["args"][0] for e in sc.get_received() if e["name"] == name]


def mood(teacher) -> dict:
    return teacher.client.get(f"/api/v1/classes/{teacher.code}/mood").json


# -- leaving the class ----------------------------------------------------------------------------

def test_leaving_the_class_while_sharing_is_reported_as_left_not_lost(capp, teacher, student, sockets):
    sc = sockets(student, auth=STUDENT_AUTH)
    assert sc.is_connected() and mood(teacher)["students"] == 1
    # The page's script did not say classroom_leave first (it failed, or never ran): the form alone.
    resp = student.post(f"/join/{teacher.code}/leave")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/classroom")
    assert received(sc, "classroom_ended") == [{"session": mood(teacher)["session"]["id"], "reason": "left"}]
    sc.disconnect()  # the page goes away: its socket closes after the leave
    body = mood(teacher)
    assert body["students"] == 0
    assert {t["name"]: t["status"] for t in body["per_student"]} == {"Sam": "left"}
    assert not [al for al in body["alerts"] if al["kind"] == "lost"], body["alerts"]


@pytest.mark.parametrize("ended", [False, True])
def test_the_student_who_left_is_told_so_on_the_classroom_page(capp, teacher, student, ended):
    if ended:
        teacher.client.post(f"/classes/{teacher.code}/end")
    resp = student.post(f"/join/{teacher.code}/leave", follow_redirects=True)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and 'id="code-form"' in page
    assert "You left “Biology 7B”. Nothing more is sent from this browser." in page
    # The browser is nobody in the class any more.
    if not ended:
        assert student.get(f"/join/{teacher.code}/live").status_code == 302
    assert "You left" not in student.get("/classroom").get_data(as_text=True)  # said once
    resp = capp.test_client().post(f"/join/{teacher.code}/leave", follow_redirects=True)  # never joined
    assert resp.status_code == 200 and "You left" not in resp.get_data(as_text=True)


# -- what the teacher sees ------------------------------------------------------------------------

def who_sees(client, teacher) -> str:
    page = client.get(f"/join/{teacher.code}/live").get_data(as_text=True)
    start = page.index('id="who-sees"')
    return page[start:page.index("</span>", start)]


def test_a_student_sharing_is_told_at_once_when_the_teacher_switches_on_aggregate_only(capp, teacher, student,
                                                                                      sockets):
    sc = sockets(student, auth=STUDENT_AUTH)
    assert sc.emit("classroom_settings", callback=True) == {"aggregate_only": False}
    assert 'data-aggregate-only="false"' in who_sees(student, teacher)
    teacher.client.post(f"/classes/{teacher.code}/settings", data={"aggregate_only": "y"})
    assert received(sc, "classroom_settings") == [{"aggregate_only": True}]
    assert sc.emit("classroom_settings", callback=True) == {"aggregate_only": True}
    capp.extensions["classroom"].tick(force=True)
    assert received(sc, "classroom_settings") == []  # told once
    # Switched off again: not for this session, so the page still says so.
    teacher.client.post(f"/classes/{teacher.code}/settings", data={})
    html = who_sees(student, teacher)
    assert 'data-aggregate-only="true"' in html and "combined mood only" in html


def test_a_switch_made_through_another_process_reaches_the_student_on_the_next_push(capp, teacher, student,
                                                                                    sockets):
    sc = sockets(student, auth=STUDENT_AUTH)
    with capp.app_context():  # another process took the teacher's request: only the database changed
        db.session.scalar(select(ClassSession)).aggregate_only = True
        db.session.commit()
    capp.extensions["classroom"].tick(force=True)
    assert received(sc, "classroom_settings") == [{"aggregate_only": True}]


def test_a_stream_of_no_student_has_no_classroom_settings(capp, sockets):
    assert sockets(capp.test_client()).emit("classroom_settings", callback=True) == {}


def test_the_join_page_says_what_the_running_session_shows(capp, teacher):
    teacher.client.post(f"/classes/{teacher.code}/settings", data={"aggregate_only": "y"})
    teacher.client.post(f"/classes/{teacher.code}/settings", data={})  # off for the next session only
    page = capp.test_client().get(f"/join/{teacher.code}").get_data(as_text=True)
    assert "nobody sees your own results" in page
    client = capp.test_client()
    join(client, teacher.code, "Ida")
    assert "combined mood only" in who_sees(client, teacher)
