"""The class mood, computed from the students' ``faces`` results (no Flask here).

The unit of data is a per-student, per-second :class:`Record`: the summed
probabilities of the frames in which the student's face was found, how many
such frames there were, and how many frames were analysed in all. The live
:class:`ClassAggregate` builds records as results arrive; storage keeps them as
means (``MoodSample``) and turns them back into records, so the live dashboard,
the history pages and the CSV export all go through the same functions:

- :func:`distribution`: each student's mean probabilities over the frames with
  a face, then the plain mean over students, so a student on a fast laptop
  weighs no more than one on a slow one.
- :func:`engagement`: mean over students of ``presence * (1 - negative / 2)``,
  where ``presence`` is the share of the student's frames in which a face was
  found and ``negative`` the share of angry + disgust + fear + sad in the
  student's mean distribution (0 when no face). A connected student who sent
  no frame in the window counts with presence 0.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NEGATIVE: tuple[str, ...] = ("angry", "disgust", "fear", "sad")
_NEG_IDX = tuple(EMOTIONS.index(e) for e in NEGATIVE)


def iso(t: float | None) -> str | None:
    """Epoch seconds as an ISO-8601 UTC string (``...Z``), None for None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def zeros() -> dict[str, float]:
    """A distribution with every emotion at 0 (the answer when nobody's face is in view)."""
    return {e: 0.0 for e in EMOTIONS}


@dataclass
class Record:
    """One student's frames within one second: summed probabilities, face frames, all frames."""

    student: int
    second: int
    sums: list[float] = field(default_factory=lambda: [0.0] * len(EMOTIONS))
    face_frames: int = 0
    frames: int = 0

    def add(self, scores: Mapping[str, float] | None) -> None:
        """Count one analysed frame; ``scores`` is None when no face was found in it."""
        self.frames += 1
        if scores is not None:
            self.face_frames += 1
            for i, e in enumerate(EMOTIONS):
                self.sums[i] += float(scores.get(e, 0.0))

    def means(self) -> list[float]:
        """Mean probabilities over the face frames (all zero when there were none)."""
        if not self.face_frames:
            return [0.0] * len(EMOTIONS)
        return [s / self.face_frames for s in self.sums]

    @classmethod
    def from_means(cls, student: int, second: int, means: Iterable[float], face_frames: int,
                   frames: int) -> "Record":
        """Rebuild a record from stored means (the inverse of :meth:`means`)."""
        return cls(student, second, [float(m) * face_frames for m in means], int(face_frames), int(frames))


def primary_face(faces: list[dict]) -> dict | None:
    """The face a student's frame stands for: the largest box (None for no face)."""
    best, best_area = None, -1
    for face in faces or ():
        box = face.get("box") or (0, 0, 0, 0)
        area = int(box[2]) * int(box[3])
        if area > best_area:
            best, best_area = face, area
    return best


def _per_student(records: Iterable[Record]) -> dict[int, list[float]]:
    """student -> [sum_0..sum_6, face_frames, frames] over the records."""
    acc: dict[int, list[float]] = {}
    n = len(EMOTIONS)
    for r in records:
        a = acc.get(r.student)
        if a is None:
            a = acc[r.student] = [0.0] * (n + 2)
        for i in range(n):
            a[i] += r.sums[i]
        a[n] += r.face_frames
        a[n + 1] += r.frames
    return acc


def student_means(records: Iterable[Record]) -> dict[int, list[float] | None]:
    """Each student's mean probabilities over their face frames (None: no face seen)."""
    n = len(EMOTIONS)
    return {s: ([a[i] / a[n] for i in range(n)] if a[n] else None) for s, a in _per_student(records).items()}


def distribution(records: Iterable[Record]) -> dict[str, float] | None:
    """The class distribution: mean over students of their mean probabilities; None: no face."""
    means = [m for m in student_means(records).values() if m is not None]
    if not means:
        return None
    return {e: sum(m[i] for m in means) / len(means) for i, e in enumerate(EMOTIONS)}


