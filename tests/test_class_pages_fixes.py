"""The teacher's class pages after review: a streamed CSV export (with a BOM for the names), "New class" sent
twice, the history's retention sentence, exports and reports of sessions retention deleted, and sessions left
running that retention ends."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select

from app.classroom import storage
from app.classroom.aggregate import Record
from app.classroom.models import Classroom, ClassSession, MoodSample, Student, utcnow
from app.classroom.storage import class_csv, purge_expired, session_records, student_csv
from app.extensions import db
from tests.classroom_fixtures import classroom_app, create_class, join, register
from tests.conftest import ROOT


def session_of(app, code: str) -> int:
    """The id of class ``code``'s latest session."""
    with app.app_context():
        return db.session.scalar(select(ClassSession.id).join(Classroom).where(Classroom.code == code)
                                 .order_by(ClassSession.id.desc()))


def store(app, session_id: int, seconds: range) -> None:
    """One sample per student of ``session_id`` and second of ``seconds``, written to the database."""
    with app.app_context():
        ids = list(db.session.scalars(select(Student.id).where(Student.session_id == session_id)))
    writer = app.extensions["classroom"].writer
    writer.put(session_id, [Record(st, s, [0.1 * (st % 5), 0, 0, 0.5, 0, 0, 0.2], 1 + st % 2, 2)
                            for s in seconds for st in ids])
    assert writer.flush() == len(ids) * len(seconds)


def deleted_by_retention(app, teacher) -> int:
    """End the teacher's class's session and let retention delete it; returns its id."""
    gone = session_of(app, teacher.code)
    teacher.client.post(f"/classes/{teacher.code}/end")
    with app.app_context():
        assert purge_expired(1, now=time.time() + 3 * 86400)["sessions"] == 1
    return gone


# -- 1. the CSV export is streamed, read a page at a time; the per-student CSV has a BOM -------------------

def test_csv_export_is_streamed_and_read_a_page_at_a_time(capp, teacher, student, monkeypatch):
    join(capp.test_client(), teacher.code, "Zoë 😀")
    sid = session_of(capp, teacher.code)
    start = int(time.time()) - 100
    store(capp, sid, range(start, start + 5))  # 2 students x 5 s = 10 rows
    teacher.client.post(f"/classes/{teacher.code}/end")
    with capp.app_context():
        records = session_records(sid)
        names = {s.id: s.display_name for s in db.session.get(ClassSession, sid).students}
        expected_class, expected_students = class_csv(records), student_csv(records, names)
        engine = db.engine
    monkeypatch.setattr(storage, "EXPORT_ROWS", 3)  # pages of 3 rows: 4 queries for 10 rows, a second split
    queries = []

    def spy(_conn, _cursor, statement, *_args):
        if "FROM mood_sample" in statement:
            queries.append(statement)

    event.listen(engine, "before_cursor_execute", spy)
    try:
        resp = teacher.client.get(f"/classes/{teacher.code}/export.csv")
        assert resp.is_streamed and resp.content_length is None
        assert resp.get_data(as_text=True) == expected_class  # the same bytes as when built at once
        assert len(queries) == 4
        per = teacher.client.get(f"/classes/{teacher.code}/export.csv?by=student")
        assert per.is_streamed
        assert per.get_data(as_text=True) == "\ufeff" + expected_students
    finally:
        event.remove(engine, "before_cursor_execute", spy)
    assert expected_class.count("\n") == 1 + 5 and expected_students.count("\n") == 1 + 10


def test_the_per_student_csv_starts_with_a_bom_so_spreadsheets_read_names_as_utf8(capp, teacher):
    join(capp.test_client(), teacher.code, "Zoë 😀")
    store(capp, session_of(capp, teacher.code), range(int(time.time()) - 10, int(time.time()) - 8))
    per = teacher.client.get(f"/classes/{teacher.code}/export.csv?by=student").data
    assert per.startswith("\ufefftime,student,".encode())
    assert "Zoë 😀".encode() in per
    assert per.decode("utf-8-sig").splitlines()[0].startswith("time,student,")
    # The class CSV holds no name (ASCII only): no BOM, as before.
    assert teacher.client.get(f"/classes/{teacher.code}/export.csv").data.startswith(b"time,students,frames")


