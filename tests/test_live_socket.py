"""The live stream's Socket.IO contract, with the Flask-SocketIO test client."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from app.live.streams import Stream, submit
from tests.imagegen import encode, fit_frame


@pytest.fixture(scope="module")
def frame(faces_dir) -> bytes:
    return encode(fit_frame(cv2.imread(str(faces_dir / "obama.jpg"))), ".jpg", quality=70)


def received(sc, name, timeout=10.0):
    """Events called ``name`` received so far, waiting until at least one arrives."""
    deadline = time.monotonic() + timeout
    got = []
    while time.monotonic() < deadline:
        got += [e for e in sc.get_received() if e["name"] == name]
        if got:
            return got
        time.sleep(0.02)
    return got


def until(condition, timeout: float = 5.0) -> bool:
    """Wait for ``condition()`` to hold, ``timeout`` s at most; whether it did."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_frame_gets_faces_with_same_seq(socket_client, frame):
    socket_client.emit("frame", {"seq": 41, "image": frame})
    (event,) = received(socket_client, "faces")
    msg = event["args"][0]
    assert msg["seq"] == 41
    (face,) = msg["faces"]
    assert isinstance(face["id"], int) and len(face["box"]) == 4
    assert face["label"] == "happy" and face["scores"]["happy"] > 0.8, face["scores"]  # a smile, paired right
    assert set(msg["timings_ms"]) == {"decode", "detect", "classify", "total"}
    # The size of the frame the boxes are in: the page scales each answer's boxes by its own frame.
    height, width = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_GRAYSCALE).shape
    assert (msg["width"], msg["height"]) == (width, height)
    x, y, w, h = face["box"]
    assert 0 <= x < x + w <= width and 0 <= y < y + h <= height


def test_track_id_is_stable_across_frames(socket_client, frame):
    ids = []
    for seq in range(3):
        socket_client.emit("frame", {"seq": seq, "image": frame})
        ids.append(received(socket_client, "faces")[0]["args"][0]["faces"][0]["id"])
    assert len(set(ids)) == 1


@pytest.mark.parametrize("payload, match", [
    ({"seq": 7, "image": b"garbage bytes"}, "not an image"),
    ({"seq": 7, "image": b""}, "empty"),
    ({"seq": 7, "image": "a string"}, "binary"),
    ({"seq": "7", "image": b"x"}, "seq"),
    ({"seq": -1, "image": b"x"}, "seq"),
    ({"image": b"x"}, "seq"),
    ("just a string", "object"),
    (None, "object"),
])
def test_bad_frames_get_frame_error_and_stream_survives(socket_client, frame, payload, match):
    socket_client.emit("frame", payload)
    (event,) = received(socket_client, "frame_error")
    err = event["args"][0]
    assert match in err["error"]
    if isinstance(payload, dict) and isinstance(payload.get("seq"), int) and payload["seq"] >= 0:
        assert err["seq"] == payload["seq"]
    socket_client.emit("frame", {"seq": 8, "image": frame})
    (ok,) = received(socket_client, "faces")
    assert ok["args"][0]["seq"] == 8 and len(ok["args"][0]["faces"]) == 1


def test_oversized_frame_is_refused(app, socket_client):
    app.config["MAX_FRAME_BYTES"] = 1000
    socket_client.disconnect()  # streams take their limits when they open
    socket_client.connect()
    socket_client.emit("frame", {"seq": 1, "image": b"\xff\xd8" + b"\x00" * 5000})
    (event,) = received(socket_client, "frame_error")
    assert "bytes" in event["args"][0]["error"]


def test_newest_frame_wins_and_no_backlog():
    """While a frame is analysed, later frames replace each other; only the newest runs next."""
    stream = Stream(analyzer=None)
    started, release = threading.Event(), threading.Event()
    done = []

    def work(seq, image):
        if seq == 0:
            started.set()
            release.wait(5)
        done.append(seq)

    worker = threading.Thread(target=submit, args=(stream, 0, b"a", work))
    worker.start()
    assert started.wait(5)
    for seq in range(1, 100):
        assert submit(stream, seq, b"b", work) is False  # busy: queued, not run
    release.set()
    worker.join(5)
    assert done == [0, 99]
    assert (stream.received, stream.analysed, stream.superseded) == (100, 2, 98)
    assert stream.busy is False and stream.pending is None
    assert submit(stream, 100, b"c", work) is True and done[-1] == 100


