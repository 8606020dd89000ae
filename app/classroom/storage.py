"""Storage of the class mood: batched writes, history reads, CSV, retention and deletion.

Records reach the database only through :class:`BatchWriter`: the stream's
frame handler never waits for the database; the ticker flushes everything
collected so far in one transaction every second or so. A failing database
costs a counted, logged error and a bounded backlog, never a frame.
"""
from __future__ import annotations

import csv
import io
import itertools
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone

from flask import current_app
from sqlalchemy import and_, delete, event, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app.classroom.aggregate import EMOTIONS, Record, distribution, engagement, iso
from app.classroom.models import Classroom, ClassSession, MoodSample, Student, utcnow
from app.extensions import db

log = logging.getLogger("moodlens.classroom.storage")


def sqlite_pragmas(dbapi_connection, _record) -> None:
    """Per SQLite connection: enforce foreign keys, let readers and the writer overlap (WAL)."""
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def install_pragmas(engine) -> None:
    """Register :func:`sqlite_pragmas` on a SQLite engine (no-op for other databases)."""
    if engine.dialect.name == "sqlite" and not event.contains(engine, "connect", sqlite_pragmas):
        event.listen(engine, "connect", sqlite_pragmas)


def _insert_ignoring_duplicates():
    """INSERT that skips rows already stored (a retried flush must not fail forever)."""
    name = db.engine.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(MoodSample).on_conflict_do_nothing()
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(MoodSample).on_conflict_do_nothing()
    return insert(MoodSample)


def _row(session_id: int, r: Record) -> dict:
    row = {"student_id": r.student, "second": r.second, "session_id": session_id,
           "frames": r.frames, "face_frames": r.face_frames}
    row.update(zip(EMOTIONS, (round(m, 6) for m in r.means())))
    return row


class BatchWriter:
    """Collects (session id, record) pairs and writes them in one transaction per :meth:`flush`."""

    def __init__(self, app, max_backlog: int = 500_000):
        self.app = app
        self.max_backlog = max_backlog
        self._rows: list[dict] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.stats = {"written": 0, "flushes": 0, "failures": 0, "dropped": 0, "last_error": None}

    def put(self, session_id: int, records: Iterable[Record]) -> None:
        """Queue records of ``session_id`` for the next flush (oldest dropped past the backlog limit)."""
        rows = [_row(session_id, r) for r in records]
        if not rows:
            return
        with self._lock:
            self._rows.extend(rows)
            excess = len(self._rows) - self.max_backlog
            if excess > 0:
                del self._rows[:excess]
                self.stats["dropped"] += excess
                log.error("mood backlog full: dropped the %d oldest samples", excess)

    def pending(self) -> int:
        """Rows waiting for the next flush."""
        with self._lock:
            return len(self._rows)

    def discard_sessions(self, session_ids: Iterable[int]) -> None:
        """Forget queued rows of deleted sessions."""
        ids = set(session_ids)
        with self._lock:
            self._rows = [r for r in self._rows if r["session_id"] not in ids]

    def flush(self) -> int:
        """Write every queued row in one transaction; returns how many were written.

        On a database error the rows stay queued for the next flush; rows that
        violate a constraint (their student was deleted meanwhile) are dropped.
        """
        with self._flush_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            with self.app.app_context():
                try:
                    db.session.execute(_insert_ignoring_duplicates(), rows)
                    db.session.commit()
                except IntegrityError:
                    db.session.rollback()
                    return self._flush_by_session(rows)
                except SQLAlchemyError as exc:
                    db.session.rollback()
                    self._failed(rows, exc)
                    return 0
                finally:
                    db.session.remove()
            self.stats["written"] += len(rows)
            self.stats["flushes"] += 1
            return len(rows)

    def _flush_by_session(self, rows: list[dict]) -> int:
        by_session: dict[int, list[dict]] = {}
        for r in rows:
            by_session.setdefault(r["session_id"], []).append(r)
        written = 0
        for session_id, group in by_session.items():
            try:
                db.session.execute(_insert_ignoring_duplicates(), group)
                db.session.commit()
                written += len(group)
            except IntegrityError as exc:
                db.session.rollback()
                self.stats["dropped"] += len(group)
                self.stats["failures"] += 1
                self.stats["last_error"] = str(exc.orig or exc)[:300]
                log.warning("dropped %d samples of session %s: %s", len(group), session_id, exc.orig or exc)
            except SQLAlchemyError as exc:
                db.session.rollback()
                self._failed(group, exc)
        self.stats["written"] += written
        self.stats["flushes"] += 1
        return written

    def _failed(self, rows: list[dict], exc: Exception) -> None:
        self.stats["failures"] += 1
        self.stats["last_error"] = str(exc)[:300]
        log.error("writing %d mood samples failed (kept for the next flush): %s", len(rows), exc)
        with self._lock:
            self._rows[:0] = rows
            excess = len(self._rows) - self.max_backlog
            if excess > 0:
                del self._rows[:excess]
                self.stats["dropped"] += excess


