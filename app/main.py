"""Home page and health check."""
from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, render_template
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

bp = Blueprint("main", __name__)
log = logging.getLogger("moodlens.health")
QUEUE_TIMEOUT_S = 2.0


@bp.get("/")
def index():
    return render_template("index.html")


def database_status() -> dict:
    """``{"reachable": bool, "backend": "sqlite" | "postgresql" | ...}``: one ``SELECT 1``."""
    from app.extensions import db

    try:
        backend = db.engine.dialect.name
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"reachable": True, "backend": backend}
    except SQLAlchemyError as exc:
        log.warning("health check: database unreachable: %s", str(exc).splitlines()[0][:300])
        return {"reachable": False, "backend": db.engine.dialect.name}


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
