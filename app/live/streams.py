"""Per-client frame mailboxes: at most one frame in work and one waiting, newest wins.

A client that sends faster than its frames are analysed never builds a
backlog: a waiting frame is replaced by a newer one (and counted as
superseded), so each client costs at most one analysis at a time. With a
minimum interval (``STREAM_MAX_FPS``) a client also gets at most that many
analyses per second, however fast it sends: a flood costs what a camera costs.

A stream's analysis loop (``drain``) may linger for the next frame after it
has analysed the last one, so a client streaming at camera pace keeps one
long-lived task instead of starting a thread for every frame (at 10 frames a
second from each of eight clients that churn made the server's memory creep).
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
    # Set when a frame is offered while the loop runs, and on close: wakes a lingering loop. An Event of the
    # server's async mode (green under eventlet); plain threading otherwise.
    wake: Any = field(default_factory=threading.Event)
    closed: bool = False  # the connection is gone: a lingering loop ends, waiting frames are dropped


class StreamRegistry:
    """Streams by Socket.IO session id."""

    def __init__(self):
        self._streams: dict[str, Stream] = {}
        self._lock = threading.Lock()

    def open(self, sid: str, analyzer_factory: Callable[[], StreamAnalyzer],
             event_factory: Callable[[], Any] = threading.Event) -> Stream:
        with self._lock:
            stream = self._streams.get(sid)
            if stream is None:
                stream = self._streams[sid] = Stream(analyzer_factory(), wake=event_factory())
            return stream

    def get(self, sid: str) -> Stream | None:
        with self._lock:
            return self._streams.get(sid)

    def close(self, sid: str) -> Stream | None:
        """Forget the stream and end its analysis loop (after the frame in work, if any)."""
        with self._lock:
            stream = self._streams.pop(sid, None)
        if stream is not None:
            with stream.mutex:
                stream.closed = True
                stream.pending = None
            stream.wake.set()
        return stream

    def __len__(self) -> int:
        with self._lock:
            return len(self._streams)


def offer(stream: Stream, seq: int, image: bytes) -> bool:
    """Put a frame in the stream's mailbox; True when the caller must now ``drain`` it.

    Cheap and never blocking, so the server calls it on the connection's own
    reading thread for every frame, flood or not: when the stream is busy the
    frame replaces (supersedes) any older waiting frame and the analysis loop
    already running (or lingering) picks it up; only an idle stream needs a
    new ``drain``. A closed stream takes nothing.
    """
    with stream.mutex:
        if stream.closed:
            return False
        stream.received += 1
        if stream.busy:
            if stream.pending is not None:
                stream.superseded += 1
            stream.pending = (seq, image)
            stream.wake.set()
            return False
        stream.busy = True
        stream.pending = (seq, image)
        return True


def drain(stream: Stream, work: Callable[[int, bytes], Any], *, min_interval: float = 0.0,
          linger: float = 0.0, sleep: Callable[[float], Any] = time.sleep) -> None:
    """Run ``work(seq, image)`` on the waiting frame, and on each newer one that arrives meanwhile.

    Called once per ``offer`` that returned True; marks the stream idle when
    no frame waits. ``min_interval``: seconds between the starts of two
    analyses of this stream; a frame that comes sooner waits (``sleep``, green
    under eventlet) in the mailbox, where newer frames still replace it.
    ``linger``: seconds to wait (on ``stream.wake``) for the next frame once
    none waits, before the stream goes idle; closing the stream ends the wait.
    """
    with stream.mutex:
        current, stream.pending = stream.pending, None
        if current is None:  # nothing offered: leave the stream idle rather than busy forever
            stream.busy = False
    try:
        while current is not None:
            wait = stream.last_start + min_interval - time.monotonic()
            if wait > 0:
                with stream.mutex:  # the frame waits in the mailbox: a newer one may replace it
                    stream.pending, current = current, None
                sleep(wait)
                with stream.mutex:
                    current, stream.pending = stream.pending, None
                    if current is None:  # closed meanwhile (a close empties the mailbox)
                        stream.busy = False
                        break
            stream.last_start = time.monotonic()
            work(*current)
            with stream.mutex:
                stream.analysed += 1
                current, stream.pending = stream.pending, None
                lingering = current is None and linger > 0 and not stream.closed
                if lingering:
                    stream.wake.clear()  # under the mutex: an offer from now on sets it again
                elif current is None:
                    stream.busy = False
            if lingering:
                stream.wake.wait(linger)
                with stream.mutex:
                    current, stream.pending = stream.pending, None
                    if current is None:
                        stream.busy = False
    except BaseException:
        with stream.mutex:
            stream.busy = False
        raise


def submit(stream: Stream, seq: int, image: bytes, work: Callable[[int, bytes], Any], *,
           min_interval: float = 0.0, linger: float = 0.0, sleep: Callable[[float], Any] = time.sleep) -> bool:
    """``offer`` the frame and, when the stream was idle, ``drain`` it on this thread.

    Returns False when the stream was busy (the frame waits for the loop
    already running).
    """
    if not offer(stream, seq, image):
        return False
    drain(stream, work, min_interval=min_interval, linger=linger, sleep=sleep)
    return True