# -- 2. "New class" sent twice -------------------------------------------------------------------------

def test_new_class_sent_twice_creates_one_class(capp, teacher, monkeypatch):
    first = teacher.client.post("/classes", data={"name": "Maths 8A"})
    again = teacher.client.post("/classes", data={"name": "Maths 8A"})
    assert first.status_code == again.status_code == 302
    assert again.headers["Location"] == first.headers["Location"]
    with capp.app_context():
        assert db.session.scalar(select(func.count(Classroom.id)).where(Classroom.name == "Maths 8A")) == 1
    # Another name, or the same name later on, is a class of its own.
    assert teacher.client.post("/classes", data={"name": "Maths 8B"}).headers["Location"] != first.headers["Location"]
    with capp.app_context():
        made = db.session.scalar(select(Classroom).where(Classroom.name == "Maths 8A"))
        made.created_at = utcnow() - timedelta(seconds=60)
        db.session.commit()
    later = teacher.client.post("/classes", data={"name": "Maths 8A"})
    assert later.headers["Location"] != first.headers["Location"]


def test_another_teachers_class_of_the_same_name_is_not_returned(capp, teacher, other_teacher):
    mine = create_class(teacher.client, "Physics")
    theirs = create_class(other_teacher.client, "Physics")
    assert mine != theirs


def test_the_new_class_button_is_disabled_on_submit_by_an_external_script(teacher):
    html = teacher.client.get("/classes").get_data(as_text=True)
    assert '<script type="module" src="/static/js/classroom-classes.js"></script>' in html
    script = (ROOT / "static/js/classroom-classes.js").read_text()
    assert 'getElementById("new-class")' in script and "button.disabled = true" in script


# -- 3. retention off: one sentence ----------------------------------------------------------------------

@pytest.fixture
def keep_app(tmp_path):
    """A classroom app with retention off (CLASSROOM_RETENTION_DAYS=0)."""
    app = classroom_app(f"sqlite:///{tmp_path / 'keep.sqlite3'}", CLASSROOM_RETENTION_DAYS=0)
    yield app
    app.extensions["classroom"].stop()


def test_history_with_retention_off_says_only_that(keep_app):
    client = keep_app.test_client()
    register(client, "kim@example.org", "Kim")
    code = create_class(client)
    html = client.get(f"/classes/{code}/history").get_data(as_text=True)
    assert "Retention is off: nothing is deleted automatically." in html
    assert "more than 0 days" not in html and "deleted automatically (retention" not in html
    # A report link to a session that is not there says nothing about retention then.
    body = client.get(f"/classes/{code}/sessions/999999").get_data(as_text=True)
    assert "This class has no such session." in body and "days after they end" not in body


def test_the_join_notice_with_retention_off_says_what_is_kept_until_when(keep_app):
    client = keep_app.test_client()
    register(client, "kim@example.org", "Kim")
    code = create_class(client)
    html = keep_app.test_client().get(f"/join/{code}").get_data(as_text=True)
    assert "kept until your teacher deletes the class (no automatic deletion is set on this server)" in html
    assert "deleted 0 days" not in html


def test_history_with_retention_on_gives_the_days(teacher):
    html = teacher.client.get(f"/classes/{teacher.code}/history").get_data(as_text=True)
    assert "Sessions that ended more than 30 days ago are deleted automatically." in html
    assert "Retention is off" not in html


# -- 4. per-student CSV of a class whose sessions retention deleted ---------------------------------------

