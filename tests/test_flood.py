"""A client that floods frames builds no backlog and gets no more analyses than a camera-speed client.

Against the real server: gunicorn (threading), and for the flood also
``python -m app`` in eventlet mode, where one event loop reads every client's
WebSocket frames. A client floods hundreds of frames per second without
waiting for answers while a normal client streams as the page does (one frame
in flight, 10 frames/s at most). The server keeps at most one waiting frame per
client (newest wins) and analyses a stream at most ``STREAM_MAX_FPS`` times a
second, so:

- every frame of the normal client is answered, all through the flood;
- the flood gets at most ``STREAM_MAX_FPS`` analyses per second, as a camera does;
- when the flood stops, only the frame in work, the one waiting and the few
  still in transit may still be answered, newest last (the server's
  ``superseded`` count accounts for all the others).

How much the flood raises the normal client's latency is a measurement, not a
pass/fail test here: ``python -m benchmarks.flood`` (figures in the README).
"""
from __future__ import annotations

import gc
import threading
import time

import cv2
import pytest

from app.config import Config
from tests.browser import SERVER_MODES, ServerProcess
from tests.imagegen import encode, fit_frame
from tests.live_clients import Flooder, Paced, Probe

pytestmark = pytest.mark.slow

FLOOD_SECONDS = 8.0
FLOOD_FPS = 300


@pytest.fixture(scope="module")
def frames(faces_dir) -> list[bytes]:
    base = fit_frame(cv2.imread(str(faces_dir / "obama.jpg")))
    return [encode(base, ".jpg", quality=70 + i) for i in range(4)]


@pytest.fixture(scope="module")
def servers(model_copy, tmp_path_factory):
    """``servers(mode) -> ServerProcess``: the real server of that mode (STREAM_MAX_FPS at its default), started
    on first use, shared by this module's tests and stopped after them."""
    started: dict[str, ServerProcess] = {}

    def get(mode: str) -> ServerProcess:
        if mode not in started:
            workdir = tmp_path_factory.mktemp(f"flood-{mode}")
            started[mode] = ServerProcess(mode, workdir=workdir, model_path=model_copy).start()
        return started[mode]

    yield get
    for proc in started.values():
        proc.stop()


@pytest.fixture(scope="module")
def server(servers):
    """The production server (gunicorn gthread, THREADS as shipped)."""
    return servers("threading")


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_a_flooding_client_builds_no_backlog_and_gets_camera_speed_at_most(servers, mode, frames):
    # eventlet: one event loop reads (and unmasks) every client's WebSocket frames; the flood must not hold it
    # from the normal client.
    server = servers(mode)
    normal = Paced(server.url, frames, fps=10)
    flooder = Flooder(server.url, frames, fps=FLOOD_FPS)
    try:
        normal.run(2.0, record=False)  # warm-up: first frames are full scans
        flood = threading.Thread(target=flooder.run, args=(FLOOD_SECONDS,))
        flood.start()
        time.sleep(0.5)
        normal.run(FLOOD_SECONDS - 1.0)  # raises if one of its frames goes unanswered for 10 s
        flood.join(FLOOD_SECONDS + 30)
        assert not flood.is_alive(), "the flooding client never finished sending"
        # A well-behaved page keeps being served beside the flood (10 frames/s at most: 65 in 6.5 s).
        assert len(normal.latencies) >= 15, f"the normal client got {len(normal.latencies)} answers in 6.5 s"

        stopped = flooder.stopped_at
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (flooder.answers and flooder.answers[-1][0] > stopped):
            time.sleep(0.05)
        time.sleep(1.0)  # anything still queued on the server would be answered by now
        answered = len(flooder.answers)
        last = flooder.answers[-1][1]
        assert flooder.sent >= FLOOD_FPS * FLOOD_SECONDS * 0.5, "the flooder did not flood"
        # Camera speed at most: STREAM_MAX_FPS analyses per second of flooding, plus the few in transit at the end.
        cap = Config.STREAM_MAX_FPS * flooder.flooding_seconds + 5
        assert answered <= cap, f"{answered} of {flooder.sent} flood frames analysed in {flooder.flooding_seconds:.1f} s"
        # No backlog: the flood was superseded, not queued...
        assert last["superseded"] >= flooder.sent - answered - 2, (last["superseded"], flooder.sent, answered)
        # ...and once it stopped, at most the frame in work and the one waiting were still answered.
        # Frames still in transit when the flood stopped (the client's send queue, the socket) reach the
        # server after that; each replaces the waiting one, so only a few can be answered, newest last.
        late = [msg["seq"] for t, msg in flooder.answers if t > stopped]
        assert len(late) <= 5, f"{len(late)} answers after the flood stopped: a backlog"
        assert late == sorted(set(late)), f"an older frame answered after a newer one: {late}"
        assert last["seq"] >= flooder.sent - 3  # the newest frames won
    finally:
        for client in (normal.probe, flooder.probe):
            client.close()
        gc.collect()  # whatever a failed run left open is reported here, not by the next test
    assert "Traceback" not in server.log_text()


def test_stream_max_fps_paces_analyses_and_the_newest_frame_still_wins():
    """Unit: with a minimum interval, a stream is analysed at most that often; waiting frames are replaced."""
    from app.live.streams import Stream, submit

    stream, starts, done = Stream(analyzer=None), [], []

    def work(seq, image):
        starts.append(time.monotonic())
        done.append(seq)
        time.sleep(0.005)

    threads = []
    t_end = time.monotonic() + 1.0
    seq = 0
    while time.monotonic() < t_end:  # 1 s of frames every 2 ms, each from its own thread
        th = threading.Thread(target=submit, args=(stream, seq, b"x", work), kwargs={"min_interval": 0.1})
        th.start()
        threads.append(th)
        seq += 1
        time.sleep(0.002)
    for th in threads:
        th.join(5)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # At most one analysis per interval (about 10 in the second; fewer only if this busy machine starts the
    # threads late), never two closer than the interval.
    assert 5 <= len(done) <= 12 and min(gaps) >= 0.099, (len(done), gaps)
    assert done[-1] == seq - 1  # the last frame sent was the last analysed
    assert stream.received == seq and stream.analysed + stream.superseded == seq
    assert not stream.busy and stream.pending is None


def test_a_process_serves_far_more_live_clients_than_a_handful(server, frames):
    """Each open Socket.IO connection holds a gunicorn thread: 40 clients at once all get answers, pages still load."""
    import requests

    probes = []
    try:
        for _ in range(40):
            probes.append(Probe(server.url))  # listed first: closed below even if connecting fails
            probes[-1].connect(wait_timeout=10)
        for i, probe in enumerate(probes):
            probe.emit("frame", {"seq": i, "image": frames[i % len(frames)]})
        for i, probe in enumerate(probes):
            assert probe.wait_for("faces", lambda msg, i=i: msg["seq"] == i, timeout=60), f"client {i} got no answer"
        assert requests.get(server.url + "/healthz", timeout=10, headers={"Connection": "close"}).status_code == 200
    finally:
        for probe in probes:
            probe.close()
