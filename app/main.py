"""Home page and health check."""
from __future__ import annotations

import logging
import threading
import time

from flask import Blueprint, current_app, jsonify, render_template
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.concurrency import Background

bp = Blueprint("main", __name__)
log = logging.getLogger("moodlens.health")
QUEUE_TIMEOUT_S = 2.0
DATABASE_TIMEOUT_S = 2.0  # a database that has not answered SELECT 1 by then counts as unreachable
_probe_lock = threading.Lock()  # one probe at a time: checks that come together share it


@bp.get("/")
def index():
    return render_template("index.html")


def _select_one(app) -> str | None:
    """None when the database answers ``SELECT 1``; else why not (one line)."""
    from app.extensions import db

    try:
        with app.app_context(), db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except SQLAlchemyError as exc:
        return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def database_status() -> dict:
    """``{"reachable": bool, "backend": "sqlite" | "postgresql" | ...}``: one ``SELECT 1``, waited on for
    ``DATABASE_TIMEOUT_S`` at most (a hung server is unreachable, not a hung health check).

    The probe runs on a thread of its own, one at a time: a check that comes while one is running waits on it
    (until ``DATABASE_TIMEOUT_S`` after that probe began) instead of starting another, and once a probe has
    waited longer than that on a hung server, the next checks report unreachable at once.
    """
    from app.extensions import db

    app = current_app._get_current_object()
    backend = db.engine.dialect.name
    with _probe_lock:
        probe = app.extensions.get("health_database_probe")
        if probe is None or not probe.running():
            probe = app.extensions["health_database_probe"] = Background(
                app.config["ASYNC_MODE"], _select_one, app, name="health check database probe")
    waited = time.monotonic() - probe.started
    if waited >= DATABASE_TIMEOUT_S and probe.running():
        log.warning("health check: database unreachable: the previous probe is still waiting for an answer "
                    "(%.0f s)", waited)
        return {"reachable": False, "backend": backend}
    if not probe.wait(DATABASE_TIMEOUT_S - waited):
        log.warning("health check: database unreachable: no answer within %.0f s", DATABASE_TIMEOUT_S)
        return {"reachable": False, "backend": backend}
    if probe.result is not None or probe.error is not None:
        log.warning("health check: database unreachable: %s", probe.result or probe.error)
        return {"reachable": False, "backend": backend}
    return {"reachable": True, "backend": backend}


def message_queue_status() -> dict:
    """``{"configured": bool, "reachable": bool | None}`` for ``SOCKETIO_MESSAGE_QUEUE`` (Redis)."""
    url = current_app.config.get("SOCKETIO_MESSAGE_QUEUE")
    if not url:
        return {"configured": False, "reachable": None}
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=QUEUE_TIMEOUT_S, socket_timeout=QUEUE_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()
        return {"configured": True, "reachable": True}
    except (redis.RedisError, OSError) as exc:
        log.warning("health check: message queue unreachable: %s", exc)
        return {"configured": True, "reachable": False}


def storage_status() -> dict | None:
    """The classroom's write queue: samples waiting, failed flushes, samples dropped (None without a classroom)."""
    service = current_app.extensions.get("classroom")
    writer = getattr(service, "writer", None)
    if writer is None:
        return None
    stats = writer.stats
    return {"queued": writer.pending(), "written": stats["written"], "failures": stats["failures"],
            "dropped": stats["dropped"]}


@bp.get("/healthz")
def healthz():
    """200 ``{"status": "ok", "model", "database", "message_queue", "storage"}`` when the model is loaded and
    the database (and the message queue, when one is configured) reachable; else 503 with ``"status": "error"``.

    ``storage`` counts the mood samples queued for the database, failed flushes and samples dropped.
    """
    model = current_app.extensions.get("emotion_model")
    database = database_status()
    queue = message_queue_status()
    ok = model is not None and database["reachable"] and queue["reachable"] is not False
    body = {"status": "ok" if ok else "error",
            "model": {"loaded": model is not None, "path": getattr(model, "path", None)},
            "database": database, "message_queue": queue, "storage": storage_status()}
    resp = jsonify(body)
    resp.headers["Cache-Control"] = "no-store"
    return resp, 200 if ok else 503
