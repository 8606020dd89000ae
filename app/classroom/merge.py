"""One class view from the partial live aggregates of several server processes (no Flask, no Redis here).

With several processes behind a load balancer, the students of one class
stream to different processes, and each process's :class:`ClassAggregate`
holds only its own students. Each process therefore publishes a *part* of the
session on every push tick (:meth:`ClassAggregate.snapshot`: every student
state and the per-second records it still keeps) and reads the other
processes' latest parts (app/classroom/cluster.py moves them through Redis).
:class:`MergedView` turns the union of the parts into exactly the summary one
process holding every student would compute: the parts are merged back into
student states and per-second records, and the same :func:`report` runs on
them.

Merge rules, chosen so that the union equals one process's state:

- records: summed per (student, second) (a student with tabs on two processes
  counts as with two tabs on one);
- a student is connected when a part has them connected; ``connected_at`` is
  the earliest among those, ``last_frame``/``last_face`` the latest anywhere;
  a student connected nowhere takes ``left_at``/``dropped`` from the part that
  saw them leave last;
- aggregate-only when any part is (the switch is sticky, and the process
  where it was switched on may not be the one reporting);
- frames: the sum over the parts.

The closed timeline buckets are merged from the parts too, once every part
has been published after the bucket's end (so no process's last second is
missing). What is older than the parts' records (the view is new on this
process, or Redis was away for a while) comes from the records that every
process stores in the database (``history``). The negative-mood clock starts
from the earliest one published by the other processes' views, so that
another process taking over the pushes keeps it running.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from app.classroom.aggregate import Record, Settings, StudentState, point, report, timeline

log = logging.getLogger("moodlens.classroom.merge")

# history(since, until) -> the stored records of the session with since <= second < until (since None: all).
History = Callable[[int | None, int], list[Record]]


def merge_students(parts: Iterable[Mapping]) -> dict[int, StudentState]:
    """Student states of every part, merged (``sids`` holds the ids of the parts where they are connected)."""
    out: dict[int, StudentState] = {}
    for part in parts:
        process = str(part.get("process", id(part)))
        for sid_, name, connected, connected_at, last_frame, last_face, left_at, dropped in part["students"]:
            st = out.get(sid_)
            if st is None:
                st = out[sid_] = StudentState(sid_, name, connected_at=connected_at, left_at=left_at,
                                              dropped=bool(dropped))
                st.last_frame, st.last_face = last_frame, last_face
                if connected:
                    st.sids.add(process)
                continue
            st.name = st.name or name
            st.last_frame = _latest(st.last_frame, last_frame)
            st.last_face = _latest(st.last_face, last_face)
            if connected:
                st.connected_at = connected_at if not st.sids else min(st.connected_at, connected_at)
                st.sids.add(process)
            elif not st.sids and (st.left_at is None or (left_at is not None and left_at > st.left_at)):
                st.left_at, st.dropped = left_at, bool(dropped)
    for st in out.values():
        if st.sids:
            st.left_at, st.dropped = None, False
    return out


def _latest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def merge_seconds(parts: Iterable[Mapping]) -> dict[int, dict[int, Record]]:
    """second -> student -> record over every part (the same student and second in two parts: summed)."""
    out: dict[int, dict[int, Record]] = {}
    for part in parts:
        for student, second, sums, face_frames, frames in part["records"]:
            per = out.setdefault(second, {})
            rec = per.get(student)
            if rec is None:
                per[student] = Record(student, second, [float(x) for x in sums], int(face_frames), int(frames))
            else:
                rec.sums = [a + float(b) for a, b in zip(rec.sums, sums)]
                rec.face_frames += int(face_frames)
                rec.frames += int(frames)
    return out


class MergedView:
    """This process's merged view of one running session; thread-safe.

    Call :meth:`summary` with the parts of every live process (this one's fresh
    snapshot first). The view keeps what must survive between calls: the
    closed timeline buckets and the negative-mood clock. Every process keeps
    one per running session and updates it on every push tick, whether or not
    it is the one that pushes, so that taking over the pushes changes nothing.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._timeline: deque[dict] = deque(maxlen=settings.timeline_points)
        self.closed_upto: int | None = None   # buckets starting before this are closed (None: none yet)
        self.negative_since: float | None = None
        self.others: dict[str, dict] = {}     # process id -> that process's latest part
        self.updated: float | None = None     # time.monotonic() of the last exchange that set ``others``

    def summary(self, parts: list[Mapping], now: float, *, full_timeline: bool = False, tail: int = 3,
                history: History | None = None, fallback: Iterable[dict] = ()) -> dict:
        """The class summary over ``parts`` (one per live process, this process's own first).

        ``history`` gives the stored records of the buckets the parts no longer
        cover; when it is missing or fails, ``fallback`` (this process's own
        closed timeline points) fills them.
        """
        s = self.settings
        step = s.timeline_step
        students = merge_students(parts)
        seconds = merge_seconds(parts)
        with self._lock:
            self._close(parts, seconds, now, history, fallback)
            provisional: dict[int, list[Record]] = {}  # buckets not closed yet (the open one, and any still
            for second, per in seconds.items():       # waiting for a part published after their end)
                if second >= self.closed_upto:
                    provisional.setdefault(second - second % step, []).extend(per.values())
            points = list(self._timeline) + [point(start, rs) for start, rs in sorted(provisional.items())]
            if not full_timeline:
                points = points[-tail:]
            clocks = [t for t in [self.negative_since, *(p.get("negative_since") for p in parts)] if t is not None]
            own = parts[0]
            out, self.negative_since = report(
                session_id=own["session"], started=min(p["started"] for p in parts), code=own["code"],
                name=own["name"], aggregate_only=any(p["aggregate_only"] for p in parts), settings=s, now=now,
                students=students, seconds=seconds, points=points, frames=sum(int(p["frames"]) for p in parts),
                negative_since=min(clocks) if clocks else None)
            return out

    def _close(self, parts: list[Mapping], seconds: Mapping[int, Mapping[int, Record]], now: float,
               history: History | None, fallback: Iterable[dict]) -> None:
        step = self.settings.timeline_step
        # Every part holds every record from its covered_from on: buckets from here are merged from the parts.
        cover = max(int(p["covered_from"]) for p in parts)
        first = -(-cover // step) * step
        if self.closed_upto is None or self.closed_upto < first:
            since = self.closed_upto
            self._timeline.extend(p for p in self._stored(since, first, history, fallback)
                                  if (since is None or p["second"] >= since) and p["second"] < first)
            self.closed_upto = first
        # A part's seconds before its ``ts`` are final: close the buckets that every part has finished.
        complete = min(int(now), *(int(p["ts"]) for p in parts))
        done_before = complete - complete % step
        closing: dict[int, list[Record]] = {}
        for second, per in seconds.items():
            if self.closed_upto <= second < done_before:
                closing.setdefault(second - second % step, []).extend(per.values())
        for start in sorted(closing):
            self._timeline.append(point(start, closing[start]))
        self.closed_upto = max(self.closed_upto, done_before)

    def _stored(self, since: int | None, until: int, history: History | None,
                fallback: Iterable[dict]) -> list[dict]:
        """Timeline points of [since, until) from storage; this process's own points if storage fails."""
        if history is not None:
            try:
                return timeline(history(since, until), self.settings.timeline_step)
            except Exception as exc:  # the database is away: the live view goes on with what this process has
                log.warning("classroom: stored records unavailable for the merged timeline (%s); "
                            "using this process's own points", str(exc).splitlines()[0][:200] if str(exc) else exc)
        return list(fallback)
