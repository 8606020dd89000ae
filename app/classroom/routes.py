"""Classroom pages: the teacher's classes, dashboard, history and export; the student's join."""
from __future__ import annotations

import hmac
import itertools
import re
import threading
from datetime import timedelta

from flask import (
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.classroom import bp
from app.classroom.forms import (
    FORM_EXPIRED,
    ActionForm,
    ClassForm,
    CodeForm,
    DeleteForm,
    JoinForm,
    SettingsForm,
    require_valid,
)
from app.classroom.models import Classroom, ClassSession, Student, new_code, normalise_code, utcnow
from app.classroom.qr import qr_data_uri
from app.classroom.reports import summary
from app.classroom.storage import (
    BOM,
    class_csv_lines,
    delete_classroom,
    iter_session_records,
    session_overview,
    student_csv_lines,
)
from app.extensions import db, limiter, login_manager

STUDENT_KEY = "classroom_student"  # Flask-session key: [id, token] of the Student row this browser joined as
RESUBMIT_SECONDS = 10  # a "New class" of the same name by the same teacher within this is the same class
_create_lock = threading.Lock()  # one "New class" check-and-insert at a time in this process


# -- access -----------------------------------------------------------------------------------

def own_class(code: str) -> Classroom:
    """The logged-in teacher's class ``code``: 401 when not logged in, 404 unknown, 403 someone else's."""
    if not current_user.is_authenticated:
        abort(make_response(login_manager.unauthorized()))
    classroom = db.session.scalar(select(Classroom).where(Classroom.code == normalise_code(code)))
    if classroom is None:
        abort(404, description=f"There is no class with the code {normalise_code(code)}.")
    if classroom.teacher_id != current_user.id:
        abort(403, description="Only the class's teacher can see this.")
    return classroom


def class_session(classroom: Classroom, session_id: int | None) -> ClassSession | None:
    """Session ``session_id`` of the class (404 if it is another class's), or the latest one."""
    if session_id is None:
        return classroom.latest_session()
    # Ids outside the column's range cannot exist (and some databases raise on them).
    sess = db.session.get(ClassSession, session_id) if 0 < session_id < 2**31 else None
    if sess is None or sess.classroom_id != classroom.id:
        days = int(current_app.config["CLASSROOM_RETENTION_DAYS"])
        kept = f" Sessions are deleted {days} days after they end." if days > 0 else ""
        abort(404, description=f"This class has no such session.{kept}")
    return sess


def session_arg() -> int | None:
    """The ``?session=<id>`` of a read, or None when absent; 400 when it is not a whole number."""
    raw = request.args.get("session")
    if raw is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,40}", raw):
        abort(400, description=f"session must be a session id (a whole number), got {raw[:40]!r}")
    return int(raw)


