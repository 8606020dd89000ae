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
logged in as a teacher, with a login that has not ended):

- ``dashboard_join`` ``{"code"}`` -> ack ``{"ok": true, "summary"}`` (the full
  summary) or ``{"error"}`` (with ``"gone": true`` for a class that does not
  exist, ``"retry": true`` when the database failed); the socket then gets
  ``mood`` summaries every ``CLASSROOM_PUSH_SECONDS`` and ``session_ended``
  ``{"session", "reason"}`` when the session ends (``"session": null`` with
  ``"reason": "deleted"`` when the class is deleted with no session running).
- ``dashboard_leave`` ``{"code"}`` -> ack ``{"ok": true}``: stop receiving them.
- ``logged_out`` (server -> dashboard) ``{}``: the login the socket was opened
  with ended (log-out, or another log-in in the same browser); the server then
  disconnects the socket.

A dashboard socket keeps the Flask session it connected with, so a log-out
cannot reach it through the cookie. Each log-in gets a random id in the Flask
session (``LOGIN_KEY``); every dashboard socket is recorded under its login's
id (:class:`DashboardLogins`: in this process, and in Redis when several
processes share one), and :func:`end_login` (called by the log-out and by a
log-in that replaces another in the same browser) marks the login ended and
disconnects each of its sockets, in whichever process holds it (python-socketio
relays a disconnect through the message queue). A socket of an ended login
cannot connect or join a class again.

Every event takes a missing payload, one of the wrong type, or extra
arguments (ignored), and answers as above: an ``{"error"}`` ack at worst.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from datetime import timedelta

from flask import current_app, request, session
from flask_login import current_user
from flask_socketio import ConnectionRefusedError, join_room, leave_room
from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from app.classroom.cluster import RedisOutage
from app.classroom.models import Classroom, EndedLogin, code_shaped, normalise_code, utcnow
from app.classroom.reports import summary
from app.classroom.routes import current_student
from app.classroom.service import NAMESPACE, room
from app.extensions import db, socketio
from app.live import events as live

log = logging.getLogger("moodlens.classroom.events")

LOGIN_KEY = "classroom_login"  # Flask-session key: the random id of this browser's teacher login
LOGIN_PREFIX = "moodlens:login:"
LOGGED_OUT = "you are logged out: log in again to open a class dashboard"
# Ended logins remembered by one process at most (about 20 MB): the oldest are forgotten first, so log-outs
# cannot grow memory without bound within a session cookie's lifetime.
MAX_ENDED_LOGINS = 100_000
_registry_lock = threading.Lock()


def login_room(login: str) -> str:
    """The Socket.IO room of one login's dashboard sockets."""
    return f"login:{login}"


def _service():
    return current_app.extensions["classroom"]


