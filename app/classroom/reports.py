"""Summaries of a session for the dashboard, the API and the history pages.

A running session is reported from its live aggregate (the last ~10 s); an
ended one from storage (the whole session). Both have the same shape.
"""
from __future__ import annotations

import math

from flask import current_app

from app.classroom.aggregate import (EMOTIONS, distribution, engagement, iso, negative_share, student_means, timeline,
                                     zeros)
from app.classroom.models import Classroom, ClassSession
from app.classroom.service import epoch
from app.classroom.storage import session_records

MAX_POINTS = 720


def _rounded(dist):
    return {e: round(v, 4) for e, v in (dist or zeros()).items()}


def summary(classroom: Classroom, session: ClassSession | None = None, full: bool = True) -> dict:
    """The class's mood for ``session`` (default: the running, else the latest session).

    Shape: ``{"session", "class", "students", "distribution", "engagement",
    "timeline", "alerts", ["per_student"]}``; ``per_student`` only when the
    session may show individual students.
    """
    session = session or classroom.latest_session()
    cls = {"code": classroom.code, "name": classroom.name, "aggregate_only": classroom.aggregate_only}
    if session is None:
        return {"session": None, "class": cls, "students": 0, "faces": 0, "distribution": zeros(), "engagement": None,
                "negative": 0.0, "timeline": [], "alerts": []}
    if session.running:
        service = current_app.extensions["classroom"]
        hidden = not session.shows_students()
        if hidden:  # switched on, maybe through another process: no tiles, no names
            service.set_aggregate_only(session.id)
        out = service.summary(session, full_timeline=full)
        if out is not None:
            out["class"] = cls
            if hidden:
                out.pop("per_student", None)
            return out
    return stored_summary(classroom, session)


def stored_summary(classroom: Classroom, session: ClassSession) -> dict:
    """Whole-session figures of an ended session, from storage."""
    records = session_records(session.id)
    started, ended = epoch(session.started_at), epoch(session.ended_at)
    step = int(current_app.config["CLASSROOM_TIMELINE_STEP"])
    if records:
        span = records[-1].second - records[0].second + 1
        step = max(step, int(math.ceil(span / MAX_POINTS / step)) * step)
    dist = distribution(records)
    out = {
        "session": {"id": session.id, "started": iso(started), "ended": iso(ended), "running": False},
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