def test_failing_work_does_not_wedge_the_stream():
    stream = Stream(analyzer=None)

    def boom(seq, image):
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        submit(stream, 1, b"x", boom)
    assert stream.busy is False
    assert submit(stream, 2, b"x", lambda s, i: None) is True


def test_frames_are_taken_on_the_reading_thread_and_only_an_idle_stream_starts_a_task(app, frame, monkeypatch):
    """A flood costs no thread per frame: handlers run inline, and a busy stream's frames only replace the waiting one."""
    from app.extensions import socketio
    from app.live import events

    assert socketio.server.async_handlers is False
    started = []
    monkeypatch.setattr(socketio, "start_background_task", lambda *args, **kwargs: started.append(args))
    try:
        for seq in range(1, 6):
            events.handle_frame(app, "sid-flood", {"seq": seq, "image": frame})
        stream = events.streams.get("sid-flood")
        assert len(started) == 1  # the first frame found the stream idle; the others found it busy
        # The task has not run yet: frame 1 waited too, and each newer frame replaced the one waiting.
        assert (stream.received, stream.superseded, stream.pending[0]) == (5, 4, 5)
        app_, sid, stream_, min_interval, linger = started[0][1:]
        assert linger == events.LINGER_SECONDS > 0
        events._drain(app_, sid, stream_, min_interval, 0.0)  # the task: analyses the newest frame, goes idle
        assert (stream.analysed, stream.busy, stream.pending) == (1, False, None)
    finally:
        events.streams.close("sid-flood")


def test_a_lingering_loop_takes_the_next_frames_on_the_same_thread_then_goes_idle():
    """A stream at camera pace keeps one analysis thread: frames offered while it lingers need no new one."""
    from app.live.streams import drain, offer

    stream, done, threads = Stream(analyzer=None), [], set()

    def work(seq, image):
        threads.add(threading.get_ident())
        done.append(seq)

    assert offer(stream, 0, b"x")
    loop = threading.Thread(target=drain, args=(stream, work), kwargs={"linger": 1.0})
    loop.start()
    for seq in range(1, 6):  # one frame every 50 ms, each found the loop lingering: no new drain needed
        time.sleep(0.05)
        assert offer(stream, seq, b"x") is False
    assert until(lambda: len(done) == 6)
    assert done == [0, 1, 2, 3, 4, 5] and threads == {loop.ident}
    assert stream.busy is True  # still lingering for a next frame
    t_last = time.monotonic()
    loop.join(5)
    assert not loop.is_alive() and time.monotonic() - t_last >= 0.8  # it waited about its linger, then ended
    assert (stream.busy, stream.pending, stream.analysed) == (False, None, 6)
    assert offer(stream, 6, b"x") is True  # idle again: the next frame starts a new loop


def test_closing_a_stream_ends_its_lingering_loop_at_once():
    from app.live.streams import StreamRegistry, drain, offer

    registry = StreamRegistry()
    stream = registry.open("sid-linger", lambda: None)
    assert offer(stream, 0, b"x")
    loop = threading.Thread(target=drain, args=(stream, lambda seq, image: None), kwargs={"linger": 30.0})
    loop.start()
    assert until(lambda: stream.analysed == 1)
    t_close = time.monotonic()
    assert registry.close("sid-linger") is stream
    loop.join(5)
    assert not loop.is_alive() and time.monotonic() - t_close < 1.0
    assert (stream.busy, stream.closed) == (False, True)
    assert offer(stream, 1, b"x") is False and stream.pending is None  # a closed stream takes nothing


def test_a_frame_waiting_out_the_minimum_interval_is_dropped_when_the_stream_closes():
    from app.live.streams import StreamRegistry, drain, offer

    registry, done = StreamRegistry(), []
    stream = registry.open("sid-paced", lambda: None)
    assert offer(stream, 0, b"x")
    loop = threading.Thread(target=drain, args=(stream, lambda seq, image: done.append(seq)),
                            kwargs={"min_interval": 0.5, "linger": 30.0})
    loop.start()
    assert until(lambda: done == [0])
    assert offer(stream, 1, b"x") is False  # waits out the interval in the mailbox
    time.sleep(0.1)
    registry.close("sid-paced")
    loop.join(5)
    assert not loop.is_alive() and done == [0]  # frame 1 was never analysed, nor answered
    assert (stream.busy, stream.pending) == (False, None)


