"""Classroom load: 30 students stream real JPEGs into one class while its teacher's dashboard listens.

    python -m benchmarks.classroom_load [--url http://127.0.0.1:8000] [--students 30]
                                        [--fps-min 2 --fps-max 5] [--seconds 40] [--warmup 10]
                                        [--no-classroom] [--sample-every 10]

Without ``--url`` it starts the production server (gunicorn, threading mode,
one worker, enough threads for every WebSocket) on a free loopback port, with
a fresh SQLite database and a copy of the model. A teacher registers and
creates a class through the real forms (CSRF tokens and all); each student
joins with consent in their own cookie session, then streams over Socket.IO
(``auth={"classroom": "student"}``) as the page does: one frame in flight, at
most its own rate (drawn between ``--fps-min`` and ``--fps-max``), 1.5 s answer
timeout. Frames are 640x480 JPEGs of the real face photos with head motion.

Prints one JSON object: frame throughput and latency percentiles (after the
warm-up), errors; the dashboard's pushes (interval, delivery delay, and how
long a change took to show: all faces in view after the start, zero students
after everyone left); the per-second samples stored by the batched writer; and,
for a server it started, the server's memory and threads while the students
stream (``--sample-every`` seconds apart).

``--no-classroom`` runs the same clients as plain live-page streams: the
baseline for what the classroom adds to the stream.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import cv2
import requests
import socketio

from benchmarks.common import SHARED, machine, percentiles, webcam_frames
from benchmarks.load import LoadClient, MemorySampler

STUDENT_AUTH = {"classroom": "student"}
TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
PASSWORD = "benchmark password"
THREADS = 64  # gunicorn threads: each WebSocket holds one for its lifetime


def csrf(session: requests.Session, url: str) -> str:
    """The CSRF token of the form at ``url``."""
    resp = session.get(url, timeout=10)
    resp.raise_for_status()
    return TOKEN.search(resp.text).group(1)


def cookie_header(session: requests.Session) -> dict:
    """The session's cookies as a ``Cookie`` header for the Socket.IO handshake."""
    return {"Cookie": "; ".join(f"{c.name}={c.value}" for c in session.cookies)}


def create_class(url: str) -> tuple[requests.Session, str]:
    """Register a teacher and create a class; returns the teacher's session and the join code."""
    teacher = requests.Session()
    data = {"name": "Benchmark", "email": f"bench{time.time_ns()}@example.org", "password": PASSWORD,
            "confirm": PASSWORD, "csrf_token": csrf(teacher, url + "/register")}
    teacher.post(url + "/register", data=data, timeout=30).raise_for_status()
    resp = teacher.post(url + "/classes", data={"name": "Load test", "csrf_token": csrf(teacher, url + "/classes")},
                        timeout=30)
    resp.raise_for_status()
    code = resp.url.rstrip("/").rsplit("/", 1)[1]
    return teacher, code


def join(url: str, code: str, name: str) -> requests.Session:
    """A student's cookie session after joining with consent."""
    s = requests.Session()
    token = csrf(s, f"{url}/join/{code}")
    resp = s.post(f"{url}/join/{code}", data={"display_name": name, "consent": "y", "csrf_token": token}, timeout=30)
    resp.raise_for_status()
    if "/live" not in resp.url:
        raise RuntimeError(f"joining as {name} failed: ended at {resp.url}")
    return s


class StudentClient(LoadClient):
    """A load client that connects as the joined student of its cookie session (or as a live page)."""

    classroom = True

    def connect(self) -> None:
        """Connect as the student page does (the class comes from the cookie, not from here)."""
        self.sio.connect(self.url, transports=["websocket"], headers=self.headers,
                         auth=STUDENT_AUTH if self.classroom else None, wait_timeout=10)


