"""Storage on SQLite and on a real PostgreSQL server: migrations, batched writes, CSV, retention, deletion."""
from __future__ import annotations

import csv
import io
import time

import pytest
from flask_migrate import upgrade
from sqlalchemy import event, func, inspect, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from app.classroom import MIGRATIONS
from app.classroom.aggregate import EMOTIONS, ClassAggregate, Record, distribution
from app.classroom.models import Classroom, ClassSession, MoodSample, Student, Teacher, utcnow
from app.classroom.storage import class_csv, delete_classroom, purge_expired, session_records, student_csv
from app.extensions import db
from tests.classroom_fixtures import classroom_app, create_class, join, register

T0 = 1_800_000_000


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def database_url(request, tmp_path) -> str:
    """A fresh, empty database of the test's kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=BACKENDS)
def store_app(request, tmp_path):
    """The app on a fresh database of each kind, migrated at start-up."""
    app = classroom_app(database_url(request, tmp_path))
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith(
        "sqlite" if request.param == "sqlite" else "postgresql+psycopg://")
    yield app
    app.extensions["classroom"].stop()
    with app.app_context():
        db.engine.dispose()


def probs(**kw):
    out = dict.fromkeys(EMOTIONS, 0.0)
    out.update(kw)
    out["neutral"] = 1.0 - sum(v for k, v in out.items() if k != "neutral")
    return out


def make_session(app, students=("Ann", "Ben"), aggregate_only=False):
    """A teacher, a class, a running session and its students, straight in the database."""
    with app.app_context():
        t = Teacher(email=f"t{time.monotonic_ns()}@example.org", name="T", password_hash="x")
        db.session.add(t)
        db.session.flush()
        c = Classroom(teacher_id=t.id, name="Class", code=f"C{time.monotonic_ns() % 10**8}",
                      aggregate_only=aggregate_only)
        db.session.add(c)
        db.session.flush()
        s = ClassSession(classroom_id=c.id, aggregate_only=aggregate_only)
        db.session.add(s)
        db.session.flush()
        ids = []
        for name in students:
            st = Student(session_id=s.id, display_name=name)
            db.session.add(st)
            db.session.flush()
            ids.append(st.id)
        db.session.commit()
        return c.id, s.id, ids


def count(model):
    return db.session.scalar(select(func.count()).select_from(model))


def test_migrations_create_the_schema(store_app):
    with store_app.app_context():
        tables = set(inspect(db.engine).get_table_names())
        assert {"teacher", "classroom", "class_session", "student", "mood_sample", "ended_login",
                "alembic_version"} <= tables
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == "0003"
        columns = {c["name"] for c in inspect(db.engine).get_columns("mood_sample")}
        assert columns == {"student_id", "second", "session_id", "frames", "face_frames", *EMOTIONS}
        # Nothing that could hold an image anywhere in the schema.
        for table in tables:
            for col in inspect(db.engine).get_columns(table):
                assert "BLOB" not in str(col["type"]).upper() and "BYTEA" not in str(col["type"]).upper()


@pytest.fixture(params=BACKENDS)
def old_app(request, tmp_path):
    """The app on a fresh database of each kind at the first revision (0001), not upgraded at start-up."""
    app = classroom_app(database_url(request, tmp_path), DB_AUTO_UPGRADE=False)
    with app.app_context():
        upgrade(directory=str(MIGRATIONS), revision="0001")
    yield app
    app.extensions["classroom"].stop()
    with app.app_context():
        db.engine.dispose()


def test_upgrade_from_0001_keeps_the_data(old_app):
    """Students get a token each (an old cookie without one joins nothing); a class left with two running
    sessions keeps the newest running."""
    then = utcnow()
    with old_app.app_context():
        db.session.execute(text("INSERT INTO teacher (id, email, name, password_hash, created_at) "
                                "VALUES (1, 'ann@example.org', 'Ann', 'x', :t)"), {"t": then})
        db.session.execute(text("INSERT INTO classroom (id, teacher_id, name, code, aggregate_only, created_at) "
                                "VALUES (1, 1, 'Biology', 'ABC234', :f, :t)"), {"f": False, "t": then})
        for sid in (1, 2):
            db.session.execute(text("INSERT INTO class_session (id, classroom_id, started_at, aggregate_only) "
                                    "VALUES (:id, 1, :t, :f)"), {"id": sid, "t": then, "f": False})
        for sid, name in ((1, "Sam"), (2, "Zoe"), (3, "Dan")):
            db.session.execute(text("INSERT INTO student (id, session_id, display_name, consent_at) "
                                    "VALUES (:id, :s, :n, :t)"), {"id": sid, "s": min(sid, 2), "n": name, "t": then})
        db.session.execute(text("INSERT INTO mood_sample (student_id, second, session_id, frames, face_frames, "
                                "angry, disgust, fear, happy, sad, surprise, neutral) "
                                f"VALUES (1, {T0}, 1, 3, 2, 0, 0, 0, 1, 0, 0, 0)"))
        db.session.commit()
        upgrade(directory=str(MIGRATIONS))
        assert count(MoodSample) == 1
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == "0003"
        students = db.session.scalars(select(Student).order_by(Student.id)).all()
        assert [s.display_name for s in students] == ["Sam", "Zoe", "Dan"]
        tokens = {s.token for s in students}
        assert len(tokens) == 3 and all(t and len(t) >= 32 for t in tokens)
        sessions = db.session.scalars(select(ClassSession).order_by(ClassSession.id)).all()
        assert [s.running for s in sessions] == [False, True]
        db.session.add(ClassSession(classroom_id=1))
        with pytest.raises(IntegrityError):
            db.session.commit()


def test_a_class_has_one_running_session_at_most(store_app):
    class_id, session_id, _ = make_session(store_app)
    with store_app.app_context():
        db.session.add(ClassSession(classroom_id=class_id))
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()
        db.session.add(ClassSession(classroom_id=class_id, ended_at=utcnow()))  # ended ones do not count
        db.session.commit()
        db.session.get(ClassSession, session_id).ended_at = utcnow()
        db.session.add(ClassSession(classroom_id=class_id))
        db.session.commit()


def test_batched_writes_round_trip(store_app):
    _, session_id, (ann, ben) = make_session(store_app)
    agg = ClassAggregate(session_id, "X", "Class", False, started=T0)
    agg.join(ann, "Ann", "a", now=T0)
    agg.join(ben, "Ben", "b", now=T0)
    for i in range(30):  # 3 s at 10 fps each
        agg.add(ann, [{"box": [0, 0, 50, 50], "scores": probs(happy=0.8)}], now=T0 + i / 10)
        agg.add(ben, [{"box": [0, 0, 50, 50], "scores": probs(sad=0.6)}] if i % 2 else [], now=T0 + i / 10)
    writer = store_app.extensions["classroom"].writer
    statements = []
    with store_app.app_context():
        event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    writer.put(session_id, agg.close(now=T0 + 3))
    assert writer.flush() == 6 and writer.pending() == 0
    assert writer.stats["flushes"] == 1
    assert sum(1 for s in statements if s.lstrip().upper().startswith("INSERT")) <= 2  # one batch, not 6 rows
    with store_app.app_context():
        records = session_records(session_id)
        assert len(records) == 6
        ann_rows = [r for r in records if r.student == ann]
        assert [r.frames for r in ann_rows] == [10, 10, 10] and all(r.face_frames == 10 for r in ann_rows)
        ben_rows = [r for r in records if r.student == ben]
        assert [(r.frames, r.face_frames) for r in ben_rows] == [(10, 5)] * 3
        dist = distribution(records)
        assert dist["happy"] == pytest.approx(0.4) and dist["sad"] == pytest.approx(0.3)
        stored = db.session.scalar(select(MoodSample).where(MoodSample.student_id == ben))
        assert stored.sad == pytest.approx(0.6) and stored.second == T0


def test_a_retried_flush_does_not_duplicate(store_app):
    _, session_id, (ann, _) = make_session(store_app)
    writer = store_app.extensions["classroom"].writer
    rec = Record(ann, T0, [0.0] * 7, 0, 3)
    writer.put(session_id, [rec])
    writer.flush()
    writer.put(session_id, [rec])  # the same second again (a retry after a lost commit)
    writer.flush()
    with store_app.app_context():
        assert count(MoodSample) == 1
    assert writer.stats["failures"] == 0


def test_a_failing_database_keeps_the_rows_and_never_raises(store_app, monkeypatch):
    _, session_id, (ann, _) = make_session(store_app)
    writer = store_app.extensions["classroom"].writer
    real_execute = db.session.execute
    calls = {"n": 0}

    def broken(*args, **kwargs):
        calls["n"] += 1
        raise OperationalError("INSERT", {}, Exception("database is down"))

    monkeypatch.setattr(db.session, "execute", broken)
    writer.put(session_id, [Record(ann, T0 + i, [0.0] * 7, 0, 1) for i in range(5)])
    assert writer.flush() == 0
    assert writer.stats["failures"] == 1 and writer.pending() == 5 and "database is down" in writer.stats["last_error"]
    monkeypatch.setattr(db.session, "execute", real_execute)
    assert writer.flush() == 5 and writer.pending() == 0


def test_rows_of_a_deleted_student_are_dropped_not_retried_forever(store_app):
    _, session_id, (ann, ben) = make_session(store_app)
    _, other_session, (cem,) = make_session(store_app, students=("Cem",))
    writer = store_app.extensions["classroom"].writer
    with store_app.app_context():
        db.session.execute(Student.__table__.delete().where(Student.id == ann))
        db.session.commit()
    writer.put(session_id, [Record(ann, T0, [0.0] * 7, 0, 1)])
    writer.put(other_session, [Record(cem, T0, [0.0] * 7, 0, 1)])
    writer.flush()
    assert writer.pending() == 0 and writer.stats["dropped"] == 1
    with store_app.app_context():
        assert count(MoodSample) == 1  # Cem's row made it


def test_retention_deletes_old_samples_and_old_sessions(store_app):
    _, old_session, (ann,) = make_session(store_app, students=("Ann",))
    _, new_session, (ben,) = make_session(store_app, students=("Ben",))
    now = time.time()
    writer = store_app.extensions["classroom"].writer
    writer.put(old_session, [Record(ann, int(now - 40 * 86400), [0.0] * 7, 0, 1)])
    writer.put(new_session, [Record(ben, int(now - 40 * 86400), [0.0] * 7, 0, 1),
                             Record(ben, int(now - 3600), [0.0] * 7, 0, 1)])
    writer.flush()
    with store_app.app_context():
        db.session.get(ClassSession, old_session).ended_at = utcnow().replace(year=utcnow().year - 1)
        db.session.commit()
        assert purge_expired(0, now) == {"sessions": 0, "samples": 0}  # 0 = keep forever
        counts = purge_expired(30, now)
        assert counts["sessions"] == 1 and counts["samples"] >= 1
        assert db.session.get(ClassSession, old_session) is None
        assert db.session.scalar(select(func.count(Student.id)).where(Student.id == ann)) == 0
        assert [r.second for r in session_records(new_session)] == [int(now - 3600)]


@pytest.mark.parametrize("store_app", ["sqlite"], indirect=True)
def test_retention_is_applied_at_start_up_whoever_migrates(store_app, caplog):
    _, old_session, _ = make_session(store_app, students=("Ann",))
    with store_app.app_context():
        db.session.get(ClassSession, old_session).ended_at = utcnow().replace(year=utcnow().year - 1)
        db.session.commit()
    url = store_app.config["SQLALCHEMY_DATABASE_URI"]
    later = classroom_app(url, DB_AUTO_UPGRADE=False)  # several processes: 'flask db upgrade' migrates
    try:
        with later.app_context():
            assert db.session.get(ClassSession, old_session) is None and count(Student) == 0
    finally:
        later.extensions["classroom"].stop()
    # A database not migrated yet holds nothing to purge: the start goes on and says why nothing was applied.
    fresh = classroom_app(url.rsplit("/", 1)[0] + "/not-migrated.sqlite3", DB_AUTO_UPGRADE=False)
    fresh.extensions["classroom"].stop()
    assert "classroom retention not applied at start-up (run 'flask db upgrade'?)" in caplog.text


def test_delete_classroom_removes_all_its_rows(store_app):
    class_id, session_id, (ann, ben) = make_session(store_app)
    keep_class, keep_session, (cem,) = make_session(store_app, students=("Cem",))
    writer = store_app.extensions["classroom"].writer
    writer.put(session_id, [Record(ann, T0, [0.0] * 7, 0, 1), Record(ben, T0, [0.0] * 7, 0, 1)])
    writer.put(keep_session, [Record(cem, T0, [0.0] * 7, 0, 1)])
    writer.flush()
    with store_app.app_context():
        assert delete_classroom(db.session.get(Classroom, class_id)) == [session_id]
        assert count(Classroom) == 1 and count(ClassSession) == 1 and count(Student) == 1 and count(MoodSample) == 1


def test_csv_exports():
    records = [Record.from_means(1, T0, list(probs(happy=1.0).values()), 2, 2),
               Record.from_means(2, T0, list(probs(sad=1.0).values()), 1, 4),
               Record.from_means(1, T0 + 1, list(probs().values()), 0, 3)]
    rows = list(csv.DictReader(io.StringIO(class_csv(records))))
    assert [r["time"] for r in rows] == ["2027-01-15T08:00:00Z", "2027-01-15T08:00:01Z"]
    assert rows[0]["students"] == "2" and rows[0]["frames"] == "6" and rows[0]["face_frames"] == "3"
    assert float(rows[0]["happy"]) == pytest.approx(0.5) and float(rows[0]["sad"]) == pytest.approx(0.5)
    assert float(rows[0]["engagement"]) == pytest.approx((1.0 + 0.25 * 0.5) / 2)
    assert float(rows[1]["neutral"]) == 0.0 and rows[1]["face_frames"] == "0"
    per = list(csv.DictReader(io.StringIO(student_csv(records, {1: "Ann", 2: "=cmd()"}))))
    assert [r["student"] for r in per] == ["Ann", "'=cmd()", "Ann"]  # no formula injection into spreadsheets


def test_whole_flow_through_the_app(store_app):
    """Teacher, student, frames, end, export: the same on both databases."""
    teacher, student = store_app.test_client(), store_app.test_client()
    register(teacher, "ann@example.org")
    code = create_class(teacher)
    join(student, code, "Zed")
    service = store_app.extensions["classroom"]
    with store_app.app_context():
        sess = db.session.scalar(select(ClassSession))
        st = db.session.scalar(select(Student))
        service.register("sid-1", st, sess)
    for i in range(20):
        service.on_frame("sid-1", {"faces": [{"box": [0, 0, 80, 80], "scores": probs(happy=0.9)}]})
    assert teacher.post(f"/classes/{code}/end").status_code == 302
    rows = list(csv.DictReader(io.StringIO(teacher.get(f"/classes/{code}/export.csv").get_data(as_text=True))))
    assert sum(int(r["frames"]) for r in rows) == 20
    assert float(rows[0]["happy"]) == pytest.approx(0.9, abs=1e-4)
    per = teacher.get(f"/classes/{code}/export.csv?by=student").get_data(as_text=True)
    assert "Zed" in per
    history = teacher.get(f"/classes/{code}/history").get_data(as_text=True)
    assert "Zed" not in history and ">1<" in history  # one student, counted, not named