def test_per_student_csv_of_a_class_without_session_is_404(capp, teacher):
    deleted_by_retention(capp, teacher)
    resp = teacher.client.get(f"/classes/{teacher.code}/export.csv?by=student")
    assert resp.status_code == 404
    text = resp.get_data(as_text=True)
    assert "No session (expired or none yet)" in text and "aggregate-only" not in text
    hidden = create_class(teacher.client, "Quiet", aggregate_only=True)  # a session: aggregate-only still 403
    assert teacher.client.get(f"/classes/{hidden}/export.csv?by=student").status_code == 403


# -- 5. a bookmarked link to a session retention deleted -----------------------------------------------------

@pytest.mark.parametrize("url", ["/classes/{code}/sessions/{sid}", "/classes/{code}/export.csv?session={sid}"])
def test_a_link_to_a_deleted_session_mentions_the_retention(capp, teacher, url):
    gone = deleted_by_retention(capp, teacher)
    resp = teacher.client.get(url.format(code=teacher.code, sid=gone))
    assert resp.status_code == 404
    text = resp.get_data(as_text=True)
    assert "This class has no such session." in text and "Sessions are deleted 30 days after they end." in text


# -- 6. a session left running is ended by retention, then expires like any other ---------------------------

def test_retention_ends_a_session_left_running_through_the_service(capp, teacher, student):
    service = capp.extensions["classroom"]
    sid = session_of(capp, teacher.code)
    with capp.app_context():
        sess = db.session.get(ClassSession, sid)
        sess.started_at = utcnow() - timedelta(days=40)  # the teacher forgot to end it
        db.session.commit()
        service.register("tab-1", db.session.scalar(select(Student)), sess)
    for _ in range(5):
        service.on_frame("tab-1", {"faces": [{"box": [0, 0, 80, 80], "scores": {"happy": 1.0}}]})
    assert service.find(sid) is not None
    with capp.app_context():
        assert purge_expired(30)["sessions"] == 0  # ended now, not deleted
        sess = db.session.get(ClassSession, sid)
        assert sess is not None and sess.ended_at is not None
        assert db.session.scalar(select(func.count()).select_from(MoodSample)
                                 .where(MoodSample.session_id == sid)) >= 1  # its queued seconds were stored
    assert service.find(sid) is None and service.student_of("tab-1") is None  # live state ended
    assert service.writer.pending() == 0
    html = teacher.client.get(f"/classes/{teacher.code}").get_data(as_text=True)
    assert "No session is running" in html
    with capp.app_context():  # ... and it expires like any other, 30 days after that end
        assert purge_expired(30, now=time.time() + 29 * 86400)["sessions"] == 0
        assert purge_expired(30, now=time.time() + 31 * 86400)["sessions"] == 1
        assert db.session.get(ClassSession, sid) is None


@pytest.mark.redis
def test_a_session_left_running_that_the_start_up_purge_ends_is_ended_on_every_process(tmp_path, redis_server):
    import redis

    from app.classroom.cluster import ended_key

    url = f"sqlite:///{tmp_path / 'classroom.sqlite3'}"
    first = classroom_app(url)
    client = first.test_client()
    assert register(client, "ann@example.org", "Ann").status_code == 302
    code = create_class(client)
    with first.app_context():
        sess = db.session.scalar(select(ClassSession).join(Classroom).where(Classroom.code == code))
        sess.started_at = utcnow() - timedelta(days=40)  # the teacher forgot to end it
        db.session.commit()
        sid = sess.id
    first.extensions["classroom"].stop()

    # Another process starts (a restart, a new replica): its start-up purge ends that session...
    second = classroom_app(url, SOCKETIO_MESSAGE_QUEUE=redis_server.url)
    try:
        with second.app_context():
            assert db.session.get(ClassSession, sid).ended_at is not None
        # ...and tells the processes still serving it, through Redis, as the teacher's End does.
        assert redis.Redis.from_url(redis_server.url).get(ended_key(sid)) == b"ended"
    finally:
        second.extensions["classroom"].stop()