class Dashboard:
    """The teacher's dashboard socket: records every pushed summary with its arrival time."""

    def __init__(self, url: str, code: str, headers: dict):
        self.pushes: list[tuple[float, dict]] = []
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("mood", self._on_mood, namespace="/classroom")
        self.sio.connect(url, namespaces=["/classroom"], transports=["websocket"], headers=headers, wait_timeout=10)
        ack = self.sio.call("dashboard_join", {"code": code}, namespace="/classroom", timeout=10)
        if not ack.get("ok"):
            raise RuntimeError(f"dashboard_join refused: {ack}")

    def _on_mood(self, summary):
        self.pushes.append((time.time(), summary))

    def first(self, pred, after: float) -> float | None:
        """Arrival time of the first push after ``after`` that satisfies ``pred``."""
        return next((t for t, s in self.pushes if t >= after and pred(s)), None)


def student_frames(n: int) -> list[list[bytes]]:
    """Frame sets of the three real photos (Biden's full-length portrait cut to head and shoulders)."""
    biden = cv2.imread(str(SHARED / "faces" / "biden.jpg"))
    top = Path(tempfile.mkdtemp(prefix="moodlens-bench-")) / "biden-top.png"
    cv2.imwrite(str(top), biden[: biden.shape[0] // 2])
    sources = [SHARED / "faces" / "obama.jpg", top, SHARED / "faces" / "astronaut.png"]
    return [webcam_frames(src, n, seed=i)[0] for i, src in enumerate(sources)]


def run(url: str, students: int, fps_range: tuple[float, float], seconds: float, warmup: float, seed: int,
        classroom: bool = True, server_pid: int | None = None, sample_every: float = 10) -> dict:
    """The whole scenario against ``url``; returns the figures.

    ``classroom=False``: the same clients stream as plain live-page clients (their frames
    feed no class), the baseline that shows what the classroom costs the stream.
    ``server_pid``: the server's process group, whose memory and threads are sampled every
    ``sample_every`` s while the students stream (growth counted after the warm-up).
    """
    rng = random.Random(seed)
    teacher, code = create_class(url)
    frame_sets = student_frames(60)
    sessions = [join(url, code, f"Student {i + 1:02d}") for i in range(students)]
    fps = [round(rng.uniform(*fps_range), 2) for _ in range(students)]
    group = [StudentClient(url, frame_sets[i % len(frame_sets)], fps[i], "page", headers=cookie_header(s))
             for i, s in enumerate(sessions)]
    board = Dashboard(url, code, cookie_header(teacher))
    for c in group:
        c.classroom = classroom
        c.connect()
    barrier = threading.Barrier(students + 1)
    threads = [threading.Thread(target=c.run, args=(seconds, barrier), daemon=True) for c in group]
    for t in threads:
        t.start()
    barrier.wait()
    t_start = time.time()
    p0 = time.perf_counter()
    sampler = None if server_pid is None else MemorySampler(server_pid, True, sample_every)
    if sampler is not None:
        sampler.start()
    for c in group:
        c.measure_from = p0 + warmup
    for t in threads:
        t.join(seconds + 30)
    elapsed = time.perf_counter() - p0
    if sampler is not None:
        sampler.stop.set()
        sampler.join(5)
    t_stop = time.time()
    unanswered = sum(c.finish() for c in group)  # waits for the last answers, then disconnects each student
    t_gone = time.time()  # the last student has left: the next pushes must show 0 students
    deadline = t_gone + 10
    while classroom and time.time() < deadline and board.first(lambda s: s["students"] == 0, t_gone) is None:
        time.sleep(0.1)

    # End the session (flushes the rest) and count what the batched writer stored.
    end_token = csrf(teacher, f"{url}/classes/{code}")
    teacher.post(f"{url}/classes/{code}/end", data={"csrf_token": end_token}, timeout=30).raise_for_status()
    per_student = teacher.get(f"{url}/classes/{code}/export.csv?by=student", timeout=60).text.strip().splitlines()[1:]
    board.sio.disconnect()

    lat = [x for c in group for x in c.latencies]
    measured = max(elapsed - warmup, 1e-9)
    pushes = [(t, s) for t, s in board.pushes if t_start <= t <= t_stop]
    intervals = [b[0] - a[0] for a, b in zip(pushes, pushes[1:])]
    delivery = [(t - s["ts"]) * 1000 for t, s in pushes if "ts" in s]
    all_faces = board.first(lambda s: s["faces"] == students, t_start)
    all_gone = board.first(lambda s: s["students"] == 0, t_gone)
    stored_frames = sum(int(row.split(",")[2]) for row in per_student)
    answered = sum(c.answered for c in group)
    return {
        "classroom": classroom,
        "students": students, "fps_per_student": {"min": min(fps), "max": max(fps), "sum": round(sum(fps), 1)},
        "seconds": round(elapsed, 1), "warmup_s": warmup,
        "frames": {"sent": sum(c.sent for c in group), "answered": answered, "unanswered_at_end": unanswered},
        "throughput_fps": round(len(lat) / measured, 2),
        "latency_ms": percentiles(lat, (50, 90, 95, 99)) | ({"max": round(max(lat), 1)} if lat else {}),
        "errors": {"frame_error": sum(c.frame_errors for c in group),
                   "disconnects": sum(c.disconnects for c in group), "timeouts": sum(c.timeouts for c in group)},
        "dashboard": {
            "pushes": len(pushes),
            "push_interval_s": percentiles(intervals),
            "delivery_ms": percentiles(delivery),
            "all_faces_shown_after_s": None if all_faces is None else round(all_faces - t_start, 2),
            "zero_students_shown_after_s": None if all_gone is None else round(all_gone - t_gone, 2),
            "last_summary": {k: pushes[-1][1][k] for k in ("students", "faces", "engagement", "frames")}
            if pushes else None,
        },
        "storage": {"samples_stored": len(per_student), "frames_in_samples": stored_frames,
                    "frames_answered": answered},
    } | ({"memory": sampler.report(warmup)} if sampler is not None and sampler.samples else {})


def main(argv=None) -> None:
    """Run the scenario (starting a server unless ``--url``) and print the JSON report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running server (default: start one)")
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--fps-min", type=float, default=2.0)
    p.add_argument("--fps-max", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=40, help="streaming time")
    p.add_argument("--warmup", type=float, default=10, help="first seconds not in the latency figures")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-classroom", action="store_true",
                   help="baseline: the same clients as plain live-page streams (no class aggregation)")
    p.add_argument("--sample-every", type=float, default=10,
                   help="seconds between samples of the memory and threads of a server the tool started")
    args = p.parse_args(argv)

    if args.url:
        server = nullcontext(None)
    else:
        from tests.browser import ServerProcess, snapshot_model

        class ClassroomServer(ServerProcess):
            """The production server with a thread for every student's WebSocket."""

            def command(self, port: int) -> list[str]:
                cmd = super().command(port)
                cmd[cmd.index("--threads") + 1] = str(THREADS)
                return cmd

        work = Path(tempfile.mkdtemp(prefix="moodlens-classroom-load-"))
        # Every student joins from 127.0.0.1: lift the per-address join limit for this run only.
        server = ClassroomServer("threading", workdir=work, model_path=snapshot_model(work),
                                 env={"JOIN_RATE_LIMIT": "1000 per minute", "LOG_LEVEL": "WARNING"})
    with server as proc:
        url = args.url or proc.url
        result = run(url, args.students, (args.fps_min, args.fps_max), args.seconds, args.warmup, args.seed,
                     classroom=not args.no_classroom, server_pid=None if proc is None else proc.proc.pid,
                     sample_every=args.sample_every)
    out = {
        "benchmark": "classroom_load",
        "machine": machine() | {"loadavg_at_end": list(os.getloadavg())},
        "server": args.url or f"gunicorn -k gthread -w 1 --threads {THREADS}, SQLite (started by the benchmark)",
        "frame": "640x480 JPEG q70, one face (three real photos with head motion)",
        **result,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
