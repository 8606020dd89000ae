"""What the eventlet mode needs of its own: WebSocket frames unmasked off the Python byte loop, and
``python -m app`` (either mode) stopping cleanly on SIGTERM, the classroom's queued samples stored.

The flood test (tests/test_flood.py) runs in eventlet mode too: a client flooding frames must not hold the
event loop from a well-behaved one.
"""
from __future__ import annotations

import os
import sqlite3
import struct
import sys
import threading
import time
import warnings

import cv2
import pytest

from tests.browser import SERVER_MODES, ServerProcess
from tests.imagegen import encode, fit_frame
from tests.live_clients import Probe, student, teacher


@pytest.fixture(scope="module", autouse=True)
def eventlet_imported():
    """eventlet imported (not monkey-patched) without its deprecation notice, as ``python -m app`` imports it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import eventlet  # noqa: F401


def test_unmask_gives_the_bytes_of_eventlets_own_unmasking():
    """Unit: for every length, mask, offset and ``length`` argument, ``unmask`` equals eventlet's ``_apply_mask``."""
    from eventlet.websocket import RFC6455WebSocket

    from app.live.transport import unmask

    reference = RFC6455WebSocket._apply_mask
    for size in [*range(10), 1000, 65537]:
        data = os.urandom(size)
        mask = struct.unpack("!BBBB", os.urandom(4))  # as eventlet reads it from a frame
        for offset in range(6):
            for length in {None, size, size // 2}:
                assert unmask(data, mask, length, offset) == reference(data, mask, length, offset), (size, offset)
        assert unmask(bytearray(data), list(mask)) == reference(data, mask)


class FakeSocket:
    """The client's end as eventlet's connection sees it: what it sends is kept, ``incoming`` is read in chunks."""

    def __init__(self, incoming: bytes = b"", chunk: int = 7000):
        self.incoming, self.chunk, self.sent = incoming, chunk, b""

    def get_socket(self):
        return self

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, size: int) -> bytes:
        data, self.incoming = self.incoming[:min(size, self.chunk)], self.incoming[min(size, self.chunk):]
        return data


def test_the_eventlet_websocket_reads_a_masked_frame_with_the_fast_unmasking():
    """Unit: install() gives an eventlet server a WebSocket whose connections unmask with ``unmask``, and read
    a client's masked frame, arriving in chunks (each unmasked from its own offset), byte for byte."""
    from engineio.async_drivers import eventlet as driver
    from eventlet.websocket import RFC6455WebSocket

    from app.live import transport

    class Server:  # what install() reads of a Flask-SocketIO server
        def __init__(self):
            self.eio = type("Eio", (), {"async_mode": "eventlet", "_async": dict(driver._async)})()

    socketio = type("SocketIO", (), {"server": Server()})()
    assert transport.install(socketio)
    live = socketio.server.eio._async["websocket"]
    assert issubclass(live, driver.WebSocketWSGI) and driver._async["websocket"] is driver.WebSocketWSGI

    payload = os.urandom(100_003)
    client = RFC6455WebSocket(FakeSocket(), {}, client=True)
    frame = client._pack_message(payload, masked=True)  # as a browser sends it: masked, binary
    sock = FakeSocket(frame)
    environ = {"eventlet.input": sock, "HTTP_SEC_WEBSOCKET_VERSION": "13",
               "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ=="}
    ws = live(lambda ws: None, type("Eio", (), {"max_http_buffer_size": 1 << 20})())._handle_hybi_request(environ)
    assert sock.sent.startswith(b"HTTP/1.1 101 Switching Protocols")
    assert ws._apply_mask is transport.unmask
    assert ws.wait() == payload


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


@pytest.mark.slow
@pytest.mark.parametrize("mode", SERVER_MODES)
def test_sigterm_stops_python_m_app_with_exit_0_and_stores_the_queued_samples(mode, model_copy, tmp_path, frame):
    # Samples are written every hour only (the first tick's, at the class's start, aside): whatever a student
    # streamed after it is still queued when the signal comes.
    server = AppProcess(mode, workdir=tmp_path, model_path=model_copy, env={"CLASSROOM_FLUSH_SECONDS": "3600"})
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
        # SIGTERM to the process, as docker stop and systemd send it; stopped within docker's 10 s grace period
        # (open WebSockets included), or it is killed: code -9.
        code = server.stop(timeout=8)
        if probe is not None:
            probe.close()
    log = server.log_text()
    assert code == 0, log[-3000:]
    assert "MoodLens stopped (SIGTERM): classroom samples stored" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert stored_samples(server) > before, "the samples queued when SIGTERM came were not stored"
