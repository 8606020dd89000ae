"""Stopping the server mid-class: the classroom's queued samples are stored, one log line says so.

Every way MoodLens is served: gunicorn (``make run``, the Dockerfile) on SIGTERM, as ``docker stop`` and systemd
send it, and on SIGINT, as Ctrl-C in its terminal; ``python -m app`` in either mode on SIGTERM. A student streams
until the server has gone, so analyses are in flight and the student's WebSocket is open when the signal comes:
gunicorn waits out its grace period for open connections and then kills the worker, unless the server closes
them itself.
"""
from __future__ import annotations

import os
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


@pytest.mark.parametrize(("gunicorn_code", "exit_code"), [
    pytest.param(0, 0, id="stopped"),
    pytest.param(-1, 255, id="crashed"),
    pytest.param(3, 3, id="could-not-boot"),  # gunicorn's WORKER_BOOT_ERROR: the master stops
])
def test_the_worker_exit_hook_keeps_gunicorns_code_for_a_failed_worker(gunicorn_code, exit_code, tmp_path):
    """The hook stores the samples and ends the worker itself (``os._exit``), but a worker that crashed or could
    not boot still exits with gunicorn's code, so the master reacts to it as it would without the hook."""
    import subprocess

    from tests.conftest import ROOT

    script = f"""
import runpy, sys, types
from tests.conftest import make_app
hooks = runpy.run_path("gunicorn.conf.py")
worker = types.SimpleNamespace(wsgi=make_app(DATABASE_URL="sqlite:///{tmp_path / 'db.sqlite3'}"))
try:
    sys.exit({gunicorn_code})  # as gunicorn's spawn_worker ends a worker, calling the hook in its finally
finally:
    hooks["worker_exit"](None, worker)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == exit_code, proc.stderr[-2000:]
    assert "MoodLens stopped (worker exiting): classroom samples stored" in proc.stderr + proc.stdout


@pytest.mark.parametrize(("signals", "passed_on"), [
    pytest.param(["SIGINT", "SIGQUIT", "SIGTERM"], ["SIGINT"], id="Ctrl-C-then-the-masters-SIGQUIT"),
    pytest.param(["SIGTERM", "SIGQUIT", "SIGINT"], ["SIGTERM", "SIGQUIT"], id="graceful-then-quick"),
])
def test_once_the_worker_leaves_at_once_further_stop_signals_cannot_cut_its_exit_short(signals, passed_on,
                                                                                         tmp_path):
    """gunicorn's handlers for SIGINT and SIGQUIT raise ``SystemExit`` wherever the worker is: a second one
    arriving in the ``worker_exit`` hook would end it before the samples are stored. The hook's signal wrappers
    pass a stop signal on to gunicorn only until the worker is leaving at once."""
    import json
    import subprocess

    from tests.conftest import ROOT

    script = f"""
import json, runpy, signal, types
from tests.conftest import make_app
passed = []
for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):  # stand-ins for gunicorn's worker handlers
    signal.signal(signum, lambda sig, frame: passed.append(signal.Signals(sig).name))
hooks = runpy.run_path("gunicorn.conf.py")
make_app(DATABASE_URL="sqlite:///{tmp_path / 'db.sqlite3'}")
hooks["post_worker_init"](types.SimpleNamespace())
for name in {signals!r}:
    signal.raise_signal(getattr(signal, name))
print(json.dumps({{"passed": passed, "received": hooks["_received"]}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"passed": passed_on, "received": signals}
