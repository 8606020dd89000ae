"""Error responses: JSON under /api/, a friendly page elsewhere."""
from __future__ import annotations

from flask import jsonify, render_template, request
from werkzeug.exceptions import HTTPException


def wants_json() -> bool:
    return request.path.startswith("/api/")


def init_app(app) -> None:
    """Register one handler for every HTTP error."""

    @app.errorhandler(HTTPException)
    def handle_http(exc: HTTPException):
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"request too large: the limit is {app.config['MAX_UPLOAD_BYTES']} bytes"
        if exc.code == 429 and wants_json():
            message = f"too many requests from this client (limit: {exc.description}): wait, then try again"
        if wants_json():
            return jsonify(error=message), exc.code
        return render_template("error.html", code=exc.code, title=exc.name, message=message), exc.code