# -- reading ----------------------------------------------------------------------------------

def _records_query(session_id: int):
    """The select of a session's stored records, oldest first (by second, then student); rows for ``_record``."""
    return (select(MoodSample.student_id, MoodSample.second, MoodSample.face_frames, MoodSample.frames,
                   *[getattr(MoodSample, e) for e in EMOTIONS])
            .where(MoodSample.session_id == session_id)
            .order_by(MoodSample.second, MoodSample.student_id))


def _record(row) -> Record:
    return Record.from_means(row[0], row[1], row[4:], row[2], row[3])


def session_records(session_id: int, since: int | None = None, until: int | None = None) -> list[Record]:
    """Every stored record of a session (``since`` <= second < ``until`` when given), oldest first."""
    query = _records_query(session_id)
    if since is not None:
        query = query.where(MoodSample.second >= since)
    if until is not None:
        query = query.where(MoodSample.second < until)
    return [_record(r) for r in db.session.execute(query)]


def session_overview(classroom: Classroom) -> list[dict]:
    """The class's sessions, newest first, with student and sample counts."""
    students = (select(Student.session_id, func.count(Student.id).label("n"))
                .group_by(Student.session_id).subquery())
    samples = (select(MoodSample.session_id, func.count().label("n"), func.min(MoodSample.second).label("first"),
                      func.max(MoodSample.second).label("last"))
               .group_by(MoodSample.session_id).subquery())
    rows = db.session.execute(
        select(ClassSession, students.c.n, samples.c.n, samples.c.first, samples.c.last)
        .outerjoin(students, students.c.session_id == ClassSession.id)
        .outerjoin(samples, samples.c.session_id == ClassSession.id)
        .where(ClassSession.classroom_id == classroom.id).order_by(ClassSession.id.desc()))
    out = []
    for s, n_students, n_samples, first, last in rows:
        end = s.ended_at or utcnow()
        out.append({"session": s, "students": n_students or 0, "samples": n_samples or 0,
                    "duration": max(0, int((end - s.started_at).total_seconds())),
                    "data_from": iso(first), "data_to": iso(last)})
    return out


# -- CSV ------------------------------------------------------------------------------------

CLASS_HEADER = ["time", "students", "frames", "face_frames", *EMOTIONS, "engagement"]
STUDENT_HEADER = ["time", "student", "frames", "face_frames", *EMOTIONS]
BOM = "\ufeff"  # lets spreadsheets (Excel) read the per-student CSV's names as UTF-8
EXPORT_ROWS = 5000  # rows read from the database per query while a CSV streams


def iter_session_records(session_id: int, rows: int | None = None) -> Iterator[Record]:
    """Every stored record of a session, oldest first, read ``rows`` (``EXPORT_ROWS``) at a time, by (second,
    student).

    Each page is one short query and the transaction is ended after it, so a slow download holds no
    connection between pages.
    """
    rows = rows or EXPORT_ROWS
    after: tuple[int, int] | None = None
    while True:
        query = _records_query(session_id)
        if after is not None:
            query = query.where(or_(MoodSample.second > after[0],
                                    and_(MoodSample.second == after[0], MoodSample.student_id > after[1])))
        page = db.session.execute(query.limit(rows)).all()
        db.session.rollback()  # read-only: end the transaction, give the connection back between pages
        for r in page:
            yield _record(r)
        if len(page) < rows:
            return
        after = (page[-1][1], page[-1][0])


def _csv_line(row: list) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(row)
    return out.getvalue()