class DashboardLogins:
    """The dashboard sockets of each teacher login, and the logins that ended (both kept for ``ttl`` s).

    This process's sockets and ended logins are kept here; with several
    processes (the service has a Redis link) also in Redis, under
    ``moodlens:login:<id>:sids`` (a set of sids) and ``moodlens:login:<id>:ended``,
    so that a log-out on one process finds the sockets on the others. Recording
    a socket and ending its login are each one Redis transaction: a socket that
    connects while its login ends is either found by :meth:`end` or refused by
    :meth:`add`. Redis away: each process knows its own sockets only (logged).
    Ended logins are also kept in the database (``EndedLogin``), where every
    process and a restarted one find them.
    """

    def __init__(self, service, ttl: float):
        self.service = service
        self.ttl = ttl
        self._lock = threading.Lock()
        self._sids: dict[str, set[str]] = {}
        self._ended: OrderedDict[str, float] = OrderedDict()  # login -> time.monotonic() it is forgotten
        self.outage: RedisOutage | None = None
        self._outage_link = None

    def _call(self, build) -> list | None:
        """``build(pipeline)`` as one Redis transaction: its replies; None with one process (no Redis) or when
        Redis is away or failed (logged as this registry's outage)."""
        link = self.service.cluster
        if link is None:
            return None
        if self._outage_link is not link:
            # Its own outage record over the link's connection: a refused login call is not a missed class summary.
            self.outage = RedisOutage(log, "dashboard logins", link.url, link.outage.retry_after,
                                      "a log-out closes the dashboards of its own process only",
                                      "login calls without it")
            self._outage_link = link
        return self.outage.run(link.client, build, transaction=True)

    def _ended_here(self, login: str) -> bool:
        """Whether ``login`` ended on this process (call with the lock held); forgets expired ends."""
        now = time.monotonic()
        while self._ended and next(iter(self._ended.values())) <= now:
            self._ended.popitem(last=False)
        return login in self._ended

    def add(self, login: str, sid: str) -> bool:
        """Record dashboard socket ``sid`` of ``login``; False (nothing recorded) when that login has ended."""
        with self._lock:
            if self._ended_here(login):
                return False
            self._sids.setdefault(login, set()).add(sid)
        key = LOGIN_PREFIX + login
        replies = self._call(lambda p: (p.sadd(key + ":sids", sid), p.expire(key + ":sids", int(self.ttl)),
                                        p.exists(key + ":ended")))
        if replies and replies[2]:
            self.discard(login, sid)
            return False
        return True

    def discard(self, login: str | None, sid: str) -> None:
        """Forget dashboard socket ``sid`` of ``login`` (it disconnected)."""
        if not login:
            return
        with self._lock:
            sids = self._sids.get(login)
            if sids is not None:
                sids.discard(sid)
                if not sids:
                    del self._sids[login]
        self._call(lambda p: p.srem(LOGIN_PREFIX + login + ":sids", sid))

    def ended(self, login: str | None) -> bool:
        """Whether ``login`` ended, here, on another process or before a restart (a missing id counts as
        ended). Known here first; else one look-up in the database, and with several processes one in Redis
        (a log-out the database did not record); a failed look-up counts as not ended (logged)."""
        if not login:
            return True
        with self._lock:
            if self._ended_here(login):
                return True
        try:
            until = db.session.scalar(select(EndedLogin.until).where(EndedLogin.login == login))
        except SQLAlchemyError as exc:
            db.session.rollback()
            log.warning("log-in check: the database did not answer (%s); a logged-out session cookie is "
                        "refused only where the log-out is known (this process, or Redis)", exc.__class__.__name__)
            until = None
        if until is None or until <= utcnow():
            replies = self._call(lambda p: p.exists(LOGIN_PREFIX + login + ":ended"))
            if not (replies and replies[0]):
                return False
        self._remember_ended(login)
        return True

    def _remember_ended(self, login: str) -> None:
        with self._lock:
            self._ended_here(login)
            self._ended[login] = time.monotonic() + self.ttl
            self._ended.move_to_end(login)
            while len(self._ended) > MAX_ENDED_LOGINS:
                self._ended.popitem(last=False)

    def _store_ended(self, login: str) -> None:
        """Record ``login`` as ended in the database for ``ttl`` s; forget the records that have expired."""
        now = utcnow()
        try:
            db.session.execute(delete(EndedLogin).where(EndedLogin.until <= now))
            db.session.merge(EndedLogin(login=login, until=now + timedelta(seconds=self.ttl)))
            db.session.commit()
        except SQLAlchemyError as exc:
            db.session.rollback()
            log.warning("log-out: the database did not record it (%s); a copy of the session cookie is refused "
                        "by this process (and, with Redis, the others) until a restart", exc.__class__.__name__)

    def end(self, login: str) -> set[str]:
        """Mark ``login`` ended everywhere; returns the sids of its dashboard sockets in every process."""
        self._remember_ended(login)
        with self._lock:
            sids = self._sids.pop(login, set())
        self._store_ended(login)
        if self.service.cluster is None:
            return sids
        key = LOGIN_PREFIX + login
        replies = self._call(lambda p: (p.set(key + ":ended", 1, ex=int(self.ttl)), p.smembers(key + ":sids"),
                                        p.delete(key + ":sids")))
        if replies is None:
            log.warning("log-out: Redis away: the login's dashboards on other processes are not closed")
            return sids
        return sids | {m.decode() if isinstance(m, bytes) else str(m) for m in replies[1]}