def test_frames_at_camera_pace_start_one_analysis_task(app, frame, monkeypatch):
    """Through the event handler with real tasks: ten frames, each sent 50 ms after the last one's answer (a
    camera's pace), are analysed by one task, not ten."""
    from app.extensions import socketio
    from app.live import events

    started = []
    real_start = socketio.start_background_task

    def counting_start(*args, **kwargs):
        started.append(args[0])
        return real_start(*args, **kwargs)

    monkeypatch.setattr(socketio, "start_background_task", counting_start)
    try:
        for seq in range(10):
            events.handle_frame(app, "sid-camera", {"seq": seq, "image": frame})
            stream = events.streams.get("sid-camera")
            assert until(lambda s=stream, n=seq: s.analysed > n, timeout=10)
            time.sleep(0.05)  # the stream has nothing to do now: its task lingers for the next frame
        assert stream.analysed == 10 and stream.superseded == 0
        assert len(started) == 1
    finally:
        events.streams.close("sid-camera")


def test_threading_websockets_read_a_frame_in_few_chunks(app, monkeypatch):
    """Threading mode reads each WebSocket 64 KiB at a time (simple-websocket's 4 KiB made a frame a dozen reads)."""
    import simple_websocket

    from app.extensions import socketio
    from app.live import transport
    from app.live.transport import RECEIVE_BYTES

    opened = []

    class Recorder:
        def __init__(self, environ, **kwargs):
            opened.append(kwargs)
            raise simple_websocket.ConnectionError()

    monkeypatch.setattr(transport, "OrderedServer", Recorder)
    ws = socketio.server.eio._async["websocket"](lambda ws: None, socketio.server.eio)
    with pytest.raises(simple_websocket.ConnectionError):
        ws({}, lambda *a: None)
    assert opened == [{"receive_bytes": RECEIVE_BYTES}] and RECEIVE_BYTES >= 64 * 1024


class _HeldBack:
    """A server connection's reader thread, never started: the socket-pair tests below play its part."""

    def __init__(self, target):
        self.name = "reader"

    def start(self):
        pass


def _upgrade_environ(sock) -> dict:
    """The WSGI environ of a WebSocket upgrade request whose connection is ``sock`` (as gunicorn gives it)."""
    return {"gunicorn.socket": sock, "HTTP_HOST": "localhost", "HTTP_UPGRADE": "websocket",
            "HTTP_CONNECTION": "Upgrade", "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
            "HTTP_SEC_WEBSOCKET_VERSION": "13"}


def test_closing_a_websocket_whose_client_just_left_raises_nothing():
    """The writer thread's close finds the socket closed by the reader thread (the client left): no traceback.

    The interleaving that made a server log ``OSError: [Errno 9] Bad file descriptor`` from engineio's writer
    thread, made deterministic: the served connection (an OrderedServer) over a socket pair, its reader thread
    held back, and the socket closed (as that thread does when the client goes) after the connection counted as
    open.
    """
    import socket

    from app.live.transport import LiveWebSocket, OrderedServer

    ours, theirs = socket.socketpair()
    try:
        live = LiveWebSocket(lambda ws: None, None)
        live.ws = OrderedServer(_upgrade_environ(ours), thread_class=_HeldBack)
        assert live.ws.connected and b"101 Switching Protocols" in theirs.recv(4096)
        ours.close()  # the reader thread saw the client go, and closed the socket before marking it closed
        live.close()  # as engineio's writer thread does when the session ends; unguarded, OSError (EBADF)
    finally:
        theirs.close()


def _server_frames(data: bytes) -> list[int]:
    """The opcodes of the unmasked frames a WebSocket server wrote (after its handshake answer)."""
    data = data.split(b"\r\n\r\n", 1)[1]
    opcodes = []
    while data:
        length, start = data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        opcodes.append(data[0] & 0x0F)
        data = data[start + length:]
    return opcodes