class NotJoinable(Exception):
    """A join code that leads to no running session: ``status`` 404 (unknown) or 410 (no session running)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def joinable(code: str) -> tuple[Classroom, ClassSession]:
    """The class and its running session for a join code; raises NotJoinable (404 unknown, 410 not running)."""
    norm = normalise_code(code)
    classroom = db.session.scalar(select(Classroom).where(Classroom.code == norm)) if norm else None
    if classroom is None:
        raise NotJoinable(404, f"No class has the code {norm or code}: check it with your teacher.")
    running = classroom.running_session()
    if running is None:
        raise NotJoinable(410, f"The class “{classroom.name}” has no session running now: wait for your teacher "
                               "to start it, then try again.")
    return classroom, running


@bp.errorhandler(NotJoinable)
def not_joinable(exc: NotJoinable):
    """The code form again, with the code typed and why it leads nowhere (404 or 410: a wrong guess)."""
    form = CodeForm(formdata=None)
    form.code.data = normalise_code((request.view_args or {}).get("code") or request.form.get("code")) or None
    form.code.errors = [exc.message]
    return render_template("classroom/home.html", form=form), exc.status


def _cookie_student() -> Student | None:
    """The student this browser joined as (whether or not their session still runs), or None.

    The cookie must name the student's id *and* token: an id alone may since
    belong to someone else (a deleted student's id reused).
    """
    ref = session.get(STUDENT_KEY)
    if isinstance(ref, list) and len(ref) == 2 and isinstance(ref[0], int) and isinstance(ref[1], str) \
            and 0 < ref[0] < 2**31 and ref[1]:
        found = db.session.get(Student, ref[0])
        if found is not None and found.token and hmac.compare_digest(found.token.encode(), ref[1].encode()):
            return found
    return None


def current_student() -> tuple[Student | None, str | None]:
    """The student this browser joined as, if their session still runs; else (None, why)."""
    student = _cookie_student()
    if student is None:
        return None, "Join the class first: open the join link or enter the class code."
    if not student.session.running:
        return None, "This class session has ended."
    return student, None


def join_url(classroom: Classroom) -> str:
    """The absolute join link for a class."""
    return url_for("classroom.join", code=classroom.code, _external=True)


# -- landing and teacher pages --------------------------------------------------------------------

@bp.get("/classroom")
def home():
    """Where students enter a code and teachers find their classes."""
    return render_template("classroom/home.html", form=CodeForm())


@bp.get("/classes")
@login_required
def classes():
    """The teacher's classes and a form for a new one."""
    return render_template("classroom/classes.html", form=ClassForm(), classes=current_user.classes)


@bp.post("/classes")
@login_required
def create_class():
    """Create a class, start its first session, and open its dashboard."""
    form = ClassForm()
    if not form.validate_on_submit():
        return render_template("classroom/classes.html", form=form, classes=current_user.classes), 400
    with _create_lock:
        # The form sent twice (a double click, a resent request): the class created the first time.
        same = db.session.scalar(select(Classroom).where(
            Classroom.teacher_id == current_user.id, Classroom.name == form.name.data,
            Classroom.created_at >= utcnow() - timedelta(seconds=RESUBMIT_SECONDS)).order_by(Classroom.id.desc()))
        if same is not None:
            return redirect(url_for("classroom.dashboard", code=same.code))
        code = new_code()
        while db.session.scalar(select(Classroom.id).where(Classroom.code == code)) is not None:
            code = new_code()
        classroom = Classroom(teacher_id=current_user.id, name=form.name.data, code=code,
                              aggregate_only=bool(form.aggregate_only.data))
        db.session.add(classroom)
        db.session.flush()
        first = ClassSession(classroom_id=classroom.id, aggregate_only=classroom.aggregate_only)
        db.session.add(first)
        db.session.commit()
    current_app.extensions["classroom"].started(first.id)
    flash(f"Class “{classroom.name}” created. Students join with the code {code}.", "ok")
    return redirect(url_for("classroom.dashboard", code=code))


@bp.get("/classes/<code>")
def dashboard(code: str):
    """The live dashboard of a class (or its last session, when none runs)."""
    classroom = own_class(code)
    running = classroom.running_session()
    link = join_url(classroom)
    return render_template("classroom/dashboard.html", classroom=classroom, running=running, join_link=link,
                           qr=qr_data_uri(link), action=ActionForm(),
                           settings_form=SettingsForm(aggregate_only=classroom.aggregate_only),
                           delete_form=DeleteForm())


@bp.get("/classes/<code>/present")
def present(code: str):
    """The join code, link and QR code, large, for the projector."""
    classroom = own_class(code)
    link = join_url(classroom)
    return render_template("classroom/present.html", classroom=classroom, join_link=link, qr=qr_data_uri(link),
                           running=classroom.running_session())


@bp.post("/classes/<code>/start")
def start_session(code: str):
    """Start a new session (students can join again)."""
    classroom = own_class(code)
    require_valid(ActionForm())
    if classroom.running_session() is None:
        new = ClassSession(classroom_id=classroom.id, aggregate_only=classroom.aggregate_only)
        db.session.add(new)
        try:
            db.session.commit()
        except IntegrityError:  # started at the same moment by another click: one running session per class
            db.session.rollback()
        else:
            current_app.extensions["classroom"].started(new.id)
            flash("New session started.", "ok")
    return redirect(url_for("classroom.dashboard", code=classroom.code))


@bp.post("/classes/<code>/end")
def end_session(code: str):
    """End the running session: students stop sharing, the dashboard stops updating."""
    classroom = own_class(code)
    running = db.session.scalars(select(ClassSession).where(
        ClassSession.classroom_id == classroom.id, ClassSession.ended_at.is_(None))).all()
    require_valid(ActionForm())
    if running:
        for sess in running:
            sess.ended_at = utcnow()
        db.session.commit()
        for sess in running:
            current_app.extensions["classroom"].end(sess.id, classroom.code)
        flash("Session ended. Its figures are kept in the history.", "ok")
    return redirect(url_for("classroom.dashboard", code=classroom.code))


@bp.post("/classes/<code>/settings")
def settings(code: str):
    """Change the aggregate-only setting (switching it on applies to the running session at once)."""
    classroom = own_class(code)
    form = SettingsForm()
    require_valid(form)
    classroom.aggregate_only = bool(form.aggregate_only.data)
    running = classroom.running_session()
    if running is not None and classroom.aggregate_only:
        running.aggregate_only = True
        current_app.extensions["classroom"].set_aggregate_only(running.id)
    db.session.commit()
    flash("Aggregate-only mode is on." if classroom.aggregate_only else
          "Aggregate-only mode is off from the next session on.", "ok")
    return redirect(url_for("classroom.dashboard", code=classroom.code))


@bp.post("/classes/<code>/delete")
def delete_class(code: str):
    """Delete the class and all its data, after an explicit confirmation."""
    classroom = own_class(code)
    form = DeleteForm()
    if not form.validate_on_submit():
        if getattr(form, "csrf_token", None) is not None and form.csrf_token.errors:
            abort(400, description=FORM_EXPIRED)
        flash("Tick the confirmation box to delete the class.", "error")
        return redirect(url_for("classroom.dashboard", code=classroom.code))
    service = current_app.extensions["classroom"]
    running = classroom.running_session()
    name, code = classroom.name, classroom.code
    if running is not None:  # stop the live side first, so nothing is queued for deleted rows
        service.end(running.id, code, reason="deleted", store=False)
    service.forget(s.id for s in classroom.sessions)
    delete_classroom(classroom)
    if running is None:  # a dashboard still open on an ended session hears of it too, once it is gone
        service.announce_deleted(code)
    flash(f"Class “{name}” and all its data were deleted.", "ok")
    return redirect(url_for("classroom.classes"))


@bp.get("/classes/<code>/history")
def history(code: str):
    """The class's sessions, newest first."""
    classroom = own_class(code)
    return render_template("classroom/history.html", classroom=classroom, sessions=session_overview(classroom))


@bp.get("/classes/<code>/sessions/<int:session_id>")
def session_report(code: str, session_id: int):
    """One session's figures and charts."""
    classroom = own_class(code)
    sess = class_session(classroom, session_id)
    return render_template("classroom/session.html", classroom=classroom, sess=sess)


@bp.get("/classes/<code>/export.csv")
def export_csv(code: str):
    """The session's per-second time series as CSV (``?session=<id>``; ``?by=student`` per student).

    Per-student rows are refused (403) for aggregate-only classes and sessions, and are 404 for a class with no
    session left. Streamed, read from the database a page at a time; the per-student CSV starts with a UTF-8
    BOM, so that spreadsheets read its names in any script.
    """
    classroom = own_class(code)
    sess = class_session(classroom, session_arg())
    by = request.args.get("by")
    if by not in (None, "student"):
        abort(400, description=f"by must be 'student' (one row per student and second) or left out, got {by[:40]!r}")
    by_student = by == "student"
    if by_student and sess is None:
        abort(404, description="No session (expired or none yet).")
    if by_student and not sess.shows_students():
        abort(403, description="This class is aggregate-only: per-student data is not available.")
    if sess is not None and sess.running:
        current_app.extensions["classroom"].flush()  # include the seconds just finished
    records = iter_session_records(sess.id) if sess is not None else iter(())
    if by_student:
        names = {s.id: s.display_name for s in sess.students}
        lines = itertools.chain([BOM], student_csv_lines(records, names))
    else:
        lines = class_csv_lines(records)
    suffix = f"session-{sess.id}" if sess is not None else "no-session"
    filename = f"moodlens-{classroom.code}-{suffix}{'-students' if by_student else ''}.csv"
    return Response(stream_with_context(_batched(lines)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


def _batched(lines, size: int = 64 * 1024):
    """Lines joined into pieces of about ``size`` characters (one write per piece, not per line)."""
    buf: list[str] = []
    n = 0
    for line in lines:
        buf.append(line)
        n += len(line)
        if n >= size:
            yield "".join(buf)
            buf, n = [], 0
    if buf:
        yield "".join(buf)


@bp.get("/api/v1/classes/<code>/mood")
def api_mood(code: str):
    """``{"students", "distribution", "engagement", "timeline", ...}`` for the class's teacher (401/403 others)."""
    classroom = own_class(code)
    named = session_arg()
    sess = class_session(classroom, named)
    resp = jsonify(summary(classroom, sess, full=True, so_far=named is not None))
    resp.headers["Cache-Control"] = "no-store"
    return resp


# -- students ---------------------------------------------------------------------------------

def _join_limit() -> str:
    return current_app.config["JOIN_RATE_LIMIT"]


def _missed(response) -> bool:
    """A code guessed wrong (unknown, or a class not running): counted against the join limit."""
    return response.status_code in (404, 410)


# A wrong code counts against one limit wherever it is tried: typed in the code form, or a join page
# opened; a student reloading their page (or submitting the join form) is never limited by it.
def _guess_limit(*methods: str):
    """The one "join-guess" limit, applied to ``methods`` of a view."""
    return limiter.shared_limit(_join_limit, scope="join-guess", methods=list(methods), deduct_when=_missed,
                                error_message="Too many wrong class codes from here. Wait a minute, then try again.")


guess_limit = _guess_limit("GET", "HEAD")   # the join pages
code_guess_limit = _guess_limit("POST")     # the code form


@bp.route("/join", methods=["GET", "POST"])
@limiter.limit(_join_limit, methods=["POST"])
@code_guess_limit
def join_code():
    """A student types the class code: on to its join page, or the form again saying why not."""
    form = CodeForm()
    if form.validate_on_submit():
        classroom, _ = joinable(form.code.data)
        return redirect(url_for("classroom.join", code=classroom.code))
    return render_template("classroom/home.html", form=form), 400 if form.errors else 200


@bp.route("/join/<code>", methods=["GET", "POST"])
@limiter.limit(_join_limit, methods=["POST"])
@guess_limit
def join(code: str):
    """Display name, the notice of what is analysed and kept, consent; then the student page.

    A browser that joined the running session already (its page was closed or crashed, the link opened again)
    is offered its student page, and agreeing again under the same name brings back the same student, not a
    second one with the same name; another name is another person on this browser: the previous student
    counts as having left, as with *Leave this class* (which forgets the student: the next join is anew).
    """
    classroom, running = joinable(code)
    if classroom.code != code:
        return redirect(url_for("classroom.join", code=classroom.code))
    me = _cookie_student()
    if me is not None and me.session_id != running.id:
        me = None  # a student of an earlier session: this one is joined anew
    form = JoinForm()
    if me is not None and not form.is_submitted():
        form.display_name.data = me.display_name
    if form.validate_on_submit():
        if me is not None and me.display_name.casefold() == form.display_name.data.casefold():
            student = me  # back on this browser: the same student and tile
        else:
            if me is not None:
                current_app.extensions["classroom"].left(me.session_id, me.id)
            student = Student(session_id=running.id, display_name=form.display_name.data, consent_at=utcnow())
            db.session.add(student)
            db.session.commit()
        session[STUDENT_KEY] = [student.id, student.token]
        return redirect(url_for("classroom.student", code=classroom.code, start=1))
    return render_template("classroom/join.html", classroom=classroom, running=running, form=form, me=me), \
        400 if form.errors else 200


@bp.get("/join/<code>/live")
@guess_limit
def student(code: str):
    """The student's own live view while sharing with the class."""
    classroom, running = joinable(code)
    me, _ = current_student()
    if me is None or me.session_id != running.id:
        return redirect(url_for("classroom.join", code=classroom.code))
    return render_template("classroom/student.html", classroom=classroom, me=me, action=ActionForm())


@bp.post("/join/<code>/leave")
def leave(code: str):
    """Forget which student this browser was; their streams count as left (not lost) from now on.

    The page stops the camera and says ``classroom_leave`` first; this covers a
    page whose script did not (with several processes, the others stop this
    student's streams at their next push tick).
    """
    require_valid(ActionForm())
    student = _cookie_student()
    session.pop(STUDENT_KEY, None)
    if student is not None:
        current_app.extensions["classroom"].left(student.session_id, student.id)
        flash(f"You left “{student.session.classroom.name}”. Nothing more is sent from this browser.", "ok")
    return redirect(url_for("classroom.home"))