def negative_share(dist: Mapping[str, float] | None) -> float:
    """Share of angry + disgust + fear + sad in a distribution (0 for None)."""
    if not dist:
        return 0.0
    return sum(dist.get(e, 0.0) for e in NEGATIVE)


def engagement(records: Iterable[Record], students: Iterable[int] | None = None) -> float | None:
    """Mean over ``students`` (default: those in ``records``) of presence * (1 - negative / 2).

    None when there is no student to average over.
    """
    n = len(EMOTIONS)
    acc = _per_student(records)
    who = set(acc) if students is None else set(students)
    if not who:
        return None
    total = 0.0
    for s in who:
        a = acc.get(s)
        if not a or not a[n + 1]:
            continue  # no frame at all: presence 0
        presence = a[n] / a[n + 1]
        negative = sum(a[i] for i in _NEG_IDX) / a[n] if a[n] else 0.0
        total += presence * (1.0 - 0.5 * negative)
    return total / len(who)


def timeline(records: Iterable[Record], step: int) -> list[dict]:
    """Records grouped into ``step``-second buckets, oldest first; buckets without data are left out.

    Each point: ``{"t": iso start, "second": epoch start, "distribution", "engagement", "students"}``
    (``distribution`` is all zeros when frames came but no face was found).
    """
    step = max(1, int(step))
    buckets: dict[int, list[Record]] = {}
    for r in records:
        buckets.setdefault(r.second - r.second % step, []).append(r)
    return [point(start, rs) for start, rs in sorted(buckets.items())]


def point(start: int, records: list[Record]) -> dict:
    """One timeline point for the records of the bucket that starts at ``start``."""
    dist = distribution(records)
    return {"t": iso(start), "second": start, "distribution": dist or zeros(),
            "engagement": _round(engagement(records)), "students": len({r.student for r in records})}


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def _rounded(dist: Mapping[str, float] | None) -> dict[str, float]:
    return {e: round(v, 4) for e, v in (dist or zeros()).items()}


@dataclass
class Settings:
    """Tuning of the live aggregate (see ``CLASSROOM_*`` in app/config.py)."""

    window: float = 10.0           # the "current" distribution covers this many seconds
    tile_window: float = 3.0       # a student's tile shows their mean over this many seconds
    timeline_step: int = 5         # seconds per point of the mood-over-time series
    timeline_points: int = 1440    # points kept in memory (2 h at 5 s)
    stale_after: float = 8.0       # a connected student silent this long: "camera stopped"
    negative_share: float = 0.5    # negative emotions above this share ...
    negative_for: float = 30.0     # ... for this many seconds: alert
    dropped_alert_for: float = 60.0  # how long a lost connection stays an alert


@dataclass
class StudentState:
    """What the aggregate knows about one student of the running session."""

    id: int
    name: str
    connected_at: float
    sids: set[str] = field(default_factory=set)
    last_frame: float | None = None
    last_face: float | None = None
    left_at: float | None = None
    dropped: bool = False


def keep_seconds(settings: Settings) -> int:
    """How many seconds before the current one a live aggregate keeps (window, tiles, open bucket)."""
    step = settings.timeline_step
    return int(math.ceil(max(settings.window, settings.tile_window, step))) + step


def silent_for(st: StudentState, now: float) -> float:
    """Seconds since the student's last frame (or since they connected, if later)."""
    return now - max(st.last_frame or 0.0, st.connected_at)