def test_no_message_follows_the_answer_to_a_clients_close_frame():
    """A message being written when the client's close frame is read goes out before the close frame, never after.

    The interleaving that made Chromium fail a student's connection as they stopped sharing ("Data frame
    received after close"), made deterministic: a real server connection over a socket pair, Engine.IO's
    writer thread held inside its socket write of a ``faces`` message while the reader thread (played by
    this test) handles the client's close frame. simple-websocket alone writes the close frame first.
    """
    import socket
    import threading

    import simple_websocket

    from app.live.transport import OrderedServer

    class SlowWrites:
        """The server's socket; while ``hold`` is set, a write waits for ``release`` after saying so."""

        def __init__(self, sock):
            self.sock, self.hold = sock, False
            self.writing, self.release = threading.Event(), threading.Event()

        def send(self, data):
            if self.hold:
                self.hold = False
                self.writing.set()
                self.release.wait(10)
            return self.sock.send(data)

        def __getattr__(self, name):
            return getattr(self.sock, name)

    ours, theirs = socket.socketpair()
    slow = SlowWrites(ours)
    try:
        ws = OrderedServer(_upgrade_environ(slow), thread_class=_HeldBack)
        slow.hold = True
        writer = threading.Thread(target=ws.send, args=('42["faces",{"seq":7,"faces":[]}]',))
        writer.start()
        assert slow.writing.wait(10), "the writer never reached its socket write"

        ws.ws.receive_data(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # the client's close frame (1000), mask 0
        reader = threading.Thread(target=ws._handle_events)
        reader.start()
        reader.join(0.5)  # unordered, the reader writes its close frame now, ahead of the held message
        slow.release.set()
        writer.join(10)
        reader.join(10)
        assert not writer.is_alive() and not reader.is_alive()
        assert not ws.connected
        with pytest.raises(simple_websocket.ConnectionClosed):  # later messages are refused, not written
            ws.send('42["faces",{"seq":8,"faces":[]}]')

        ours.shutdown(socket.SHUT_WR)
        written = b""
        while chunk := theirs.recv(65536):
            written += chunk
        assert _server_frames(written) == [0x1, 0x8]  # the text message, then the close frame
    finally:
        ours.close()
        theirs.close()


def test_a_frame_of_thousands_of_scans_gets_frame_error(socket_client, frame):
    from PIL import Image

    from tests.imagegen import pil_bytes

    progressive = pil_bytes(Image.new("L", (64, 48), 128), "JPEG", progressive=True)
    last, end = progressive.rindex(b"\xff\xda"), progressive.rindex(b"\xff\xd9")
    socket_client.emit("frame", {"seq": 5, "image": progressive[:end] + progressive[last:end] * 5000 + progressive[end:]})
    (event,) = received(socket_client, "frame_error")
    assert event["args"][0]["seq"] == 5 and "scans" in event["args"][0]["error"]
    socket_client.emit("frame", {"seq": 6, "image": frame})
    assert received(socket_client, "faces")[0]["args"][0]["seq"] == 6


def test_a_frame_thinner_than_a_face_gets_no_face(socket_client):
    thin = encode(np.full((3, 2000, 3), 128, np.uint8), ".jpg")
    socket_client.emit("frame", {"seq": 9, "image": thin})
    (event,) = received(socket_client, "faces")
    assert event["args"][0]["seq"] == 9 and event["args"][0]["faces"] == []
    assert not [e for e in socket_client.get_received() if e["name"] == "frame_error"]


def test_a_binary_packet_announcing_many_attachments_closes_its_connection(socket_client, frame, caplog, monkeypatch):
    """A frame carries one JPEG: a header announcing more is refused, not kept waiting for its attachments."""
    from app.extensions import socketio

    server = socketio.server
    closed = []
    monkeypatch.setattr(server.eio, "disconnect", closed.append)  # the test client has no Engine.IO socket to close
    # What the Engine.IO layer hands the Socket.IO server for a WebSocket message, as a hostile client sends it.
    server.eio.handlers["message"](socket_client.eio_sid,
                                   '59999999999-["frame",{"seq":1,"image":{"_placeholder":true,"num":0}}]')
    assert socket_client.eio_sid not in server._binary_packet and closed == [socket_client.eio_sid]
    assert [r.levelname for r in caplog.records if "attachments" in r.getMessage()] == ["WARNING"]
    socket_client.emit("frame", {"seq": 2, "image": frame})  # one attachment, as the page sends
    assert received(socket_client, "faces")[0]["args"][0]["seq"] == 2
