"""Summaries of a session for the dashboard, the API and the history pages.

A running session is reported from its live aggregate (the last ~10 s, and
the timeline); an ended one, or a running one asked for by its id
(``?session=<id>``: the session report), from storage (the whole session, so
far for a running one). Both have the same shape.
"""
from __future__ import annotations

import logging
import math

from flask import current_app

from app.classroom.aggregate import (EMOTIONS, Record, distribution, engagement, iso, negative_share, student_means,
                                     timeline, zeros)
from app.classroom.models import Classroom, ClassSession
from app.classroom.service import epoch
from app.classroom.storage import session_records

MAX_POINTS = 720

log = logging.getLogger("moodlens.classroom")


def _rounded(dist):
    return {e: round(v, 4) for e, v in (dist or zeros()).items()}


def coarse_step(records: list[Record], step: int) -> int:
    """The timeline step (a multiple of ``step``) that shows ``records`` (oldest first) in MAX_POINTS points at most."""
    if not records:
        return step
    span = records[-1].second - records[0].second + 1
    return max(step, int(math.ceil(span / MAX_POINTS / step)) * step)


def summary(classroom: Classroom, session: ClassSession | None = None, full: bool = True,
            so_far: bool = False) -> dict:
    """The class's mood for ``session`` (default: the running, else the latest session).

    Shape: ``{"session", "class", "students", "distribution", "engagement",
    "timeline", "alerts", ["per_student"]}``; ``per_student`` only when the
    session may show individual students (an empty list for a class without
    any session, unless it is aggregate-only). A running session is reported
    live, unless ``so_far`` (a read that named the session, ``?session=<id>``):
    then its whole session so far, from storage.
    """
    session = session or classroom.latest_session()
    cls = {"code": classroom.code, "name": classroom.name, "aggregate_only": classroom.aggregate_only}
    if session is None:  # never had one, or retention deleted them: a class with nobody in it yet
        out = {"session": None, "class": cls, "students": 0, "faces": 0, "distribution": zeros(), "engagement": None,
               "negative": 0.0, "timeline": [], "alerts": [], "joined": 0}
        if not classroom.aggregate_only:
            out["per_student"] = []
        return out
    if session.running and not so_far:
        service = current_app.extensions["classroom"]
        hidden = not session.shows_students()
        if hidden:  # switched on, maybe through another process: no tiles, no names
            service.set_aggregate_only(session.id)
        out = service.summary(session, full_timeline=full)
        if out is not None:
            out["class"] = cls
            if hidden:
                out.pop("per_student", None)
            if full:
                _fill_older(service, session, out)
            return out
    if session.running:  # the seconds finished so far are stored first (as for the CSV export)
        current_app.extensions["classroom"].flush()
    return stored_summary(classroom, session)


def _fill_older(service, session: ClassSession, out: dict) -> None:
    """Put back the start of a running session's timeline that the live view no longer keeps.

    The live aggregate keeps ``timeline_points`` buckets (2 h at 5 s); a dashboard
    opened later would lose the start of the session. The older part is read
    from storage and coarsened as a stored session's (MAX_POINTS points at most);
    each of its points carries its ``step``. A database that fails or does not
    answer in time leaves the timeline as it was (logged).
    """
    points = out["timeline"]
    if len(points) < service.settings.timeline_points:
        return  # nothing dropped yet
    try:
        older = service.stored_records(session.id, None, points[0]["second"])
    except Exception as exc:  # the live figures go on without the older part
        log.warning("classroom: the start of session %s's timeline is unavailable (%s)", session.id,
                    str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__)
        return
    step = coarse_step(older, service.settings.timeline_step)
    filled = timeline(older, step)
    for p in filled:
        p["step"] = step
    out["timeline"] = filled + points


def stored_summary(classroom: Classroom, session: ClassSession) -> dict:
    """Whole-session figures of a session from storage (so far, for a running one)."""
    records = session_records(session.id)
    started, ended = epoch(session.started_at), epoch(session.ended_at)
    step = coarse_step(records, int(current_app.config["CLASSROOM_TIMELINE_STEP"]))
    dist = distribution(records)
    out = {
        "session": {"id": session.id, "started": iso(started), "ended": iso(ended), "running": session.running},
        "class": {"code": classroom.code, "name": classroom.name, "aggregate_only": classroom.aggregate_only},
        "students": 0,
        "faces": 0,
        "distribution": _rounded(dist),
        "engagement": None if not records else round(engagement(records), 4),
        "negative": round(negative_share(dist), 4),  # as the live summary (aggregate.report)
        "timeline": timeline(records, step),
        "step": step,
        "alerts": [],
        "joined": len(session.students),
    }
    if session.shows_students():
        means = student_means(records)
        frames: dict[int, int] = {}
        for r in records:
            frames[r.student] = frames.get(r.student, 0) + r.frames
        out["per_student"] = [
            {"id": st.id, "name": st.display_name, "frames": frames.get(st.id, 0),
             "label": EMOTIONS[max(range(len(EMOTIONS)), key=means[st.id].__getitem__)] if means.get(st.id) else None,
             "distribution": _rounded(dict(zip(EMOTIONS, means[st.id]))) if means.get(st.id) else None}
            for st in session.students
        ]
    return out
