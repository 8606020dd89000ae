"""The running classes of this process: who streams into which class, pushes and flushes.

One :class:`ClassroomService` per app (``app.extensions["classroom"]``). The
live stream's frame listener calls :meth:`ClassroomService.on_frame` for every
analysed frame; that costs a dict look-up and an in-memory update. A single
background ticker rolls the aggregates, pushes a summary to each class's
teacher room every ``CLASSROOM_PUSH_SECONDS`` and flushes the finished seconds
to the database every ``CLASSROOM_FLUSH_SECONDS``; it exits when no class has
been running for a while and is started again on demand.

The ticker never waits on the database for long: the flush, the purge and the
push's read of the aggregate-only settings run on threads of their own
(:class:`app.concurrency.Background`), one of each kind at a time, and the
ticker waits for them a fraction of a second at most. A database that hangs
delays what is stored (the rows stay queued), never a push.

Several processes (``SOCKETIO_MESSAGE_QUEUE`` a Redis URL): a class's students
may stream to different processes, each holding only its own students. On
every push tick each process publishes its part of each running session to
Redis and reads the others' (app/classroom/cluster.py, one round trip), keeps a
merged view of the whole class (app/classroom/merge.py), and only the process
holding the session's leadership pushes it to the teacher room, so a
dashboard gets one summary covering every student, whichever process it is
connected to. The frame path never touches Redis. Without Redis (or while it is
unreachable) a process pushes the summary of its own students, as one process
always does.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from datetime import datetime, timezone

from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError

from app.classroom.aggregate import ClassAggregate, Record, Settings, timeline
from app.classroom.cluster import ClusterLink
from app.classroom.merge import MergedView
from app.classroom.models import Classroom, ClassSession
from app.classroom.storage import BatchWriter, purge_expired, session_records
from app.concurrency import Background
from app.extensions import db, socketio

log = logging.getLogger("moodlens.classroom")

NAMESPACE = "/classroom"       # the teachers' dashboards
STUDENT_NAMESPACE = "/"        # students stream through the live page's namespace
IDLE_EXIT_SECONDS = 30.0
PURGE_EVERY_SECONDS = 3600.0
TICK_DB_WAIT_SECONDS = 0.5   # the ticker's longest wait for a database job (flush, aggregate-only flags)
FLUSH_WAIT_SECONDS = 5.0     # a request's (or shutdown's) longest wait for the samples to be written
HISTORY_WAIT_SECONDS = 2.0   # the merged timeline's longest wait for stored records


def room(code: str) -> str:
    """The Socket.IO room of a class's teacher dashboards."""
    return f"class:{code}"


def epoch(dt: datetime | None) -> float | None:
    """A stored naive-UTC datetime as Unix time."""
    return None if dt is None else dt.replace(tzinfo=timezone.utc).timestamp()


