"""Per-client frame mailboxes: at most one frame in work and one waiting, newest wins.

A client that sends faster than its frames are analysed never builds a
backlog: a waiting frame is replaced by a newer one (and counted as
superseded), so each client costs at most one analysis at a time. With a
minimum interval (``STREAM_MAX_FPS``) a client also gets at most that many
analyses per second, however fast it sends: a flood costs what a camera costs.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from app.vision.pipeline import StreamAnalyzer


@dataclass
class Stream:
    analyzer: StreamAnalyzer
    busy: bool = False
    pending: tuple[int, bytes] | None = None
    received: int = 0
    analysed: int = 0
    superseded: int = 0
    errors: int = 0
    last_start: float = float("-inf")  # time.monotonic() when the last analysis began
    context: dict = field(default_factory=dict)
    mutex: threading.Lock = field(default_factory=threading.Lock)


class StreamRegistry:
    """Streams by Socket.IO session id."""

    def __init__(self):
        self._streams: dict[str, Stream] = {}
        self._lock = threading.Lock()

    def open(self, sid: str, analyzer_factory: Callable[[], StreamAnalyzer]) -> Stream:
        with self._lock:
            stream = self._streams.get(sid)
            if stream is None:
                stream = self._streams[sid] = Stream(analyzer_factory())
            return stream

    def get(self, sid: str) -> Stream | None:
        with self._lock:
            return self._streams.get(sid)

    def close(self, sid: str) -> Stream | None:
        with self._lock:
            return self._streams.pop(sid, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._streams)


def submit(stream: Stream, seq: int, image: bytes, work: Callable[[int, bytes], Any], *,
           min_interval: float = 0.0, sleep: Callable[[float], Any] = time.sleep) -> bool:
    """Run ``work(seq, image)`` for this frame and any newer ones that arrive meanwhile.

    Returns False when the stream was busy: the frame then waits, replacing
    (superseding) any older waiting frame, and the busy caller picks it up.
    ``min_interval``: seconds between the starts of two analyses of this
    stream; a frame that comes sooner waits (``sleep``, green under eventlet)
    in the mailbox, where newer frames still replace it.
    """
    with stream.mutex:
        stream.received += 1
        if stream.busy:
            if stream.pending is not None:
                stream.superseded += 1
            stream.pending = (seq, image)
            return False
        stream.busy = True
    current: tuple[int, bytes] | None = (seq, image)
    try:
        while current is not None:
            wait = stream.last_start + min_interval - time.monotonic()
            if wait > 0:
                with stream.mutex:  # the frame waits in the mailbox: a newer one may replace it
                    stream.pending, current = current, None
                sleep(wait)
                with stream.mutex:
                    current, stream.pending = stream.pending, None
            stream.last_start = time.monotonic()
            work(*current)
            with stream.mutex:
                stream.analysed += 1
                current, stream.pending = stream.pending, None
                if current is None:
                    stream.busy = False
    except BaseException:
        with stream.mutex:
            stream.busy = False
        raise
    return True
