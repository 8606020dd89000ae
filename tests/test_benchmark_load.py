"""The load benchmark's page-mode client keeps one frame in flight, as the page does (static/js/stream.js)."""
from __future__ import annotations

import threading
import time

from benchmarks.load import PAGE_TIMEOUT, LoadClient


class SlowServer:
    """A stand-in for the client's Socket.IO connection: answers frame 0 after the page's timeout, others sooner."""

    connected = True

    def __init__(self, client: LoadClient, first_delay: float, delay: float):
        self.client, self.first_delay, self.delay = client, first_delay, delay
        self.sent_at: dict[int, float] = {}

    def emit(self, event, msg):
        seq = msg["seq"]
        self.sent_at[seq] = time.perf_counter()
        wait = self.first_delay if seq == 0 else self.delay
        threading.Timer(wait, self.client._on_faces, args=({"seq": seq, "faces": []},)).start()


def test_a_late_answer_to_a_frame_given_up_on_does_not_free_the_next():
    client = LoadClient("http://unused", [b"jpeg"], fps=100, mode="page")
    server = client.sio = SlowServer(client, first_delay=PAGE_TIMEOUT + 0.5, delay=0.8)
    client.run(PAGE_TIMEOUT + 1.6, threading.Barrier(1))
    assert client.timeouts == 1
    # Frame 1 goes out when frame 0 times out; frame 0's late answer (0.5 s later) must not send frame 2
    # while frame 1 is still in flight: frame 2 waits for frame 1's own answer, 0.8 s after it was sent.
    assert server.sent_at[2] - server.sent_at[1] >= 0.75, server.sent_at