def class_csv_lines(records: Iterable[Record]) -> Iterator[str]:
    """The class CSV line by line (``records`` ordered by second): header, then one row per second."""
    yield _csv_line(CLASS_HEADER)
    for second, grouped in itertools.groupby(records, key=lambda r: r.second):
        group = list(grouped)
        dist = distribution(group) or dict.fromkeys(EMOTIONS, 0.0)
        eng = engagement(group)
        yield _csv_line([iso(second), len({g.student for g in group}), sum(g.frames for g in group),
                         sum(g.face_frames for g in group), *(f"{dist[e]:.4f}" for e in EMOTIONS),
                         "" if eng is None else f"{eng:.4f}"])


def class_csv(records: list[Record]) -> str:
    """Per-second class rows: students, frames, the class distribution and engagement."""
    return "".join(class_csv_lines(sorted(records, key=lambda r: r.second)))


def student_csv_lines(records: Iterable[Record], names: dict[int, str]) -> Iterator[str]:
    """The per-student CSV line by line: header, then one row per record (never for aggregate-only sessions)."""
    yield _csv_line(STUDENT_HEADER)
    for r in records:
        name = names.get(r.student, f"student {r.student}")
        if name[:1] in ("=", "+", "-", "@"):  # keep spreadsheets from running a name as a formula
            name = "'" + name
        yield _csv_line([iso(r.second), name, r.frames, r.face_frames, *(f"{m:.4f}" for m in r.means())])


def student_csv(records: list[Record], names: dict[int, str]) -> str:
    """Per-second, per-student rows (never offered for aggregate-only sessions)."""
    return "".join(student_csv_lines(records, names))


# -- deleting -------------------------------------------------------------------------------

def _delete_sessions(session_ids) -> None:
    db.session.execute(delete(MoodSample).where(MoodSample.session_id.in_(session_ids)))
    db.session.execute(delete(Student).where(Student.session_id.in_(session_ids)))
    db.session.execute(delete(ClassSession).where(ClassSession.id.in_(session_ids)))


def delete_classroom(classroom: Classroom) -> list[int]:
    """Delete a class with its sessions, students and samples (one transaction); returns the session ids."""
    ids = list(db.session.scalars(select(ClassSession.id).where(ClassSession.classroom_id == classroom.id)))
    if ids:
        _delete_sessions(ids)
    db.session.execute(delete(Classroom).where(Classroom.id == classroom.id))
    db.session.commit()
    return ids


def purge_expired(days: int, now: float | None = None) -> dict:
    """Retention: delete samples older than ``days`` days and sessions that ended before then.

    A session still running that started before then (its teacher forgot to end it) is ended now, through the
    app's classroom service when it has one (live state, students and queued samples as for the teacher's *End*),
    so that it expires ``days`` days from now like any other. ``days`` = 0 keeps everything. Returns the counts
    deleted.
    """
    if days <= 0:
        return {"sessions": 0, "samples": 0}
    now = time.time() if now is None else now
    cutoff = int(now - days * 86400)
    cutoff_dt = datetime.fromtimestamp(cutoff, timezone.utc).replace(tzinfo=None)
    _end_forgotten(cutoff_dt, datetime.fromtimestamp(now, timezone.utc).replace(tzinfo=None))
    old = list(db.session.scalars(select(ClassSession.id).where(ClassSession.ended_at < cutoff_dt)))
    n_samples = db.session.execute(delete(MoodSample).where(MoodSample.second < cutoff)).rowcount or 0
    if old:
        _delete_sessions(old)
    db.session.commit()
    if old or n_samples:
        log.info("retention (%d days): deleted %d sessions and %d samples", days, len(old), n_samples)
    return {"sessions": len(old), "samples": n_samples}


def _end_forgotten(started_before: datetime, ended_at: datetime) -> None:
    """End the sessions still running that started before ``started_before`` (stored first, then live)."""
    stale = db.session.execute(select(ClassSession.id, Classroom.code).join(Classroom).where(
        ClassSession.ended_at.is_(None), ClassSession.started_at < started_before)).all()
    if not stale:
        return
    ids = [sid for sid, _ in stale]
    db.session.execute(update(ClassSession).where(ClassSession.id.in_(ids)).values(ended_at=ended_at))
    db.session.commit()  # before the live end below, whose flush writes on a connection of its own
    log.info("retention: ended %d sessions left running since before %s", len(ids), started_before)
    service = current_app.extensions.get("classroom")
    if service is not None:  # live state here, and the other processes told (at start-up too)
        for session_id, code in stale:
            service.end(session_id, code)
