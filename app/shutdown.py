"""Stopping a serving process: close its Socket.IO connections, store the classroom's queued samples, say so.

``python -m app`` calls ``store_queued_samples`` once its server has closed; under gunicorn the hooks in
``gunicorn.conf.py`` call both functions from the worker.
"""
from __future__ import annotations

import logging
import os
import sys

from flask import Flask

from app.extensions import socketio

log = logging.getLogger("app")


def close_connections() -> int:
    """Drop every Socket.IO connection of this process and return how many there were.

    Dropped as a network failure or a crash drops them, without Engine.IO's "close" packet (which a Python
    Socket.IO client takes as "do not reconnect"): each page's client sees its transport close and reconnects by
    itself, to this server once it is back or to another process behind the load balancer. The connections'
    disconnect handlers run first (a student leaves the live view as on closing the tab).
    """
    eio = socketio.server.eio
    dropped = 0
    for client in list(eio.sockets.values()):  # Engine.IO forgets each closed one itself
        if client.closed or client.closing:
            continue
        client.close(wait=False, abort=True, reason=eio.reason.SERVER_DISCONNECT)
        dropped += 1
    if dropped:
        log.info("closed %d Socket.IO connection%s; the clients reconnect by themselves", dropped,
                 "" if dropped == 1 else "s")
    return dropped


def store_queued_samples(app: Flask, why: str) -> bool:
    """Stop the classroom's ticker and write its queued samples; log one line saying whether they are stored
    (``why`` names the signal or event that stopped the server). True when they are."""
    classroom = app.extensions["classroom"]
    if classroom.stop():
        log.info("MoodLens stopped (%s): classroom samples stored", why)
        return True
    # The database did not answer in time: the flush may still be writing (its rows are out of the queue).
    log.warning("MoodLens stopped (%s): the last classroom samples are not confirmed stored "
                "(%d still queued, a write %s)", why, classroom.writer.pending(),
                "still running" if classroom.flushing() else "failed")
    return False


def end_process(code: int) -> None:
    """Flush the log and end the process with ``code`` (0-255; -1 gives 255, as ``sys.exit(-1)``) without the
    interpreter's finalization.

    Analyses of frames still in flight run on daemon threads inside TensorFlow Lite. Left to finalization, such
    a thread is ended by pthread_exit inside C++ code and the process aborts ("terminate called without an
    active exception", SIGABRT; seen under the threading mode's development server). Call it once the samples
    are stored, or the exit code says they may not be.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code & 0xFF)
