"""Socket.IO events of the live stream.

Client -> server ``frame``: ``{"seq": int, "image": <JPEG bytes>}``.
Server -> client ``faces``: ``{"seq", "faces": [{"id", "box", "label", "scores"}], "width", "height",
"timings_ms": {"decode", "detect", "classify", "total"}, "superseded": int}``;
``width`` and ``height`` are the analysed frame's size, in whose pixels the
boxes are; ``superseded`` counts this connection's frames so far that were
replaced by a newer one before they were analysed (dropped, never answered).
Server -> client ``frame_error``: ``{"seq", "error"}`` for a frame that could not
be analysed; the connection stays usable.
"""
from __future__ import annotations

import logging
from functools import partial

from flask import current_app, request

from app.concurrency import run_cpu
from app.extensions import socketio
from app.live.streams import Stream, StreamRegistry, drain, offer
from app.vision.images import ImageError
from app.vision.pipeline import StreamAnalyzer

log = logging.getLogger("moodlens.live")
streams = StreamRegistry()

# Hooks other features (the classroom) register:
#   connect_listeners:    hook(sid, auth) -> may return False to refuse the connection (in the handler)
#   disconnect_listeners: hook(sid) (in the handler)
#   frame_listeners:      hook(sid, stream, result), after ``faces`` was sent (in the stream's analysis
#                         task, with an app context but no request context)
connect_listeners: list = []
disconnect_listeners: list = []
frame_listeners: list = []

# Seconds a stream's analysis task waits for the next frame before it ends: a camera's next frame comes
# within this, so a streaming client keeps one task rather than starting a thread per frame.
LINGER_SECONDS = 2.0


def _analyzer_factory(app):
    cfg = app.config

    def make() -> StreamAnalyzer:
        return StreamAnalyzer(
            app.extensions["emotion_model"],
            max_bytes=cfg["MAX_FRAME_BYTES"],
            max_pixels=cfg["MAX_FRAME_PIXELS"],
            max_faces=cfg["MAX_FACES"],
            full_scan_every=cfg["FULL_SCAN_EVERY"],
            smoothing=cfg["SCORE_SMOOTHING"],
        )

    return make


def _open(sid: str, app) -> Stream:
    return streams.open(sid, _analyzer_factory(app), socketio.server.eio.create_event)


def validate_frame(data) -> tuple[int | None, bytes | None, str | None]:
    """Return (seq, image, error) for a ``frame`` payload."""
    if not isinstance(data, dict):
        return None, None, "frame must be an object {seq, image}"
    seq = data.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**53:
        return None, None, "frame.seq must be a non-negative integer"
    image = data.get("image")
    if isinstance(image, (bytearray, memoryview)):
        image = bytes(image)
    if not isinstance(image, bytes):
        return seq, None, "frame.image must be JPEG bytes sent as binary"
    if not image:
        return seq, None, "frame.image is empty"
    return seq, image, None


@socketio.on("connect")
def on_connect(auth=None):
    """Open a stream for this connection (a listener may refuse it)."""
    for listener in connect_listeners:
        if listener(request.sid, auth) is False:
            return False
    _open(request.sid, current_app._get_current_object())


@socketio.on("disconnect")
def on_disconnect(*_args):
    for listener in disconnect_listeners:
        try:
            listener(request.sid)
        except Exception:
            log.exception("disconnect listener %r failed", listener)
    stream = streams.close(request.sid)
    if stream is not None:
        log.debug("stream %s closed: %d received, %d analysed, %d superseded, %d errors", request.sid,
                  stream.received, stream.analysed, stream.superseded, stream.errors)


def handle_frame(app, sid: str, data=None) -> None:
    """Analyse a frame; answers ``faces`` (or ``frame_error``) with the same seq.

    Registered with the Socket.IO server itself (``install``), not through
    Flask-SocketIO: it needs no request context or session, and a flooding
    client sends hundreds of frames a second. It runs on the connection's
    reading thread (``async_handlers=False``) and only puts the frame in the
    stream's mailbox, so a frame that replaces a waiting one costs no thread;
    the analysis loop runs in a background task, started when the stream was
    idle, which lingers ``LINGER_SECONDS`` for the next frame: a client at
    camera pace keeps one task for as long as it streams.

    The answers go straight to the client, never through the message queue
    (``ignore_queue``): the client is connected to this very process, so the
    live stream neither waits for Redis nor stops when Redis is away.
    """
    seq, image, error = validate_frame(data)
    if error:
        socketio.emit("frame_error", {"seq": seq, "error": error}, to=sid, ignore_queue=True)
        return
    stream = _open(sid, app)
    if offer(stream, seq, image):  # the stream was idle: start its analysis loop
        max_fps = float(app.config.get("STREAM_MAX_FPS") or 0)
        socketio.start_background_task(_drain, app, sid, stream, 1.0 / max_fps if max_fps > 0 else 0.0,
                                       LINGER_SECONDS)


def _drain(app, sid: str, stream: Stream, min_interval: float, linger: float) -> None:
    """A stream's analysis loop, on its own thread (green thread under eventlet), in the app's context."""
    with app.app_context():
        drain(stream, partial(_analyse, app.config["ASYNC_MODE"], sid, stream),
              min_interval=min_interval, linger=linger, sleep=socketio.sleep)


def _analyse(mode: str, sid: str, stream: Stream, frame_seq: int, frame: bytes) -> None:
    """Analyse one frame of a stream, answer it, and tell the frame listeners."""
    try:
        result = run_cpu(mode, stream.analyzer.process, frame)
    except ImageError as exc:
        stream.errors += 1
        socketio.emit("frame_error", {"seq": frame_seq, "error": str(exc)}, to=sid, ignore_queue=True)
        return
    except Exception:  # a bug must not kill the stream; log it and tell the client
        stream.errors += 1
        log.exception("frame %s of %s failed", frame_seq, sid)
        socketio.emit("frame_error", {"seq": frame_seq, "error": "internal error analysing the frame"}, to=sid,
                      ignore_queue=True)
        return
    socketio.emit("faces", {"seq": frame_seq, "faces": result["faces"], "width": result["width"],
                            "height": result["height"], "timings_ms": result["timings_ms"],
                            "superseded": stream.superseded}, to=sid, ignore_queue=True)
    for listener in frame_listeners:
        try:
            listener(sid, stream, result)
        except Exception:
            log.exception("frame listener %r failed", listener)


def install(app) -> None:
    """Register ``frame`` with ``app``'s Socket.IO server; call after ``socketio.init_app(app)``."""
    socketio.server.on("frame", lambda sid, data=None, *_extra: handle_frame(app, sid, data), namespace="/")