def tiles(students: Iterable[StudentState], tile_records: Iterable[Record], now: float,
          settings: Settings) -> list[dict]:
    """Per-student tiles: status, current label (mean over ``tile_records``), last face seen.

    The students connected now come first, then those who left or lost their connection, each by name.
    """
    means = student_means(tile_records)
    out = []
    for st in sorted(students, key=lambda x: (not x.sids, x.name.lower(), x.id)):
        m = means.get(st.id)
        label = EMOTIONS[max(range(len(EMOTIONS)), key=m.__getitem__)] if m else None
        if not st.sids:
            status = "lost" if st.dropped else "left"
        elif silent_for(st, now) > settings.stale_after:
            status = "stale"
        elif m is None:
            status = "no-face"
        else:
            status = "active"
        out.append({
            "id": st.id, "name": st.name, "status": status, "label": label,
            "score": round(max(m), 4) if m else None,
            "last_seen": iso(st.last_face), "seen_ago": None if st.last_face is None else round(now - st.last_face, 1),
        })
    return out


def negative_clock(since: float | None, now: float, dist: Mapping[str, float] | None,
                   settings: Settings) -> float | None:
    """When the current run of a mostly negative class mood began (None: the mood is not negative now)."""
    if dist is not None and negative_share(dist) >= settings.negative_share:
        return now if since is None else since
    return None


def alerts(students: Iterable[StudentState], now: float, negative_since: float | None, settings: Settings,
           aggregate_only: bool) -> list[dict]:
    """Negative mood for ``negative_for`` seconds, cameras gone silent, connections lost (unnamed when
    ``aggregate_only``)."""
    s = settings
    out: list[dict] = []
    if negative_since is not None and now - negative_since >= s.negative_for:
        # The duration in whole minutes once past the first: the dashboard's alert list is a live region,
        # read out whenever its text changes, so the text changes once a minute at most.
        lasted = now - negative_since
        duration = f"{s.negative_for:.0f} s or more" if lasted < 60 else f"{int(lasted // 60)} min"
        out.append({"id": "negative", "kind": "negative", "level": "warn", "since": iso(negative_since),
                    "message": f"Negative emotions (angry, disgust, fear, sad) have been above "
                               f"{s.negative_share:.0%} of the class mood for {duration}."})
    students = list(students)
    stale = [st for st in students if st.sids and silent_for(st, now) > s.stale_after]
    lost = [st for st in students
            if not st.sids and st.dropped and st.left_at is not None and now - st.left_at <= s.dropped_alert_for]
    for kind, group, what in (("stale", stale, "camera stopped sending"), ("lost", lost, "connection was lost")):
        if not group:
            continue
        if aggregate_only:  # never name a student in aggregate-only mode
            n = len(group)
            who = "1 student's" if n == 1 else f"{n} students'"
            out.append({"id": kind, "kind": kind, "level": "warn", "count": n, "message": f"{who} {what}."})
        else:
            for st in group:
                out.append({"id": f"{kind}:{st.id}", "kind": kind, "level": "warn", "student": st.id,
                            "message": f"{st.name}'s {what}."})
    return out


def window(seconds: Mapping[int, Mapping[int, Record]], now: float, length: float) -> list[Record]:
    """The records of the seconds that overlap the last ``length`` seconds before ``now``."""
    since = now - length
    return [r for second, per in seconds.items() if second + 1 > since for r in per.values()]


def report(*, session_id: int, started: float, code: str, name: str, aggregate_only: bool, settings: Settings,
           now: float, students: Mapping[int, StudentState], seconds: Mapping[int, Mapping[int, Record]],
           points: list[dict], frames: int, negative_since: float | None) -> tuple[dict, float | None]:
    """The dashboard's summary from a class's state; returns it with the updated negative-mood clock.

    ``students``: every student known in the session; ``seconds``: second -> student -> record (at least
    the last ``window`` seconds); ``points``: the timeline points to report. Shared by one process's
    :class:`ClassAggregate` and the merged view of several processes (app/classroom/merge.py), so both
    compute exactly the same figures from the same state.
    """
    s = settings
    connected = [st.id for st in students.values() if st.sids]
    # "Now" is the students connected now: one who left a few seconds ago no longer counts in the faces,
    # the mood or the negative share (the timeline and the history keep their seconds).
    present = set(connected)
    recent = [r for r in window(seconds, now, s.window) if r.student in present]
    dist = distribution(recent)
    eng = engagement(recent, connected) if connected else None
    negative_since = negative_clock(negative_since, now, dist, s)
    out = {
        "session": {"id": session_id, "started": iso(started), "running": True},
        "class": {"code": code, "name": name, "aggregate_only": aggregate_only},
        "t": iso(now),
        "ts": round(now, 3),
        "students": len(connected),
        "faces": sum(1 for m in student_means(recent).values() if m is not None),
        "distribution": _rounded(dist),
        "engagement": _round(eng),
        "negative": round(negative_share(dist), 4),
        "timeline": points,
        "alerts": alerts(students.values(), now, negative_since, s, aggregate_only),
        "frames": frames,
    }
    if not aggregate_only:
        out["per_student"] = tiles(students.values(), window(seconds, now, s.tile_window), now, s)
    return out, negative_since