def dashboard_logins() -> DashboardLogins:
    """The app's :class:`DashboardLogins` (created on first use; logins are remembered as long as a session
    cookie is valid, ``PERMANENT_SESSION_LIFETIME``)."""
    found = current_app.extensions.get("classroom_logins")
    if found is None:
        with _registry_lock:
            found = current_app.extensions.get("classroom_logins")
            if found is None:
                ttl = max(current_app.permanent_session_lifetime.total_seconds(), 60.0)
                found = current_app.extensions["classroom_logins"] = DashboardLogins(_service(), ttl)
    return found


def end_login(login: str | None) -> int:
    """End teacher login ``login``: its dashboard sockets, in every process, get ``logged_out`` and are
    disconnected, and none of it can connect or join again; returns how many sockets were found."""
    if not login:
        return 0
    sids = dashboard_logins().end(login)
    socketio.emit("logged_out", {}, to=login_room(login), namespace=NAMESPACE)
    for sid in sids:
        socketio.server.disconnect(sid, namespace=NAMESPACE)  # another process's: relayed by the message queue
    return len(sids)


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
    """Only a logged-in teacher, whose login has not ended, may open a dashboard socket (recorded under that login)."""
    login = session.get(LOGIN_KEY)
    if not current_user.is_authenticated:
        # A session that still holds a login id is a logged-out one (its login ended: a copied cookie).
        raise ConnectionRefusedError(LOGGED_OUT if login else "log in as a teacher to open a class dashboard")
    if not login or not dashboard_logins().add(login, request.sid):
        raise ConnectionRefusedError(LOGGED_OUT)
    join_room(login_room(login))


@socketio.on("disconnect", namespace=NAMESPACE)
def dashboard_disconnect(*_args):
    """A dashboard socket is gone: forget it."""
    dashboard_logins().discard(session.get(LOGIN_KEY), request.sid)


@socketio.on("dashboard_join", namespace=NAMESPACE)
def dashboard_join(data=None, *_extra):
    """``{"code"}`` (more arguments ignored) -> join its teacher room; ack ``{"ok", "summary"}`` or ``{"error"}``
    (also when the socket's login has ended), with ``"gone": true`` when no class has that code (a dashboard's
    class that was deleted), with ``"retry": true`` when the database failed (logged; the room is not joined:
    ask again later)."""
    code = normalise_code(data.get("code") if isinstance(data, dict) else None)
    try:
        if not current_user.is_authenticated or dashboard_logins().ended(session.get(LOGIN_KEY)):
            return {"error": LOGGED_OUT}
        classroom = db.session.scalar(select(Classroom).where(Classroom.code == code)) if code else None
        if classroom is None:  # "gone": shaped like a class code, of no class (any more); not for malformed ones
            return {"error": "unknown class code", **({"gone": True} if code_shaped(code) else {})}
        if classroom.teacher_id != current_user.id:
            log.warning("teacher %s asked for the dashboard of class %s", current_user.id, code)
            return {"error": "only the class's teacher can open its dashboard"}
        join_room(room(classroom.code))
        return {"ok": True, "summary": summary(classroom, full=True)}
    except SQLAlchemyError as exc:
        db.session.rollback()
        if code:
            leave_room(room(code))  # joined to nothing until a join succeeds: no pushes without a snapshot
        log.warning("dashboard of class %s: the database did not answer (%s); the page asks again",
                    code, exc.__class__.__name__)
        return {"error": "the database did not answer", "retry": True}


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