class ClassroomService:
    """Live aggregates by session id and the student streams feeding them."""

    def __init__(self, app):
        cfg = app.config
        self.app = app
        self.settings = Settings(
            window=float(cfg["CLASSROOM_WINDOW_SECONDS"]), timeline_step=int(cfg["CLASSROOM_TIMELINE_STEP"]),
            stale_after=float(cfg["CLASSROOM_STALE_SECONDS"]), negative_share=float(cfg["CLASSROOM_NEGATIVE_SHARE"]),
            negative_for=float(cfg["CLASSROOM_NEGATIVE_SECONDS"]))
        self.push_every = float(cfg["CLASSROOM_PUSH_SECONDS"])
        self.flush_every = float(cfg["CLASSROOM_FLUSH_SECONDS"])
        self.retention_days = int(cfg["CLASSROOM_RETENTION_DAYS"])
        self.ticker_enabled = bool(cfg["CLASSROOM_TICKER"])
        self.async_mode = cfg["ASYNC_MODE"]
        self.writer = BatchWriter(app)
        self._lock = threading.RLock()
        self._classes: dict[int, ClassAggregate] = {}
        self._sids: dict[str, tuple[ClassAggregate, int]] = {}
        # Sessions ended here: a student or dashboard arriving just after the end must not revive them.
        self._ended: set[int] = set()
        self._flags_failing = False
        self._jobs: dict[str, Background] = {}  # the database jobs running in the background, by kind
        self._ticker_alive = False
        self._stop = threading.Event()
        self._last_push = self._last_flush = self._last_purge = 0.0
        self._idle_since: float | None = None
        self.pushes = 0
        # Several processes sharing Redis: parts published and merged, one pusher per session.
        self.cluster: ClusterLink | None = ClusterLink.from_config(cfg)
        self._views: dict[int, MergedView] = {}
        self._told: weakref.WeakSet[ClassAggregate] = weakref.WeakSet()  # aggregate-only, and its students told

    # -- aggregates -----------------------------------------------------------------------
    def aggregate(self, session) -> ClassAggregate | None:
        """The live aggregate of a running ``ClassSession`` (created on first use, its timeline from storage);
        None once the session was ended here."""
        with self._lock:
            if session.id in self._ended:
                return None
            agg = self._classes.get(session.id)
            if agg is not None:
                return agg
            classroom = session.classroom
            history = timeline(session_records(session.id), self.settings.timeline_step)
            agg = ClassAggregate(session.id, classroom.code, classroom.name,
                                 bool(session.aggregate_only or classroom.aggregate_only), self.settings,
                                 started=epoch(session.started_at), history=history)
            self._classes[session.id] = agg
        self._ensure_ticker()
        return agg

    def find(self, session_id: int) -> ClassAggregate | None:
        """The live aggregate of a session, if this process has one."""
        with self._lock:
            return self._classes.get(session_id)

    def summary(self, session, full_timeline: bool = False) -> dict | None:
        """The live summary of a running ``ClassSession``: this process's aggregate, merged with the other
        processes' parts when several share Redis (the parts last read by the ticker, or read now).
        None when the session has just been ended here (report it from storage)."""
        agg = self.aggregate(session)
        if agg is None:
            return None
        if self.cluster is None:
            return agg.summary(full_timeline=full_timeline)
        now = time.time()
        view = self._view(agg.session_id)
        others = view.others
        if view.updated is None or time.monotonic() - view.updated > self.cluster.part_ttl:
            got = self.cluster.read(agg.session_id, now)
            if got is None:  # Redis away: this process's own students, as with one process
                return agg.summary(now, full_timeline=full_timeline)
            others = got.others
        return self._merged(agg, view, others, now, agg.snapshot(now), full_timeline=full_timeline)

    def set_aggregate_only(self, session_id: int) -> None:
        """Switch a running session to aggregate-only (there is no way back for that session)."""
        agg = self.find(session_id)
        if agg is not None:
            agg.aggregate_only = True
            self._tell_students(agg)

    def _tell_students(self, agg: ClassAggregate) -> None:
        """Once ``agg`` is aggregate-only, tell the student pages streaming into it (``classroom_settings``)
        that their teacher no longer sees them; once per aggregate. Called from the request that switched it
        and from each push (the switch may have come through the database, or another process)."""
        with self._lock:
            if not agg.aggregate_only or agg in self._told:
                return
            self._told.add(agg)
            sids = [sid for sid, (a, _) in self._sids.items() if a is agg]
        for sid in sids:
            socketio.emit("classroom_settings", {"aggregate_only": True}, to=sid, namespace=STUDENT_NAMESPACE)

    def settings_of(self, sid: str) -> dict | None:
        """``{"aggregate_only"}`` of the session that stream ``sid`` feeds, or None when it feeds none."""
        entry = self._sids.get(sid)
        return None if entry is None else {"aggregate_only": entry[0].aggregate_only}

    def started(self, session_id: int) -> None:
        """A session was stored as running (SQLite may give it the id of a deleted session ended here)."""
        with self._lock:
            self._ended.discard(session_id)

    def _refresh_flags(self, aggs: list[ClassAggregate]) -> None:
        """Switch to aggregate-only the sessions switched on in the database, by whichever process took the
        teacher's request (one small query per push)."""
        ids = [agg.session_id for agg in aggs if not agg.aggregate_only]
        if not ids:
            return
        with self.app.app_context():
            try:
                hidden = set(db.session.scalars(select(ClassSession.id).join(Classroom).where(
                    ClassSession.id.in_(ids), or_(ClassSession.aggregate_only, Classroom.aggregate_only))))
            except SQLAlchemyError as exc:
                if not self._flags_failing:
                    log.warning("classroom: cannot read the aggregate-only settings: %s", exc)
                self._flags_failing = True
                return
            finally:
                db.session.remove()
        self._flags_failing = False
        for agg in aggs:
            if agg.session_id in hidden:
                agg.aggregate_only = True

    # -- students -------------------------------------------------------------------------
    def register(self, sid: str, student, session) -> ClassAggregate | None:
        """Route the frames of stream ``sid`` into ``student``'s running session; None (nothing routed)
        when that session has been ended here meanwhile."""
        agg = self.aggregate(session)
        if agg is None:
            return None
        with self._lock:
            if self._classes.get(session.id) is not agg:  # ended since the line above
                return None
            old = self._sids.pop(sid, None)
            if old is not None:
                old[0].leave(old[1], sid)
            self._sids[sid] = (agg, student.id)
        agg.join(student.id, student.display_name, sid)
        return agg

    def unregister(self, sid: str, dropped: bool = False) -> bool:
        """Stop routing ``sid``; ``dropped``: the connection was lost (the teacher gets an alert)."""
        with self._lock:
            entry = self._sids.pop(sid, None)
        if entry is None:
            return False
        entry[0].leave(entry[1], sid, dropped=dropped)
        return True

    def left(self, session_id: int, student_id: int, announce: bool = True) -> int:
        """The student left the class: stop routing their streams here (reported as left, not lost) and tell
        their other pages (``classroom_ended`` with reason ``left``); returns how many streams that was.

        With several processes, the others are told through Redis and stop that student's streams at their
        next push tick (``announce`` False: that is this call, for a student who left through another process).
        """
        with self._lock:
            sids = [sid for sid, (a, st) in self._sids.items() if a.session_id == session_id and st == student_id]
        sids = [sid for sid in sids if self.unregister(sid, dropped=False)]
        for sid in sids:
            socketio.emit("classroom_ended", {"session": session_id, "reason": "left"}, to=sid,
                          namespace=STUDENT_NAMESPACE)
        if announce and self.cluster is not None:
            self.cluster.mark_left(session_id, student_id)
        return len(sids)

    def _left_elsewhere(self, session_id: int, student_ids: frozenset[int]) -> None:
        """Stop this process's streams of the students who left ``session_id`` through another process."""
        with self._lock:
            here = {st for a, st in self._sids.values() if a.session_id == session_id} & student_ids
        for student_id in here:
            self.left(session_id, student_id, announce=False)

    def student_of(self, sid: str) -> tuple[int, int] | None:
        """(session id, student id) that stream ``sid`` feeds, or None."""
        entry = self._sids.get(sid)
        return None if entry is None else (entry[0].session_id, entry[1])

    def on_frame(self, sid: str, result: dict) -> None:
        """Frame listener: count an analysed frame of a registered student (others are ignored)."""
        entry = self._sids.get(sid)  # a plain dict read: no lock on the hot path
        if entry is not None:
            entry[0].add(entry[1], result.get("faces") or [])

    # -- ending ---------------------------------------------------------------------------
    def end(self, session_id: int, code: str, reason: str = "ended", store: bool = True,
            announce: bool = True, flush_wait: float = FLUSH_WAIT_SECONDS) -> int:
        """Stop a session's live aggregate: store everything (unless not ``store``), tell its room and students.

        With several processes, the others are told through Redis and end their
        part too (``announce`` False: that is this call, for a session ended
        elsewhere: the room was told there). Returns how many student streams
        were told. Safe to call when this process has no aggregate for the session.
        Waits at most ``flush_wait`` s for the samples to be written (if not, they stay queued).
        """
        with self._lock:
            self._ended.add(session_id)
            agg = self._classes.pop(session_id, None)
            self._views.pop(session_id, None)
            sids = [sid for sid, (a, _) in self._sids.items() if a.session_id == session_id]
            for sid in sids:
                del self._sids[sid]
        if agg is not None and store:
            self.writer.put(session_id, agg.close())
            self.flush(flush_wait)
        msg = {"session": session_id, "reason": reason}
        if announce:
            socketio.emit("session_ended", msg, to=room(code), namespace=NAMESPACE)
        for sid in sids:
            socketio.emit("classroom_ended", msg, to=sid, namespace=STUDENT_NAMESPACE)
        if announce and self.cluster is not None:
            self.cluster.mark_ended(session_id, reason)
        return len(sids)

    def announce_deleted(self, code: str) -> None:
        """Tell the class's dashboards, on every process, that the class was deleted (no session was running)."""
        socketio.emit("session_ended", {"session": None, "reason": "deleted"}, to=room(code), namespace=NAMESPACE)

    def forget(self, session_ids) -> None:
        """Drop live state and queued samples of deleted sessions (nothing is written)."""
        ids = set(session_ids)
        with self._lock:
            for sid in [s for s, (a, _) in self._sids.items() if a.session_id in ids]:
                del self._sids[sid]
            for i in ids:
                self._classes.pop(i, None)
                self._views.pop(i, None)
        self.writer.discard_sessions(ids)

    # -- ticking --------------------------------------------------------------------------
    def _job(self, kind: str, fn, *args, wait: float = 0.0) -> tuple[Background, bool]:
        """The running background job of ``kind``, or ``fn(*args)`` started as one and waited on for ``wait`` s
        at most; (job, started now). One still running is not waited on: it takes the newer work next time."""
        with self._lock:
            job = self._jobs.get(kind)
            if job is not None and job.running():
                return job, False
            job = self._jobs[kind] = Background(self.async_mode, fn, *args, name=f"classroom {kind}")
        job.wait(wait)
        return job, True

    def flush(self, wait: float = FLUSH_WAIT_SECONDS) -> bool:
        """Write every sample queued so far (after a flush already running, if any) on a thread of its own,
        waiting at most ``wait`` s; True when that flush has ended in time (rows that failed stay queued)."""
        deadline = time.monotonic() + wait
        while True:
            job, started = self._job("flush", self.writer.flush)
            if not job.wait(deadline - time.monotonic()):
                return False
            if started:
                return True

    def flushing(self) -> bool:
        """True while a flush is running (its rows are out of the queue until it ends)."""
        job = self._jobs.get("flush")
        return job is not None and job.running()

    def push(self, now: float | None = None) -> int:
        """Send each running class's summary to its teacher room; returns how many were sent.

        Several processes: publish this process's parts, merge, and send only the
        sessions this process leads (see :meth:`_push_merged`).
        """
        with self._lock:
            aggs = list(self._classes.values())
        # The flags are applied by the read itself, however late it ends; a hung database delays them only.
        self._job("aggregate-only flags", self._refresh_flags, aggs, wait=TICK_DB_WAIT_SECONDS)
        if self.cluster is not None and aggs:
            sent = self._push_merged(aggs, time.time() if now is None else now)
        else:
            for agg in aggs:
                socketio.emit("mood", agg.summary(now), to=room(agg.code), namespace=NAMESPACE)
            sent = len(aggs)
        for agg in aggs:
            self._tell_students(agg)
        self.pushes += sent
        return sent

    def _push_merged(self, aggs: list[ClassAggregate], now: float) -> int:
        """One push tick with Redis: publish every part, then, per session, update the merged view (every
        process keeps one, so that a takeover changes nothing) and push it where this process leads.

        Redis unreachable: push this process's own summaries (the outage is logged once by the link).
        """
        views = {agg.session_id: self._view(agg.session_id) for agg in aggs}
        parts = {}
        for agg in aggs:
            part = agg.snapshot(now)
            part["negative_since"] = views[agg.session_id].negative_since
            parts[agg.session_id] = part
        got = self.cluster.exchange(parts, now)
        sent = 0
        for agg in aggs:
            if got is None:
                socketio.emit("mood", agg.summary(now), to=room(agg.code), namespace=NAMESPACE)
                sent += 1
                continue
            mine = got[agg.session_id]
            if mine.ended:
                self._ended_elsewhere(agg, mine.ended)
                continue
            if mine.left:
                self._left_elsewhere(agg.session_id, mine.left)
            view = views[agg.session_id]
            view.others, view.updated = mine.others, time.monotonic()
            summary = self._merged(agg, view, mine.others, now, parts[agg.session_id])
            if summary["class"]["aggregate_only"]:
                agg.aggregate_only = True  # switched on through another process: sticky here too
            if mine.leader:
                socketio.emit("mood", summary, to=room(agg.code), namespace=NAMESPACE)
                sent += 1
        return sent

    def _merged(self, agg: ClassAggregate, view: MergedView, others: dict[str, dict], now: float, part: dict,
                full_timeline: bool = False) -> dict:
        """The merged summary: this process's ``part`` (its state at ``now``) and the others' latest parts."""
        own = {**part, "process": self.cluster.process_id, "negative_since": view.negative_since}
        return view.summary([own, *others.values()], now, full_timeline=full_timeline,
                            history=lambda since, until: self.stored_records(agg.session_id, since, until),
                            fallback=agg.timeline_points())

    def stored_records(self, session_id: int, since: int | None, until: int) -> list[Record]:
        """Stored records of a session in [since, until) (every process stores its students' records);
        raises when the database fails or has not answered within ``HISTORY_WAIT_SECONDS`` (the merged
        view then uses this process's own points, a dashboard's first summary its live timeline only:
        neither waits on a hung database)."""
        job = Background(self.async_mode, self._read_stored, session_id, since, until,
                         name="classroom history read", log_errors=False)
        if not job.wait(HISTORY_WAIT_SECONDS):
            raise TimeoutError(f"no answer from the database within {HISTORY_WAIT_SECONDS:.0f} s")
        if job.error is not None:
            raise job.error
        return job.result

    def _read_stored(self, session_id: int, since: int | None, until: int) -> list[Record]:
        with self.app.app_context():
            try:
                return session_records(session_id, since, until)
            finally:
                db.session.remove()

    def _view(self, session_id: int) -> MergedView:
        with self._lock:
            view = self._views.get(session_id)
            if view is None:
                view = self._views[session_id] = MergedView(self.settings)
            return view

    def _ended_elsewhere(self, agg: ClassAggregate, reason: str) -> None:
        """Another process ended (or deleted) the session: end this process's part of it quietly."""
        log.info("classroom: session %s %s on another process; ending its streams here", agg.session_id,
                 "deleted" if reason == "deleted" else "ended")
        deleted = reason == "deleted"
        self.end(agg.session_id, agg.code, reason=reason, store=not deleted, announce=False,
                 flush_wait=TICK_DB_WAIT_SECONDS)  # called by the push: it must not wait on the database
        if deleted:
            self.forget([agg.session_id])

    def tick(self, now: float | None = None, force: bool = False) -> None:
        """One round of the ticker: roll, and push / flush / purge when each is due (or ``force``)."""
        now = time.time() if now is None else now
        with self._lock:
            aggs = list(self._classes.values())
        for agg in aggs:
            agg.roll(now)
            self.writer.put(agg.session_id, agg.drain())
        if force or now - self._last_push >= self.push_every:
            self._last_push = now
            self.push(now)
        if force or now - self._last_flush >= self.flush_every:
            self._last_flush = now
            self._job("flush", self.writer.flush, wait=TICK_DB_WAIT_SECONDS)
        if self.retention_days and now - self._last_purge >= PURGE_EVERY_SECONDS:
            self._last_purge = now
            self._job("purge", self.purge)

    def purge(self) -> dict:
        """Apply the retention setting now."""
        with self.app.app_context():
            return purge_expired(self.retention_days)

    def _ensure_ticker(self) -> None:
        if not self.ticker_enabled:
            return
        with self._lock:
            if self._ticker_alive:
                return
            self._ticker_alive = True
            self._stop.clear()
        socketio.start_background_task(self._run)

    def _run(self) -> None:
        log.debug("classroom ticker started")
        while True:
            socketio.sleep(0.25)
            try:
                self.tick()
            except Exception:  # the ticker must outlive any one bad round
                log.exception("classroom tick failed")
            with self._lock:
                # Deciding to exit and clearing the flag under one lock: a class that starts
                # meanwhile either keeps this ticker alive or starts a fresh one.
                if self._stop.is_set():
                    self._ticker_alive = False
                    break
                if self._classes or self.writer.pending() or self.flushing():
                    self._idle_since = None
                    continue
                now = time.monotonic()
                self._idle_since = self._idle_since or now
                if now - self._idle_since > IDLE_EXIT_SECONDS:
                    self._ticker_alive = False
                    self._idle_since = None
                    break
        log.debug("classroom ticker stopped")

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the ticker and flush what is queued, waiting up to ``timeout`` s for each; True when that flush
        ended in time and left nothing queued (every sample stored)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        while self._ticker_alive and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.flush(timeout) and not self.writer.pending()
