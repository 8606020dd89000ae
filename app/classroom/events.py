"""Classroom Socket.IO events.

Students stream through the live page's ``frame`` event (namespace ``/``):
the hooks below, registered on the live handlers, route a student's results
into the class that the *server-side* Flask session says they joined; nothing
the client sends can pick the class.

- connect on ``/`` with ``auth={"classroom": "student"}``: registers the stream
  as the joined student's, or is refused with a reason (not joined, session
  ended). Connections without that auth are plain live-page streams.
- ``classroom_leave`` (client -> server, ack ``{"ok": true}``): the student
  stopped sharing; their frames no longer count and no alert is raised.
- ``classroom_settings`` (client -> server, ack ``{"aggregate_only": bool}``, or
  ``{}`` for a stream that feeds no class): what the teacher sees of this
  student now. Also server -> student, ``{"aggregate_only": true}``, when the
  teacher switches the running session to aggregate-only.
- ``classroom_ended`` (server -> student) ``{"session", "reason"}``: the teacher
  ended the session (``reason`` "ended" or "deleted"), or the student left the
  class from another page of this browser ("left").

Teachers' dashboards use the ``/classroom`` namespace (connect refused unless
logged in as a teacher):

- ``dashboard_join`` ``{"code"}`` -> ack ``{"ok": true, "summary"}`` (the full
  summary) or ``{"error"}``; the socket then gets ``mood`` summaries every
  ``CLASSROOM_PUSH_SECONDS`` and ``session_ended`` when the session ends.
- ``dashboard_leave`` ``{"code"}`` -> ack ``{"ok": true}``: stop receiving them.

Every event takes a missing payload, one of the wrong type, or extra
arguments (ignored), and answers as above: an ``{"error"}`` ack at worst.
"""
from __future__ import annotations

import logging

from flask import current_app, request
from flask_login import current_user
from flask_socketio import ConnectionRefusedError, join_room, leave_room
from sqlalchemy import select

from app.classroom.models import Classroom, normalise_code
from app.classroom.reports import summary
from app.classroom.routes import current_student
from app.classroom.service import NAMESPACE, room
from app.extensions import db, socketio
from app.live import events as live

log = logging.getLogger("moodlens.classroom.events")


def _service():
    return current_app.extensions["classroom"]


def _wants_classroom(auth) -> bool:
    return isinstance(auth, dict) and auth.get("classroom") == "student"


def on_stream_connect(sid: str, auth) -> None:
    """Live connect hook: register a student page's stream; refuse it with the reason when it cannot join."""
    if not _wants_classroom(auth):
        return None
    student, why = current_student()
    if student is None:
        raise ConnectionRefusedError(why)
    if _service().register(sid, student, student.session) is None:  # ended while this connection was checked
        raise ConnectionRefusedError("This class session has ended.")
    return None


def on_stream_disconnect(sid: str) -> None:
    """Live disconnect hook: a student's stream that ends without ``classroom_leave`` was lost."""
    _service().unregister(sid, dropped=True)


def on_stream_frame(sid: str, _stream, result: dict) -> None:
    """Live frame hook: add a registered student's result to their class (others are ignored)."""
    _service().on_frame(sid, result)


@socketio.on("classroom_leave")
def classroom_leave(*_args):
    """The student stopped sharing; ack ``{"ok": bool}`` (False when the stream was not a student's)."""
    return {"ok": _service().unregister(request.sid, dropped=False)}


@socketio.on("classroom_settings")
def classroom_settings(*_args):
    """Ack ``{"aggregate_only": bool}`` for a student's stream, ``{}`` for any other."""
    return _service().settings_of(request.sid) or {}


@socketio.on("connect", namespace=NAMESPACE)
def dashboard_connect(auth=None):
    """Only a logged-in teacher may open a dashboard socket."""
    if not current_user.is_authenticated:
        raise ConnectionRefusedError("log in as a teacher to open a class dashboard")


@socketio.on("dashboard_join", namespace=NAMESPACE)
def dashboard_join(data=None, *_extra):
    """``{"code"}`` (more arguments ignored) -> join its teacher room; ack ``{"ok", "summary"}`` or ``{"error"}``."""
    if not current_user.is_authenticated:
        return {"error": "log in as the class's teacher"}
    code = normalise_code(data.get("code") if isinstance(data, dict) else None)
    classroom = db.session.scalar(select(Classroom).where(Classroom.code == code)) if code else None
    if classroom is None:
        return {"error": "unknown class code"}
    if classroom.teacher_id != current_user.id:
        log.warning("teacher %s asked for the dashboard of class %s", current_user.id, code)
        return {"error": "only the class's teacher can open its dashboard"}
    join_room(room(classroom.code))
    return {"ok": True, "summary": summary(classroom, full=True)}


@socketio.on("dashboard_leave", namespace=NAMESPACE)
def dashboard_leave(data=None, *_extra):
    """``{"code"}`` (more arguments ignored) -> leave its teacher room; ack ``{"ok": true}``, whatever was sent."""
    code = normalise_code(data.get("code") if isinstance(data, dict) else None)
    if code:
        leave_room(room(code))
    return {"ok": True}


def install_hooks() -> None:
    """Add the classroom's hooks to the live stream's lists (once per process)."""
    for hooks, fn in ((live.connect_listeners, on_stream_connect), (live.disconnect_listeners, on_stream_disconnect),
                      (live.frame_listeners, on_stream_frame)):
        if fn not in hooks:
            hooks.append(fn)