class ClassAggregate:
    """The rolling mood of one running class session; thread-safe.

    ``add`` is the hot path (called for every analysed student frame): it only
    updates an in-memory per-second record under a lock. ``roll`` closes
    finished seconds (queueing them for storage) and timeline buckets;
    ``summary`` reports the state the dashboard shows.
    """

    def __init__(self, session_id: int, code: str, name: str, aggregate_only: bool,
                 settings: Settings | None = None, started: float | None = None,
                 history: Iterable[dict] = ()):
        self.session_id = session_id
        self.code = code
        self.name = name
        self.aggregate_only = aggregate_only
        self.settings = settings or Settings()
        self.started = time.time() if started is None else started
        self._lock = threading.Lock()
        self._students: dict[int, StudentState] = {}
        self._seconds: dict[int, dict[int, Record]] = {}   # second -> student -> record
        self._pending: list[Record] = []                   # closed seconds not yet stored
        self._closed_upto = -1                             # seconds <= this are closed
        self._timeline: deque[dict] = deque(history, maxlen=self.settings.timeline_points)
        self._negative_since: float | None = None
        self.frames = 0

    # -- students -------------------------------------------------------------------------
    def join(self, student_id: int, name: str, sid: str, now: float | None = None) -> None:
        """A student's stream connected (a student may have several tabs: several sids)."""
        now = time.time() if now is None else now
        with self._lock:
            st = self._students.get(student_id)
            if st is None:
                st = self._students[student_id] = StudentState(student_id, name, connected_at=now)
            elif not st.sids:
                st.connected_at = now  # the staleness clock restarts on reconnection
            st.sids.add(sid)
            st.left_at, st.dropped = None, False

    def leave(self, student_id: int, sid: str, now: float | None = None, dropped: bool = False) -> None:
        """A stream ended; ``dropped``: the connection was lost rather than stopped by the student."""
        now = time.time() if now is None else now
        with self._lock:
            st = self._students.get(student_id)
            if st is None:
                return
            st.sids.discard(sid)
            if not st.sids:
                st.left_at, st.dropped = now, dropped

    def connected(self) -> list[int]:
        """Ids of the students with at least one open stream."""
        with self._lock:
            return [s.id for s in self._students.values() if s.sids]

    # -- frames ---------------------------------------------------------------------------
    def add(self, student_id: int, faces: list[dict], now: float | None = None) -> None:
        """Count one analysed frame of ``student_id`` (its largest face, if any)."""
        now = time.time() if now is None else now
        face = primary_face(faces)
        second = int(now)
        with self._lock:
            st = self._students.get(student_id)
            if st is None or not st.sids:
                return  # not (or no longer) streaming into this class
            if second <= self._closed_upto:
                second = self._closed_upto + 1  # a clock step back must not reopen a stored second
            per = self._seconds.get(second)
            if per is None:
                per = self._seconds[second] = {}
            rec = per.get(student_id)
            if rec is None:
                rec = per[student_id] = Record(student_id, second)
            rec.add(face["scores"] if face else None)
            st.last_frame = now
            if face:
                st.last_face = now
            self.frames += 1

    # -- rolling --------------------------------------------------------------------------
    def roll(self, now: float | None = None) -> None:
        """Close finished seconds (queued for storage) and timeline buckets; forget old seconds."""
        now = time.time() if now is None else now
        with self._lock:
            self._roll(now)

    def _roll(self, now: float) -> None:
        current = int(now)
        for second in sorted(s for s in self._seconds if self._closed_upto < s < current):
            self._pending.extend(self._seconds[second].values())
        self._closed_upto = max(self._closed_upto, current - 1)
        step = self.settings.timeline_step
        done_before = current - current % step  # buckets that start before this are complete
        last = self._timeline[-1]["second"] if self._timeline else -math.inf
        closing: dict[int, list[Record]] = {}
        for second, per in self._seconds.items():
            start = second - second % step
            if last < start < done_before:
                closing.setdefault(start, []).extend(per.values())
        for start in sorted(closing):
            self._timeline.append(point(start, closing[start]))
        keep_from = current - keep_seconds(self.settings)
        for second in [s for s in self._seconds if s < keep_from]:
            del self._seconds[second]

    def drain(self) -> list[Record]:
        """Closed records not yet handed to storage (each record is handed out once)."""
        with self._lock:
            out, self._pending = self._pending, []
            return out

    def close(self, now: float | None = None) -> list[Record]:
        """End of session: every record, the current second included, for the last flush."""
        now = time.time() if now is None else now
        with self._lock:
            self._roll(now)
            for second in sorted(s for s in self._seconds if s > self._closed_upto):
                self._pending.extend(self._seconds[second].values())
                self._closed_upto = second
            out, self._pending = self._pending, []
            return out

    def snapshot(self, now: float | None = None) -> dict:
        """This process's part of the session, JSON-ready, for the other processes to merge (merge.py).

        Every student state and every record still kept (seconds from ``covered_from`` on, the current
        one included). In aggregate-only mode the names are left out: they are never shown.
        """
        now = time.time() if now is None else now
        with self._lock:
            self._roll(now)
            hide = self.aggregate_only
            return {
                "v": 1, "ts": now, "session": self.session_id, "code": self.code, "name": self.name,
                "aggregate_only": hide, "started": self.started, "frames": self.frames,
                "covered_from": int(now) - keep_seconds(self.settings),
                "students": [[st.id, "" if hide else st.name, bool(st.sids), st.connected_at, st.last_frame,
                              st.last_face, st.left_at, st.dropped] for st in self._students.values()],
                "records": [[r.student, r.second, list(r.sums), r.face_frames, r.frames]
                            for per in self._seconds.values() for r in per.values()],
            }

    def timeline_points(self) -> list[dict]:
        """The closed timeline points (stored history plus the buckets closed here)."""
        with self._lock:
            return list(self._timeline)

    # -- reporting ------------------------------------------------------------------------
    def summary(self, now: float | None = None, full_timeline: bool = False, tail: int = 3) -> dict:
        """The dashboard's view: counts, distribution, engagement, timeline, alerts, tiles.

        ``timeline`` holds every closed bucket plus the open one when ``full_timeline``,
        else the last ``tail`` of them (the dashboard merges points by ``second``).
        ``per_student`` is left out entirely in aggregate-only mode.
        """
        now = time.time() if now is None else now
        with self._lock:
            self._roll(now)
            step = self.settings.timeline_step
            open_start = int(now) - int(now) % step
            open_records = [r for sec, per in self._seconds.items() if sec >= open_start for r in per.values()]
            points = list(self._timeline) + ([point(open_start, open_records)] if open_records else [])
            if not full_timeline:
                points = points[-tail:]
            out, self._negative_since = report(
                session_id=self.session_id, started=self.started, code=self.code, name=self.name,
                aggregate_only=self.aggregate_only, settings=self.settings, now=now, students=self._students,
                seconds=self._seconds, points=points, frames=self.frames, negative_since=self._negative_since)
            return out
