"""Stopping the server mid-class: the classroom's queued samples are stored, one log line says so.

Every way MoodLens is served: gunicorn (``make run``, the Dockerfile) on SIGTERM, as ``docker stop`` and systemd
send it, and on SIGINT, as Ctrl-C in its terminal; ``python -m app`` in either mode on SIGTERM. A student streams
until the server has gone, so analyses are in flight and the student's WebSocket is open when the signal comes:
gunicorn waits out its grace period for open connections and then kills the worker, unless the server closes
them itself.
"""
from __future__ import annotations

import re
import signal
import sqlite3
import sys
import threading
import time

import cv2
import pytest

from tests.browser import ServerProcess
from tests.imagegen import encode, fit_frame
from tests.live_clients import Probe, student, teacher

pytestmark = pytest.mark.slow


class AppProcess(ServerProcess):
    """``python -m app`` in either mode (threading: the development server), as an operator runs it."""

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "app"]


@pytest.fixture(scope="module")
def frame(faces_dir) -> bytes:
    return encode(fit_frame(cv2.imread(str(faces_dir / "obama.jpg"))), ".jpg", quality=80)


def stream_until_closed(probe: Probe, frame: bytes, seq: int) -> None:
    """Emit a frame every 30 ms, answered or not, until the connection has gone."""
    while probe.sio.connected:
        seq += 1
        try:
            probe.emit("frame", {"seq": seq, "image": frame})
        except Exception:  # the server went away between the check and the emit
            return
        time.sleep(0.03)


def stored_samples(server: ServerProcess) -> int:
    with sqlite3.connect(server.workdir / "moodlens.db") as db:
        return db.execute("SELECT count(*) FROM mood_sample").fetchone()[0]


@pytest.mark.parametrize(("server_class", "mode", "sig"), [
    pytest.param(ServerProcess, "threading", signal.SIGTERM, id="gunicorn-SIGTERM"),
    pytest.param(ServerProcess, "threading", signal.SIGINT, id="gunicorn-Ctrl-C"),
    pytest.param(AppProcess, "threading", signal.SIGTERM, id="python-m-app-threading-SIGTERM"),
    pytest.param(AppProcess, "eventlet", signal.SIGTERM, id="python-m-app-eventlet-SIGTERM"),
])
def test_stopping_the_server_stores_the_queued_samples(server_class, mode, sig, model_copy, tmp_path, frame):
    # Samples are written every hour only (the first tick's, at the class's start, aside): whatever a student
    # streamed after it is still queued when the signal comes.
    server = server_class(mode, workdir=tmp_path, model_path=model_copy, env={"CLASSROOM_FLUSH_SECONDS": "3600"})
    server.start()
    probe = None
    try:
        _web, class_code = teacher(server.url)
        alice = student(server.url, class_code, "Alice")
        probe = Probe(server.url, headers=alice.cookie_header(), auth={"classroom": "student"}).connect()
        deadline = time.monotonic() + 3.5  # a few whole seconds of samples
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            probe.emit("frame", {"seq": seq, "image": frame})
            assert probe.wait_for("faces", lambda msg, seq=seq: msg["seq"] == seq, timeout=30), f"frame {seq}"
        time.sleep(0.5)  # the ticker moves each finished second to the write queue within 0.25 s
        before = stored_samples(server)
        # Frames keep coming until the server has gone, as from a page: analyses are in flight at the signal.
        streaming = threading.Thread(target=stream_until_closed, args=(probe, frame, seq), daemon=True)
        streaming.start()
        time.sleep(0.5)
    finally:
        # To the whole process group, as docker stop, systemd and a terminal's Ctrl-C send it. Gunicorn's grace
        # period is 5 s here (``--graceful-timeout 5``), docker's 10 s; after 8 s the test kills it: code -9.
        code = server.stop(timeout=8, sig=sig)
        if probe is not None:
            probe.close()
    log = server.log_text()
    assert code == 0, log[-3000:]
    stopped = re.search(r"MoodLens stopped \((SIG[A-Z]+)\): classroom samples stored", log)
    assert stopped, log[-3000:]
    assert stopped.group(1) == sig.name or (sig == signal.SIGINT and stopped.group(1) == "SIGQUIT"), log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert "SIGKILL" not in log, log[-3000:]  # gunicorn: "Worker (pid:...) was sent SIGKILL!"
    assert stored_samples(server) > before, f"the samples queued when {sig.name} came were not stored"
