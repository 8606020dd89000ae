"""Home page and health check."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template

bp = Blueprint("main", __name__)


@bp.get("/")
def index():
    return render_template("index.html")


@bp.get("/healthz")
def healthz():
    """200 with ``{"status": "ok", "model": ...}`` when the model is loaded."""
    model = current_app.extensions.get("emotion_model")
    body = {"status": "ok" if model else "error", "model": {"loaded": model is not None, "path": getattr(model, "path", None)}}
    return jsonify(body), 200 if model else 503
